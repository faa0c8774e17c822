package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/flotilla/flotilla/api/v1"
	"github.com/flotilla/flotilla/internal/machineconfig"
)

// Managed machine configuration: when Config.ConfigRoot is set, the agent
// fetches its group's config document from the server (GET
// <base>/v1/config/{app}/{GROUP}), applies it to the root when its version
// changes, compares the root with it on every round (drift) and reports the
// applied version, the drift and any error (POST …/report).

// configStateFile records, in the data dir, what the agent last applied;
// configDocFile keeps that document so drift is checked after a restart
// without fetching it again.
const (
	configStateFile = "config-state.json"
	configDocFile   = "config-document"
)

// configRequestTimeout bounds one fetch or report.
const configRequestTimeout = 30 * time.Second

// maxConfigResponse bounds a fetched document (the server accepts 4 MiB;
// JSON escaping may grow it).
const maxConfigResponse = 16 << 20

// configState is the agent's record of its managed config.
type configState struct {
	Version   int       `json:"version"`
	SHA256    string    `json:"sha256"`
	AppliedAt time.Time `json:"applied_at,omitzero"`
	// FirstBootDone is set once the first apply was attempted: Ignition's
	// strict first-boot rules (conflicting files are errors) hold for that
	// one apply only, later applies converge.
	FirstBootDone bool `json:"first_boot_done"`
	// Error is the last apply's error; a failed version is retried on the
	// next round even though its document is unchanged.
	Error string `json:"error,omitempty"`
}

// configLoop is the managed-config reconciler; it holds the document last
// applied.
type configLoop struct {
	a     *Agent
	st    configState
	doc   []byte
	cfg   machineconfig.Config
	valid bool // cfg holds the parsed doc
	sd    machineconfig.SystemdNotifier
}

// runConfig runs the managed-config loop until ctx ends: one round at once,
// then every ConfigInterval.
func (a *Agent) runConfig(ctx context.Context) {
	l := &configLoop{a: a}
	if err := l.load(); err != nil {
		a.log.Error("managed config state unreadable; starting afresh", "err", err)
		l.st = configState{}
	}
	if root, err := filepath.Abs(a.cfg.ConfigRoot); err == nil && root == "/" {
		// Only the live system has a systemd to tell about unit changes.
		sd, err := machineconfig.NewSystemdNotifier(ctx)
		if err != nil {
			a.log.Warn("managed config: no systemd connection; units are written but not reloaded or started", "err", err)
		} else {
			defer sd.Close()
			l.sd = sd
		}
	}
	for {
		l.round(ctx)
		t := time.NewTimer(a.cfg.ConfigInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (l *configLoop) load() error {
	b, err := os.ReadFile(filepath.Join(l.a.cfg.DataDir, configStateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load config state: %w", err)
	}
	if err := json.Unmarshal(b, &l.st); err != nil {
		return fmt.Errorf("load config state: %w", err)
	}
	doc, err := os.ReadFile(filepath.Join(l.a.cfg.DataDir, configDocFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("load config document: %w", err)
	}
	l.setDoc(doc)
	return nil
}

func (l *configLoop) save() error {
	b, err := json.MarshalIndent(l.st, "", "  ")
	if err != nil {
		return fmt.Errorf("save config state: %w", err)
	}
	// The document first: a state naming a version whose document is
	// missing would make the next start diff against nothing.
	if err := writeFileAtomic(filepath.Join(l.a.cfg.DataDir, configDocFile), l.doc, 0o600); err != nil {
		return fmt.Errorf("save config document: %w", err)
	}
	return writeFileAtomic(filepath.Join(l.a.cfg.DataDir, configStateFile), append(b, '\n'), 0o600)
}

func (l *configLoop) setDoc(doc []byte) {
	l.doc, l.valid = doc, false
	if len(doc) == 0 {
		return
	}
	cfg, rep := machineconfig.Validate(doc)
	if !rep.HasErrors() {
		l.cfg, l.valid = cfg, true
	}
}

// configBaseURL derives the server's base URL from SERVER, which names the
// Omaha endpoint (http://host:8080/v1/update/).
func configBaseURL(server string) string {
	u, err := url.Parse(server)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return ""
	}
	p := strings.TrimSuffix(u.Path, "/")
	p = strings.TrimSuffix(p, "/v1/update")
	u.Path, u.RawQuery, u.Fragment = strings.TrimSuffix(p, "/"), "", ""
	return u.String()
}

// round is one fetch → apply (when changed) → diff → report.
func (l *configLoop) round(ctx context.Context) {
	a := l.a
	c := a.readConf()
	base := configBaseURL(a.serverURL(c))
	if base == "" {
		a.log.Debug("managed config disabled (SERVER unset or disabled)")
		return
	}
	endpoint := base + "/v1/config/" + url.PathEscape(a.cfg.AppID) + "/" + url.PathEscape(a.group(c))
	got, err := l.fetch(ctx, endpoint)
	if err != nil {
		a.log.Warn("managed config fetch failed", "url", endpoint, "err", err)
		return
	}
	if got == nil && len(l.doc) == 0 {
		return // the group has no config (yet)
	}
	var applyErr error
	if got != nil && (got.Version != l.st.Version || got.SHA256 != l.st.SHA256 || l.st.Error != "") {
		applyErr = l.apply(ctx, got)
	} else if l.st.Error != "" {
		applyErr = errors.New(l.st.Error)
	}
	rep := v1.AgentConfigReport{MachineID: a.cfg.MachineID, Version: l.st.Version, AppliedAt: l.st.AppliedAt, Drift: []string{}}
	if applyErr != nil {
		rep.Error = applyErr.Error()
	}
	if l.valid {
		drift, err := machineconfig.Diff(l.cfg, a.cfg.ConfigRoot)
		if err != nil && rep.Error == "" {
			rep.Error = err.Error()
		}
		for _, d := range drift {
			rep.Drift = append(rep.Drift, driftSummary(d))
		}
	}
	if err := l.report(ctx, endpoint+"/report", rep); err != nil {
		a.log.Warn("managed config report failed", "url", endpoint, "err", err)
	}
}

// fetch GETs the group's latest document; nil when unchanged (304) or when
// the group has none (404).
func (l *configLoop) fetch(ctx context.Context, endpoint string) (*v1.AgentConfig, error) {
	ctx, cancel := context.WithTimeout(ctx, configRequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch config: %w", err)
	}
	req.Header.Set("User-Agent", "flotilla-agent")
	// Only a successfully applied document may be skipped as unchanged; a
	// failed one is fetched again and retried.
	if l.st.SHA256 != "" && l.st.Error == "" && len(l.doc) > 0 {
		req.Header.Set("If-None-Match", `"`+l.st.SHA256+`"`)
	}
	resp, err := l.a.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch config: %w", err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotModified, http.StatusNotFound:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		return nil, nil
	default:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, fmt.Errorf("fetch config: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	var out v1.AgentConfig
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxConfigResponse)).Decode(&out); err != nil {
		return nil, fmt.Errorf("fetch config: decode: %w", err)
	}
	return &out, nil
}

// apply applies a fetched version and records the outcome.
func (l *configLoop) apply(ctx context.Context, got *v1.AgentConfig) error {
	a := l.a
	cfg, rep := machineconfig.Validate([]byte(got.Document))
	var err error
	if rep.HasErrors() {
		err = fmt.Errorf("apply config version %d: %w", got.Version, &machineconfig.ValidationError{Report: rep})
	} else {
		firstBoot := !l.st.FirstBootDone
		var res machineconfig.Result
		res, err = machineconfig.Apply(ctx, cfg, machineconfig.ApplyOptions{Root: a.cfg.ConfigRoot, HTTPClient: a.cfg.HTTPClient,
			Logger: a.log.With("component", "machineconfig"), Systemd: l.sd, FirstBoot: firstBoot})
		l.st.FirstBootDone = true
		if err != nil {
			err = fmt.Errorf("apply config version %d: %w", got.Version, err)
		} else {
			a.log.Info("managed config applied", "version", got.Version, "changes", len(res.Changes), "first_boot", firstBoot)
			l.st.Version, l.st.SHA256, l.st.AppliedAt = got.Version, got.SHA256, a.cfg.Now().UTC()
			l.setDoc([]byte(got.Document))
		}
	}
	if err != nil {
		a.log.Error("managed config apply failed", "version", got.Version, "err", err)
		l.st.Error = err.Error()
	} else {
		l.st.Error = ""
	}
	if serr := l.save(); serr != nil {
		a.log.Error("managed config state not saved", "err", serr)
	}
	return err
}

// driftSummary is one line per drifted item: "file /etc/motd: content".
func driftSummary(d machineconfig.Drift) string {
	subject := d.Path
	if d.Name != "" && (d.Kind == "user" || d.Kind == "group" || subject == "") {
		subject = d.Name
	}
	return fmt.Sprintf("%s %s: %s", d.Kind, subject, strings.Join(d.What, ", "))
}

// report POSTs the machine's config report.
func (l *configLoop) report(ctx context.Context, endpoint string, rep v1.AgentConfigReport) error {
	ctx, cancel := context.WithTimeout(ctx, configRequestTimeout)
	defer cancel()
	b, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("report config: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("report config: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "flotilla-agent")
	resp, err := l.a.cfg.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("report config: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("report config: %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}
