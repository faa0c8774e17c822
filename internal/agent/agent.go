// Package agent is flotilla's node daemon for OS updates: the successor of
// update_engine. It asks an Omaha server (flotilla server or Nebraska) for
// new releases in update_engine's dialect, downloads a signed payload to a
// staging area, verifies it (fail closed: no trusted key, no install),
// writes it into the inactive /usr slot of a GPT disk, flips the slot
// priorities with one GPT write, and after the reboot marks the new slot
// good once a health gate passed — or notices that the bootloader fell back
// and reports the rollback.
//
// Every step is persisted (state.json in the data directory) before the
// agent acts on it, so a crash or a kill at any point resumes where it
// stopped, and nothing touches a slot's boot attributes before the image in
// it is verified.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla/flotilla/internal/lockfile"
	"github.com/flotilla/flotilla/omaha"
)

// Reboot strategies (REBOOT_STRATEGY). etcd-lock and fleetlock are the
// coordinated ones; they plug in through Config.Coordinator.
const (
	StrategyReboot   = "reboot"
	StrategyOff      = "off"
	StrategyEtcdLock = "etcd-lock"
	StrategyFleet    = "fleetlock"
)

// Config is how an agent is set up. Identity fields are resolved by the
// caller (the CLI reads /etc/machine-id, the kernel boot id and
// /proc/cmdline; tests and dev mode pass their own).
type Config struct {
	// DataDir holds state.json, the staging area and the lock file.
	DataDir string
	// UpdateConfPaths are read in order on every check (first hit wins).
	UpdateConfPaths []string
	// Overrides of update.conf keys (flags); empty means not set.
	Overrides map[string]string

	AppID     string
	Board     string
	MachineID string
	BootID    string
	// BootedPartUUID is the unique GUID of the booted /usr partition.
	BootedPartUUID string
	// OSVersion is the running version when the booted slot was not
	// written by this agent (the image's release file).
	OSVersion  string
	OEM        string
	OEMVersion string

	// Disk is the block device or disk image file holding USR-A/USR-B.
	Disk string
	// PayloadKeyPaths are PEM files or directories of trusted ed25519
	// public keys. No key found means no install.
	PayloadKeyPaths []string

	InitialDelay  time.Duration
	CheckInterval time.Duration

	// ConfigRoot, when set, turns on managed machine configuration: the
	// group's config document is applied to this root ("/" on a real
	// host) and drift is reported (see config.go). ConfigInterval is the
	// time between rounds; 0 means CheckInterval.
	ConfigRoot     string
	ConfigInterval time.Duration

	Health HealthConfig

	// RebootRequiredFile is written once an update is applied (kured and
	// similar tools watch /run/reboot-required).
	RebootRequiredFile string
	// Rebooter performs the reboot (StrategyReboot, and the rollback after
	// a failed health gate).
	Rebooter Rebooter
	// Coordinators by REBOOT_STRATEGY (etcd-lock, fleetlock): asked before
	// rebooting, told after a new boot passed its health gate.
	Coordinators map[string]Coordinator

	HTTPClient *http.Client
	// CrashPoint, for tests only, names a step at which the process kills
	// itself with SIGKILL (see crashpoint.go).
	CrashPoint string
	// Rand returns uniform values in [0,1) for jitter; nil uses math/rand.
	Rand func() float64
	// Now is the clock; nil uses time.Now.
	Now func() time.Time
}

// DefaultConfig returns the production defaults.
func DefaultConfig() Config {
	board := "amd64-usr"
	if runtime.GOARCH == "arm64" {
		board = "arm64-usr"
	}
	return Config{
		DataDir:            "/var/lib/flotilla/agent",
		UpdateConfPaths:    DefaultUpdateConfPaths,
		AppID:              omaha.FlatcarAppID,
		Board:              board,
		PayloadKeyPaths:    []string{"/usr/share/flotilla/payload-keys", "/etc/flotilla/payload-keys"},
		InitialDelay:       3 * time.Minute,
		CheckInterval:      45 * time.Minute,
		Health:             DefaultHealthConfig(),
		RebootRequiredFile: "/run/reboot-required",
	}
}

// Agent is one machine's update daemon. Create it with New and start it
// with Run; the local API (Handler) may be served while it runs.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	omaha   *omaha.Client

	mu       sync.Mutex
	st       *State
	progress float64
	conf     UpdateConf
	// healthDone is closed once the health gate decided for this boot.
	healthDone chan struct{}
	checkNow   chan string
	rebootAt   time.Time
	lastNote   string
}

// New validates cfg and prepares an agent; it does not touch the disk yet.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Agent, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("agent: no data directory")
	}
	if cfg.MachineID == "" || cfg.BootID == "" {
		return nil, errors.New("agent: machine id and boot id are required")
	}
	if cfg.AppID == "" {
		cfg.AppID = omaha.FlatcarAppID
	}
	if cfg.CheckInterval <= 0 {
		return nil, errors.New("agent: check interval must be positive")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 0, Transport: &http.Transport{
			Proxy: http.ProxyFromEnvironment, ResponseHeaderTimeout: 60 * time.Second,
			TLSHandshakeTimeout: 30 * time.Second, IdleConnTimeout: 90 * time.Second,
		}}
	}
	if cfg.ConfigInterval <= 0 {
		cfg.ConfigInterval = cfg.CheckInterval
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Health.Checker == nil {
		cfg.Health.Checker = noUnitChecker{}
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Agent{
		cfg: cfg, log: logger, metrics: m,
		omaha:      &omaha.Client{HTTP: &http.Client{Timeout: 2 * time.Minute, Transport: cfg.HTTPClient.Transport}, UserAgent: "flotilla-agent"},
		healthDone: make(chan struct{}),
		checkNow:   make(chan string, 1),
	}, nil
}

// Run is the agent's lifecycle: lock the data dir, reconcile the state
// with what was booted, run the health gate, then check for updates on
// schedule until ctx ends. Work in progress is left persisted and resumes
// on the next start.
func (a *Agent) Run(ctx context.Context) error {
	if err := os.MkdirAll(a.stagingDir(), 0o700); err != nil {
		return fmt.Errorf("agent: create data dir: %w", err)
	}
	lock, err := lockfile.Acquire(a.cfg.DataDir, "agent.lock", "flotilla agent")
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	defer lock.Close()
	st, err := loadState(a.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.mu.Lock()
	a.st = st
	a.mu.Unlock()
	if err := a.reconcileBoot(); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.log.Info("agent started", "machine_id", a.cfg.MachineID, "boot_id", a.cfg.BootID,
		"version", a.currentVersion(), "booted_slot", a.cfg.BootedPartUUID, "status", a.status())

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.runHealthGate(ctx)
	}()
	if a.cfg.ConfigRoot != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.runConfig(ctx)
		}()
	}
	defer wg.Wait()

	// An update interrupted by a crash resumes at once; an applied update
	// waiting for its reboot goes straight to the reboot strategy.
	next := a.cfg.InitialDelay
	if a.pending() != nil {
		next = 0
	}
	timer := time.NewTimer(next)
	defer timer.Stop()
	rebootTimer := time.NewTimer(0)
	defer rebootTimer.Stop()
	for {
		select {
		case <-ctx.Done():
			a.log.Info("agent stopping", "status", a.status())
			return nil
		case src := <-a.checkNow:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			timer.Reset(a.cycle(ctx, src))
		case <-timer.C:
			timer.Reset(a.cycle(ctx, ""))
		case <-rebootTimer.C:
		}
		if d, ok := a.maybeReboot(ctx); ok {
			rebootTimer.Reset(d)
		}
	}
}

// cycle does one scheduled or on-demand round and returns the delay until
// the next one.
func (a *Agent) cycle(ctx context.Context, source string) time.Duration {
	// Reports of a freshly booted update wait for the health gate, so the
	// server hears "complete" only from a machine that proved healthy.
	select {
	case <-a.healthDone:
	case <-ctx.Done():
		return time.Hour
	}
	if source == "" {
		source = omaha.InstallSourceScheduler
	}
	var poll time.Duration
	switch {
	case a.pending() != nil:
		a.install(ctx)
	case a.status() == StatusUpdatedNeedReboot:
		a.ping(ctx)
	default:
		poll = a.check(ctx, source)
	}
	a.mu.Lock()
	failures := a.st.Failures
	a.mu.Unlock()
	return NextCheckDelay(a.cfg.CheckInterval, failures, poll, a.cfg.Rand())
}

// TriggerCheck asks for an on-demand check (installsource ondemandupdate).
// Like update_engine's AttemptUpdate it does nothing unless the agent is
// idle; it reports whether a check was queued.
func (a *Agent) TriggerCheck() bool {
	if a.status() != StatusIdle {
		return false
	}
	select {
	case a.checkNow <- omaha.InstallSourceOnDemand:
	default:
	}
	return true
}

func (a *Agent) stagingDir() string { return filepath.Join(a.cfg.DataDir, "staging") }

func (a *Agent) status() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st == nil {
		return StatusIdle
	}
	return a.st.Status
}

func (a *Agent) pending() *Pending {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.Pending
}

// update changes the state under the lock and persists it. A failed write
// is logged and returned: the caller must not go on to act on a state it
// could not record.
func (a *Agent) update(fn func(s *State)) error {
	a.mu.Lock()
	fn(a.st)
	a.metrics.setStatus(a.st.Status)
	err := saveState(a.cfg.DataDir, a.st)
	a.mu.Unlock()
	if err != nil {
		a.log.Error("cannot persist agent state", "err", err)
	}
	return err
}

func (a *Agent) setProgress(p float64) {
	a.mu.Lock()
	a.progress = p
	a.mu.Unlock()
}

// currentVersion is the version of the booted /usr: what this agent wrote
// into the booted slot, else the image's own release version.
func (a *Agent) currentVersion() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st != nil {
		if r, ok := a.st.Slots[a.cfg.BootedPartUUID]; ok && a.cfg.BootedPartUUID != "" {
			return r.Version
		}
	}
	return a.cfg.OSVersion
}

// readConf re-reads update.conf (update_engine does so on every check)
// and applies flag overrides.
func (a *Agent) readConf() UpdateConf {
	c, err := ReadUpdateConf(a.cfg.UpdateConfPaths)
	if err != nil {
		a.log.Error("update.conf unreadable; using flags only", "err", err)
		c = UpdateConf{Values: map[string]string{}, Source: map[string]string{}}
	}
	for k, v := range a.cfg.Overrides {
		if v != "" {
			c.Values[k] = v
			c.Source[k] = "command line"
		}
	}
	a.mu.Lock()
	a.conf = c
	a.mu.Unlock()
	return c
}

// reconcileBoot compares what was booted with what the state expected. It
// is where a completed update and a rollback are told apart.
func (a *Agent) reconcileBoot() error {
	a.mu.Lock()
	rp := a.st.RebootPending
	p := a.st.Pending
	a.mu.Unlock()
	if a.st.AlephVersion == "" {
		if err := a.update(func(s *State) { s.AlephVersion = a.cfg.OSVersion }); err != nil {
			return err
		}
	}
	if p != nil && p.Step == stepCommit && p.BootID != "" && p.BootID != a.cfg.BootID &&
		p.TargetPartUUID == a.cfg.BootedPartUUID {
		// Power was lost after the GPT commit but before the state said
		// so, and the machine booted the new slot: the update is applied.
		from := a.currentVersionFromRecordsExcept(p.TargetPartUUID)
		rp = &RebootPending{Version: p.Version, TargetPartUUID: p.TargetPartUUID, FromVersion: from, BootID: p.BootID}
		if err := a.update(func(s *State) {
			s.recordSlot(p.TargetPartUUID, SlotRecord{Version: p.Version, ImageSHA256: p.ImageSHA256, ImageSize: p.ImageSize, WrittenAt: a.cfg.Now()})
			s.Pending = nil
			s.RebootPending = rp
		}); err != nil {
			return err
		}
	}
	if rp == nil {
		if a.status() != StatusIdle && a.pending() == nil {
			return a.update(func(s *State) { s.Status = StatusIdle })
		}
		return nil
	}
	if rp.BootID == a.cfg.BootID {
		a.log.Info("update applied, waiting for reboot", "version", rp.Version)
		return a.update(func(s *State) { s.Status = StatusUpdatedNeedReboot })
	}
	// The machine rebooted since the update was applied.
	_ = os.Remove(a.cfg.RebootRequiredFile)
	switch a.cfg.BootedPartUUID {
	case rp.TargetPartUUID:
		if rp.TrialBootID == a.cfg.BootID {
			return a.update(func(s *State) { s.Status = StatusIdle })
		}
		a.log.Info("booted the updated slot; the health gate decides whether it stays", "version", rp.Version, "previous_version", rp.FromVersion)
		return a.update(func(s *State) {
			s.RebootPending.TrialBootID = a.cfg.BootID
			s.PreviousVersion = rp.FromVersion
			s.Status = StatusIdle
			s.NewVersion, s.NewSize = "", 0
		})
	default:
		a.log.Warn("ROLLBACK: the machine booted its previous slot instead of the update; the update will not be installed again automatically",
			"version", rp.Version, "booted_slot", a.cfg.BootedPartUUID, "expected_slot", rp.TargetPartUUID,
			"hint", "see why the new slot failed (journal of the failed boot), then `flotilla agent unblock "+rp.Version+"` to allow it again")
		a.metrics.rollbacks.Inc()
		return a.update(func(s *State) {
			s.RebootPending = nil
			s.PreviousVersion = ""
			s.RollbackVersion = rp.Version
			s.block(rp.Version)
			s.Status = StatusIdle
			s.NewVersion, s.NewSize = "", 0
			s.LastError = &LastError{Code: omaha.CodeRollbackError, Name: "RollbackError",
				Message: fmt.Sprintf("booted back into %s after the update to %s", a.versionOfSlotLocked(s, a.cfg.BootedPartUUID), rp.Version), At: a.cfg.Now()}
		})
	}
}

func (a *Agent) versionOfSlotLocked(s *State, partUUID string) string {
	if r, ok := s.Slots[partUUID]; ok {
		return r.Version
	}
	return a.cfg.OSVersion
}

func (a *Agent) currentVersionFromRecordsExcept(partUUID string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, r := range a.st.Slots {
		if id != partUUID {
			return r.Version
		}
	}
	return a.cfg.OSVersion
}

// unblock allows a version blocked after a rollback to be installed again.
func (a *Agent) unblock(version string) (bool, error) {
	found := false
	err := a.update(func(s *State) {
		out := s.Blocked[:0]
		for _, v := range s.Blocked {
			if v == version {
				found = true
				continue
			}
			out = append(out, v)
		}
		s.Blocked = out
	})
	return found, err
}

func trimBraces(s string) string { return strings.Trim(s, "{}") }
