package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/flotilla/flotilla/internal/server"
	"github.com/flotilla/flotilla/internal/updatesvc"
	"github.com/flotilla/flotilla/omaha"
)

// ErrInvalidConfig is wrapped by RunOmaha when the configuration cannot be
// run; the CLI reports it as a usage error.
var ErrInvalidConfig = errors.New("invalid benchmark configuration")

// Mode selects what the simulated machines do.
type Mode string

// Modes of RunOmaha.
const (
	// ModeCheck sends steady-state update checks for random machines.
	ModeCheck Mode = "check"
	// ModeRollout walks every machine through a whole update.
	ModeRollout Mode = "rollout"
)

// OmahaConfig configures RunOmaha. DefaultOmahaConfig gives the defaults.
type OmahaConfig struct {
	// ServerURL is the Omaha endpoint of a running server (flotilla or
	// Nebraska); a URL without a path gets /v1/update/. Empty starts an
	// in-process flotilla server on 127.0.0.1:0 in a temporary directory.
	// Several URLs, comma-separated, are replicas of one service: requests
	// go to them round-robin.
	ServerURL string
	// Database is the in-process server's store (server.Config.Database):
	// empty for SQLite in its temporary directory, or a PostgreSQL URL
	// whose database should be empty (the run leaves its data there).
	Database string
	// Replicas is the number of in-process servers sharing Database and
	// the first one's etcd, with requests round-robin over them. More than
	// one needs a PostgreSQL Database.
	Replicas int
	// AppID is the application id the machines send (braces optional).
	AppID string
	// Track is the GROUP= the machines send.
	Track string
	// Machines is the number of simulated machines.
	Machines int
	// Instances is how many instances the in-process server has registered
	// before the run (machines 0..Instances-1, inserted through the store
	// in one transaction). 0 means Machines. Ignored with ServerURL.
	Instances int
	// Concurrency lists the numbers of workers to measure with, one check
	// phase each. Rollout mode takes exactly one value.
	Concurrency []int
	// Duration bounds each check phase, or the whole rollout.
	Duration time.Duration
	// Requests bounds each check phase (or the rollout) by request count;
	// whichever of Duration and Requests is reached first ends it. 0 = no
	// count limit.
	Requests int
	// Mode is ModeCheck or ModeRollout.
	Mode Mode
	// FromVersion is the version the machines run. In check mode the
	// in-process server's channel points at it (machines are up to date).
	FromVersion string
	// ToVersion is the version rolled out in rollout mode.
	ToVersion string
	// Reference also measures ServeReference in every check phase, with the
	// same client, concurrency and bound.
	Reference bool
	// LastSeenAge back-dates the registered instances' last check. 0 keeps
	// checks read-only while the run is shorter than the server's last-seen
	// resolution (1 min); a larger value makes every machine's first check
	// write, as in a real fleet whose machines check every ~45 min.
	LastSeenAge time.Duration
	// SQLiteSync is the in-process server's synchronous mode (FULL, NORMAL).
	SQLiteSync string
	// Timeout bounds one HTTP request.
	Timeout time.Duration
	// CPUProfile, when set, receives a CPU profile of the measured phases
	// (setup and registration excluded). With an in-process server it
	// covers server and load generator together.
	CPUProfile io.Writer
}

// DefaultOmahaConfig returns the defaults: 1000 Flatcar machines on track
// "stable", concurrency 16 and 64, 10 s per phase, check mode.
func DefaultOmahaConfig() OmahaConfig {
	return OmahaConfig{
		AppID:       omaha.FlatcarAppID,
		Track:       "stable",
		Machines:    1000,
		Concurrency: []int{16, 64},
		Duration:    10 * time.Second,
		Mode:        ModeCheck,
		FromVersion: "3975.2.1",
		ToVersion:   "4081.2.0",
		SQLiteSync:  "FULL",
		Timeout:     30 * time.Second,
	}
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
}

// validate checks cfg and returns it with the application id normalized
// and Instances defaulted.
func (c OmahaConfig) validate() (OmahaConfig, error) {
	id, err := omaha.NormalizeAppID(c.AppID)
	if err != nil {
		return c, invalidf("app id: %v", err)
	}
	c.AppID = id
	switch {
	case c.Track == "":
		return c, invalidf("track is empty")
	case c.Machines <= 0:
		return c, invalidf("machines must be positive, got %d", c.Machines)
	case c.Instances < 0:
		return c, invalidf("instances must not be negative, got %d", c.Instances)
	case len(c.Concurrency) == 0:
		return c, invalidf("no concurrency given")
	case c.Duration < 0 || c.Requests < 0:
		return c, invalidf("duration and requests must not be negative")
	case c.Duration == 0 && c.Requests == 0:
		return c, invalidf("give a duration or a request count, or every phase would run forever")
	case c.FromVersion == "":
		return c, invalidf("from-version is empty")
	case c.Timeout <= 0:
		return c, invalidf("timeout must be positive")
	case c.Replicas < 0:
		return c, invalidf("replicas must not be negative, got %d", c.Replicas)
	case c.Replicas > 1 && c.ServerURL != "":
		return c, invalidf("replicas start in-process servers; give several comma-separated server URLs instead")
	case c.Replicas > 1 && !server.IsPostgres(c.Database):
		return c, invalidf("%d replicas need a PostgreSQL database to share", c.Replicas)
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	for _, n := range c.Concurrency {
		if n <= 0 {
			return c, invalidf("concurrency must be positive, got %d", n)
		}
	}
	if c.Instances == 0 {
		c.Instances = c.Machines
	}
	switch c.Mode {
	case ModeCheck:
	case ModeRollout:
		if len(c.Concurrency) != 1 {
			return c, invalidf("rollout mode takes one concurrency value, got %d", len(c.Concurrency))
		}
		if c.Reference {
			return c, invalidf("the reference handler is measured in check mode only")
		}
		if c.ToVersion == "" || updatesvc.CompareVersions(c.ToVersion, c.FromVersion) <= 0 {
			return c, invalidf("to-version %q must be newer than from-version %q", c.ToVersion, c.FromVersion)
		}
	default:
		return c, invalidf("mode %q: want check or rollout", c.Mode)
	}
	return c, nil
}

// OmahaResult is what RunOmaha measured.
type OmahaResult struct {
	Mode Mode `json:"mode"`
	// Target is "in-process" or the ServerURL given.
	Target string `json:"target"`
	// Endpoint is the URL the requests went to.
	Endpoint string `json:"endpoint"`
	AppID    string `json:"app_id"`
	Track    string `json:"track"`
	Machines int    `json:"machines"`
	// Instances is how many instances were registered before the run (0
	// against an external server).
	Instances int `json:"instances"`
	// Replicas is the number of servers the requests went to round-robin.
	Replicas int `json:"replicas"`
	// RegisterElapsed is how long registering them took.
	RegisterElapsed time.Duration `json:"-"`
	// Phases are the check-mode measurements, one per concurrency.
	Phases []Phase `json:"phases,omitempty"`
	// Rollout is the rollout-mode measurement.
	Rollout *RolloutResult `json:"rollout,omitempty"`
}

// MarshalJSON adds register_seconds to the tagged fields.
func (r OmahaResult) MarshalJSON() ([]byte, error) {
	type plain OmahaResult
	return marshalWithSeconds(plain(r), "register_seconds", r.RegisterElapsed)
}

// Phase is one check-mode measurement at one concurrency.
type Phase struct {
	Concurrency int `json:"concurrency"`
	// Server is the measurement of the target.
	Server Stats `json:"server"`
	// Reference is the trivial handler's, when asked for.
	Reference *Stats `json:"reference,omitempty"`
	// Ratio is Server.Throughput / Reference.Throughput (0 without a
	// reference).
	Ratio float64 `json:"ratio,omitempty"`
}

// Failed counts the target's requests without a normal answer, over all
// phases (the reference's are not counted).
func (r OmahaResult) Failed() int64 {
	var n int64
	for _, p := range r.Phases {
		n += p.Server.Failed()
	}
	if r.Rollout != nil {
		n += r.Rollout.Stats.Failed()
	}
	return n
}

// RunOmaha runs the benchmark cfg describes. Progress lines go to progress
// (nil: none), the in-process server logs to logger. It returns an error
// wrapping ErrInvalidConfig for a configuration it cannot run; failed
// requests are not an error but are counted in the result.
func RunOmaha(ctx context.Context, cfg OmahaConfig, logger *slog.Logger, progress io.Writer) (res OmahaResult, err error) {
	cfg, err = cfg.validate()
	if err != nil {
		return OmahaResult{}, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	res = OmahaResult{Mode: cfg.Mode, AppID: cfg.AppID, Track: cfg.Track, Machines: cfg.Machines}
	serverName := "flotilla"
	var ip *inProcess
	var group string
	var others []string // further replicas' endpoints
	if cfg.ServerURL == "" {
		res.Target = "in-process"
		if ip, err = startServer(ctx, cfg, logger, ""); err != nil {
			return OmahaResult{}, err
		}
		defer func() {
			if stopErr := ip.stop(); err == nil && stopErr != nil {
				err = stopErr
			}
		}()
		offered := cfg.FromVersion
		if cfg.Mode == ModeRollout {
			offered = cfg.ToVersion
		}
		g, err := ip.prepare(ctx, cfg.AppID, cfg.Track, offered)
		if err != nil {
			return OmahaResult{}, err
		}
		group = g.Name
		start := time.Now()
		if err := ip.register(ctx, g, cfg.Instances, cfg.FromVersion, cfg.LastSeenAge); err != nil {
			return OmahaResult{}, err
		}
		res.RegisterElapsed = time.Since(start)
		res.Instances = cfg.Instances
		res.Endpoint = ip.url()
		// The other replicas start on the prepared database, so they only
		// read what the first one wrote.
		for range cfg.Replicas - 1 {
			r, err := startServer(ctx, cfg, logger, ip.srv.Etcd().ClientURL())
			if err != nil {
				return OmahaResult{}, err
			}
			defer func() {
				if stopErr := r.stop(); err == nil && stopErr != nil {
					err = stopErr
				}
			}()
			others = append(others, r.url())
		}
		res.Replicas = cfg.Replicas
	} else {
		res.Target = cfg.ServerURL
		serverName = "server"
		urls := strings.Split(cfg.ServerURL, ",")
		for i, u := range urls {
			ep, err := (&omaha.Client{URL: strings.TrimSpace(u)}).Endpoint()
			if err != nil {
				return OmahaResult{}, invalidf("server: %v", err)
			}
			if i == 0 {
				res.Endpoint = ep
			} else {
				others = append(others, ep)
			}
		}
		res.Replicas = len(urls)
	}
	hc := newHTTPClient(slices.Max(cfg.Concurrency), cfg.Timeout)
	// Runs before the in-process server stops (defers run in reverse), so
	// that its graceful shutdown does not wait for our idle connections.
	defer hc.CloseIdleConnections()
	send := &sender{hc: hc, endpoint: res.Endpoint, others: others}

	if cfg.CPUProfile != nil {
		if err := pprof.StartCPUProfile(cfg.CPUProfile); err != nil {
			return OmahaResult{}, fmt.Errorf("start cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if cfg.Mode == ModeRollout {
		rr, err := runRollout(ctx, cfg, send, serverName, progress)
		if err != nil {
			return OmahaResult{}, err
		}
		if ip != nil {
			rs, err := ip.srv.Store().RolloutStatus(ctx, cfg.AppID, group)
			if err != nil {
				return OmahaResult{}, fmt.Errorf("read rollout status: %w", err)
			}
			rr.Group = group
			rr.Final = finalStatus(rs)
		}
		res.Rollout = &rr
		return res, nil
	}
	phases, err := runCheckPhases(ctx, cfg, send, serverName, progress)
	if err != nil {
		return OmahaResult{}, err
	}
	res.Phases = phases
	return res, nil
}

// runCheckPhases measures the target, and the reference after it, at each
// concurrency.
func runCheckPhases(ctx context.Context, cfg OmahaConfig, send *sender, serverName string, progress io.Writer) (phases []Phase, err error) {
	tmpl, err := newBodyTemplate(cfg.AppID, cfg.Track, requestKind{
		version: cfg.FromVersion, aleph: cfg.FromVersion, check: true, previousVersion: noPreviousVersion,
	})
	if err != nil {
		return nil, err
	}
	var ref *ReferenceServer
	if cfg.Reference {
		if ref, err = ServeReference(cfg.AppID); err != nil {
			return nil, err
		}
		defer func() {
			// Close the client's idle connections first: a connection the
			// transport dialled but never used counts as active on the
			// server side and would hold Shutdown up for seconds.
			send.hc.CloseIdleConnections()
			if closeErr := ref.Close(); err == nil && closeErr != nil {
				err = closeErr
			}
		}()
	}
	for _, c := range cfg.Concurrency {
		spec := phaseSpec{
			label: fmt.Sprintf("%s c=%d", serverName, c), server: serverName, concurrency: c,
			duration: cfg.Duration, requests: cfg.Requests, machines: cfg.Machines, tmpl: tmpl, send: send,
		}
		st, err := runChecks(ctx, spec, progress)
		if err != nil {
			return nil, err
		}
		ph := Phase{Concurrency: c, Server: st}
		if ref != nil {
			spec.label = fmt.Sprintf("reference c=%d", c)
			spec.server = "reference"
			spec.send = &sender{hc: send.hc, endpoint: ref.URL}
			rst, err := runChecks(ctx, spec, progress)
			if err != nil {
				return nil, err
			}
			ph.Reference = &rst
			if rst.Throughput > 0 {
				ph.Ratio = st.Throughput / rst.Throughput
			}
		}
		phases = append(phases, ph)
	}
	return phases, nil
}

// describeTarget is a one-line description of where the load went.
func (r OmahaResult) describeTarget() string {
	var b strings.Builder
	if r.Target == "in-process" {
		fmt.Fprintf(&b, "in-process flotilla at %s, %d instances registered", r.Endpoint, r.Instances)
		if r.RegisterElapsed > 0 {
			fmt.Fprintf(&b, " in %.1fs", r.RegisterElapsed.Seconds())
		}
		if r.Replicas > 1 {
			fmt.Fprintf(&b, ", %d replicas round-robin", r.Replicas)
		}
	} else {
		fmt.Fprintf(&b, "%s", r.Endpoint)
	}
	fmt.Fprintf(&b, "; %d simulated machines, app %s, track %s", r.Machines, r.AppID, r.Track)
	return b.String()
}
