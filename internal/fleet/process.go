package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/flotilla/flotilla/internal/fleet/unitfile"
)

// ProcessConfig configures a ProcessDriver.
type ProcessConfig struct {
	// LogDir receives <unit>.log with each unit's stdout and stderr;
	// empty discards output.
	LogDir string
	// Env is added to every unit's environment, after the agent's own
	// (for example FLOTILLA_MACHINE_ID=...).
	Env []string
	// MaxStopTimeout caps TimeoutStopSec, so tests and shutdowns are not
	// held up by units that ignore SIGTERM (0: no cap).
	MaxStopTimeout time.Duration
}

// ProcessDriver runs a unit's ExecStart as a child process in its own
// process group, with ExecStartPre, ExecStop, Restart= and RestartSec=
// honoured. It is meant for development, tests and hosts without
// systemd; units run as the agent's user.
type ProcessDriver struct {
	cfg ProcessConfig
	log *slog.Logger

	mu    sync.Mutex
	units map[string]*supervisor
}

// NewProcessDriver returns a driver; logger may be nil.
func NewProcessDriver(cfg ProcessConfig, logger *slog.Logger) *ProcessDriver {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &ProcessDriver{cfg: cfg, log: logger, units: map[string]*supervisor{}}
}

// supervisor owns one unit's processes.
type supervisor struct {
	name   string
	hash   string
	spec   serviceSpec
	stopc  chan struct{} // closed to ask for a stop
	done   chan struct{} // closed when the supervisor has exited
	mu     sync.Mutex
	active string
	sub    string
	starts int
}

func (s *supervisor) set(active, sub string) {
	s.mu.Lock()
	s.active, s.sub = active, sub
	s.mu.Unlock()
}

// Start implements Driver.
func (d *ProcessDriver) Start(ctx context.Context, f *unitfile.File) error {
	d.mu.Lock()
	old := d.units[f.Name.Full]
	d.mu.Unlock()
	if old != nil {
		select {
		case <-old.done:
		default:
			if old.hash == f.Hash {
				return nil
			}
		}
		if err := d.Stop(ctx, f.Name.Full); err != nil {
			return err
		}
	}
	spec, err := parseService(f)
	if err != nil {
		return fmt.Errorf("start %s: %w", f.Name.Full, err)
	}
	if d.cfg.MaxStopTimeout > 0 {
		spec.stopTimeout = min(spec.stopTimeout, d.cfg.MaxStopTimeout)
	}
	s := &supervisor{name: f.Name.Full, hash: f.Hash, spec: spec,
		stopc: make(chan struct{}), done: make(chan struct{}), active: "activating", sub: "start-pre"}
	if old != nil {
		s.starts = old.starts
	}
	d.mu.Lock()
	d.units[s.name] = s
	d.mu.Unlock()
	go d.supervise(s)
	return nil
}

// Stop implements Driver.
func (d *ProcessDriver) Stop(ctx context.Context, name string) error {
	d.mu.Lock()
	s := d.units[name]
	d.mu.Unlock()
	if s == nil {
		return nil
	}
	s.mu.Lock()
	select {
	case <-s.stopc:
	default:
		close(s.stopc)
	}
	s.mu.Unlock()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop %s: %w", name, ctx.Err())
	}
}

// State implements Driver.
func (d *ProcessDriver) State(_ context.Context, name string) (DriverState, error) {
	d.mu.Lock()
	s := d.units[name]
	d.mu.Unlock()
	if s == nil {
		return DriverState{Load: "not-found", Active: "inactive", Sub: "dead"}, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return DriverState{Load: "loaded", Active: s.active, Sub: s.sub, Hash: s.hash, Starts: s.starts}, nil
}

// Close stops every unit; for an agent's shutdown.
func (d *ProcessDriver) Close(ctx context.Context) error {
	d.mu.Lock()
	names := make([]string, 0, len(d.units))
	for n := range d.units {
		names = append(names, n)
	}
	d.mu.Unlock()
	var errs []error
	for _, n := range names {
		errs = append(errs, d.Stop(ctx, n))
	}
	return errors.Join(errs...)
}

func (d *ProcessDriver) output(name string) (io.WriteCloser, error) {
	if d.cfg.LogDir == "" {
		return nil, nil
	}
	f, err := os.OpenFile(filepath.Join(d.cfg.LogDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open unit log: %w", err)
	}
	return f, nil
}

func (d *ProcessDriver) command(s *supervisor, el execLine, out io.Writer, extra ...string) *exec.Cmd {
	cmd := exec.Command(el.argv[0], el.argv[1:]...)
	cmd.Env = append(append(append(os.Environ(), d.cfg.Env...), s.spec.env...), extra...)
	cmd.Dir = s.spec.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	dieWithAgent(cmd.SysProcAttr)
	if out != nil {
		cmd.Stdout, cmd.Stderr = out, out
	}
	return cmd
}

// runSync runs a helper command (ExecStartPre, ExecStop) to completion,
// killing its group if stop is closed or timeout passes.
func (d *ProcessDriver) runSync(s *supervisor, el execLine, out io.Writer, stop <-chan struct{}, timeout time.Duration, extra ...string) error {
	cmd := d.command(s, el, out, extra...)
	if err := cmd.Start(); err != nil {
		return err
	}
	waitc := make(chan error, 1)
	go func() { waitc <- cmd.Wait() }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-waitc:
		return err
	case <-stop:
	case <-t.C:
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-waitc
	return errors.New("interrupted")
}

// supervise runs the unit until it is stopped or exits for good.
func (d *ProcessDriver) supervise(s *supervisor) {
	defer close(s.done)
	out, err := d.output(s.name)
	if err != nil {
		d.log.Error("unit output", "unit", s.name, "err", err)
	}
	if out != nil {
		defer out.Close()
	}
	var w io.Writer
	if out != nil {
		w = out
	}
	for {
		s.set("activating", "start-pre")
		preOK := true
		for _, el := range s.spec.pre {
			if err := d.runSync(s, el, w, s.stopc, s.spec.stopTimeout+time.Minute); err != nil && !el.ignoreFailure {
				d.log.Warn("ExecStartPre failed", "unit", s.name, "err", err)
				preOK = false
				break
			}
		}
		var exitErr error
		stopped := false
		if preOK {
			exitErr, stopped = d.runMain(s, w)
		} else {
			exitErr = errors.New("ExecStartPre failed")
			select {
			case <-s.stopc:
				stopped = true
			default:
			}
		}
		if stopped {
			s.set("inactive", "dead")
			return
		}
		failed := exitErr != nil
		restart := s.spec.restart == "always" ||
			s.spec.restart == "on-failure" && failed ||
			s.spec.restart == "on-success" && !failed
		if !restart {
			if failed {
				s.set("failed", "failed")
			} else {
				s.set("inactive", "dead")
			}
			return
		}
		s.set("activating", "auto-restart")
		select {
		case <-s.stopc:
			s.set("inactive", "dead")
			return
		case <-time.After(s.spec.restartSec):
		}
	}
}

// runMain runs ExecStart until it exits or a stop is requested, and
// reports the exit error and whether the unit was stopped.
func (d *ProcessDriver) runMain(s *supervisor, w io.Writer) (error, bool) {
	cmd := d.command(s, s.spec.start, w)
	if err := cmd.Start(); err != nil {
		d.log.Warn("ExecStart failed", "unit", s.name, "err", err)
		return err, false
	}
	pid := cmd.Process.Pid
	s.mu.Lock()
	s.starts++
	s.active, s.sub = "active", "running"
	s.mu.Unlock()
	waitc := make(chan error, 1)
	go func() { waitc <- cmd.Wait() }()
	select {
	case err := <-waitc:
		// Like systemd's control-group kill mode: nothing the unit left
		// behind survives its main process.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		return err, false
	case <-s.stopc:
	}
	s.set("deactivating", "stop")
	for _, el := range s.spec.stop {
		if err := d.runSync(s, el, w, nil, s.spec.stopTimeout, "MAINPID="+strconv.Itoa(pid)); err != nil && !el.ignoreFailure {
			d.log.Warn("ExecStop failed", "unit", s.name, "err", err)
		}
	}
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	t := time.NewTimer(s.spec.stopTimeout)
	defer t.Stop()
	select {
	case <-waitc:
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	case <-t.C:
		d.log.Warn("unit ignored SIGTERM, killing", "unit", s.name)
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-waitc
	}
	return nil, true
}
