package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// StatusReport is what `flotilla agent status` shows: update_engine's
// GetStatus tuple plus what update_engine never told (last error, blocked
// versions, slots).
type StatusReport struct {
	LastCheckedTime  int64                 `json:"last_checked_time"`
	Progress         float64               `json:"progress"`
	CurrentOperation string                `json:"current_operation"`
	NewVersion       string                `json:"new_version"`
	NewSize          int64                 `json:"new_size"`
	CurrentVersion   string                `json:"current_version"`
	MachineID        string                `json:"machine_id"`
	BootID           string                `json:"boot_id"`
	BootedPartUUID   string                `json:"booted_partuuid,omitempty"`
	Server           string                `json:"server"`
	Group            string                `json:"group"`
	RebootStrategy   string                `json:"reboot_strategy"`
	RebootPending    *RebootPending        `json:"reboot_pending,omitempty"`
	BlockedVersions  []string              `json:"blocked_versions,omitempty"`
	LastError        *LastError            `json:"last_error,omitempty"`
	BootHealthy      bool                  `json:"boot_healthy"`
	Slots            map[string]SlotRecord `json:"slots,omitempty"`
	ConfigSources    map[string]string     `json:"config_sources,omitempty"`
}

// Status returns the current report.
func (a *Agent) Status() StatusReport {
	ver := a.currentVersion()
	a.mu.Lock()
	defer a.mu.Unlock()
	r := StatusReport{
		CurrentOperation: StatusIdle, CurrentVersion: ver, MachineID: a.cfg.MachineID,
		BootID: a.cfg.BootID, BootedPartUUID: a.cfg.BootedPartUUID, Progress: a.progress,
		ConfigSources: a.conf.Source,
	}
	r.Server = a.conf.Get(KeyServer)
	r.Group = a.group(a.conf)
	r.RebootStrategy = a.conf.Get(KeyRebootStrategy)
	if r.RebootStrategy == "" {
		r.RebootStrategy = StrategyReboot
	}
	if s := a.st; s != nil {
		r.CurrentOperation = s.Status
		if !s.LastChecked.IsZero() {
			r.LastCheckedTime = s.LastChecked.Unix()
		}
		r.NewVersion, r.NewSize = s.NewVersion, s.NewSize
		r.RebootPending = s.RebootPending
		r.BlockedVersions = slices.Clone(s.Blocked)
		r.LastError = s.LastError
		r.BootHealthy = s.GoodBootID == a.cfg.BootID
		r.Slots = s.Slots
	}
	if r.NewVersion == "" {
		r.NewVersion = "0.0.0"
	}
	return r
}

// StatusLines formats a report exactly as `update_engine_client -status`
// does, for scripts that parse it.
func StatusLines(r StatusReport) string {
	return fmt.Sprintf("LAST_CHECKED_TIME=%d\nPROGRESS=%f\nCURRENT_OP=%s\nNEW_VERSION=%s\nNEW_SIZE=%d\n",
		r.LastCheckedTime, r.Progress, r.CurrentOperation, r.NewVersion, r.NewSize)
}

// CheckResult answers POST /v1/check.
type CheckResult struct {
	Started bool   `json:"started"`
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
}

// Handler is the local API, served on a unix socket (file permissions are
// its access control, like update_engine's D-Bus policy).
func (a *Agent) Handler(reg prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, a.Status())
	})
	mux.HandleFunc("POST /v1/check", func(w http.ResponseWriter, _ *http.Request) {
		res := CheckResult{Started: a.TriggerCheck(), Status: a.status()}
		if !res.Started {
			res.Message = "a check runs only when idle (update_engine's AttemptUpdate rule); status is " + res.Status
		}
		writeJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("POST /v1/unblock", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Version string `json:"version"`
		}
		dec := json.NewDecoder(io.LimitReader(r.Body, 4096))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil || body.Version == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "want {\"version\": \"…\"}"})
			return
		}
		found, err := a.unblock(body.Version)
		switch {
		case err != nil:
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		case !found:
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "version " + body.Version + " is not blocked"})
		default:
			writeJSON(w, http.StatusOK, map[string]string{"unblocked": body.Version})
		}
	})
	if reg != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	}
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// ServeSocket serves h on a unix socket at path until ctx ends. A stale
// socket file from a crashed agent is replaced; the caller holds the data
// dir lock, so no live agent owns it.
func ServeSocket(ctx context.Context, path string, h http.Handler, logger *slog.Logger) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	// Group members (e.g. an operators' group) may query and trigger.
	_ = os.Chmod(path, 0o660)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		_ = os.Remove(path)
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		logger.Error("local API stopped", "err", err)
		return fmt.Errorf("socket: %w", err)
	}
}

// Client talks to a running agent over its socket.
type Client struct {
	Socket string
	http   *http.Client
}

// NewClient returns a client for the agent listening on socket.
func NewClient(socket string) *Client {
	return &Client{Socket: socket, http: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}},
	}}
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the agent at %s (is `flotilla agent` running, and may you open its socket?): %w", c.Socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e)
		if e.Error == "" {
			e.Error = resp.Status
		}
		return errors.New(e.Error)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out)
}

// Status fetches the agent's status.
func (c *Client) Status(ctx context.Context) (StatusReport, error) {
	var r StatusReport
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &r)
	return r, err
}

// Check asks for an on-demand update check.
func (c *Client) Check(ctx context.Context) (CheckResult, error) {
	var r CheckResult
	err := c.do(ctx, http.MethodPost, "/v1/check", nil, &r)
	return r, err
}

// Unblock allows a version blocked after a rollback again.
func (c *Client) Unblock(ctx context.Context, version string) error {
	var r map[string]string
	return c.do(ctx, http.MethodPost, "/v1/unblock", map[string]string{"version": version}, &r)
}
