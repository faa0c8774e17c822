package cli

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/flotilla/flotilla/internal/agent"
	"github.com/flotilla/flotilla/internal/fleet"
)

// unitAgentOpts are the flags of the unit agent inside `flotilla agent`.
type unitAgentOpts struct {
	enabled         bool
	driver          string
	metadata        []string
	publicIP        string
	grace           time.Duration
	presenceTTL     time.Duration
	logDir          string
	systemdDir      string
	keepOnExit      bool
	stopOnIsolation bool
	drainTimeout    time.Duration
}

func (u *unitAgentOpts) addFlags(f *pflag.FlagSet) {
	d := fleet.DefaultAgentConfig()
	f.BoolVar(&u.enabled, "units", false, "run the unit agent: register this machine and run the units the cluster places on it (needs --etcd-endpoints)")
	f.StringVar(&u.driver, "unit-driver", "systemd", "how units run: systemd (D-Bus, /run/systemd/system) or process (ExecStart run by the agent; dev, tests, hosts without systemd)")
	f.StringSliceVar(&u.metadata, "machine-metadata", nil, "metadata units select machines by (MachineMetadata=), as k=v,k2=v2")
	f.StringVar(&u.publicIP, "public-ip", "", "address shown for this machine in 'flotilla machine list'")
	f.DurationVar(&u.grace, "unit-grace", d.Grace, "stop every unit after this long without contact to etcd, so a partitioned machine does not run what the cluster moved; must not exceed the servers' --unit-grace")
	f.DurationVar(&u.presenceTTL, "unit-presence-ttl", d.PresenceTTL, "lease TTL of this machine's presence: how quickly the cluster notices it is gone (whole seconds)")
	f.BoolVar(&u.stopOnIsolation, "unit-stop-on-isolation", d.StopOnIsolation, "stop units when cut off from etcd for --unit-grace (false trades partition safety for availability)")
	f.BoolVar(&u.keepOnExit, "unit-keep-on-exit", false, "leave units running when the agent stops (systemd driver; process-driver units always end with the agent)")
	f.StringVar(&u.logDir, "unit-log-dir", "", "process driver: directory for each unit's output, <unit>.log (default <data-dir>/units)")
	f.StringVar(&u.systemdDir, "unit-systemd-dir", fleet.DefaultSystemdUnitDir, "systemd driver: where unit files are written")
	f.DurationVar(&u.drainTimeout, "unit-drain-timeout", agent.DefaultDrainTimeout, "before a coordinated reboot, wait at most this long for MoveBeforeReboot units to move elsewhere")
}

// parseMetadata turns "k=v" words into a map; keys must be unique.
func parseMetadata(words []string) (map[string]string, error) {
	md := map[string]string{}
	for _, w := range words {
		k, v, ok := strings.Cut(strings.TrimSpace(w), "=")
		if !ok || k == "" {
			return nil, usagef("--machine-metadata %q: want key=value", w)
		}
		if _, dup := md[k]; dup {
			return nil, usagef("--machine-metadata: key %q given twice", k)
		}
		md[k] = v
	}
	return md, nil
}

// unitAgent builds the unit agent the flags ask for (nil without
// --units) and wraps the reboot coordinators so that a coordinated reboot
// moves MoveBeforeReboot units away first. It uses the etcd client the
// coordinators opened.
func (o *agentOpts) unitAgent(logger *slog.Logger, reg prometheus.Registerer) (*fleet.UnitAgent, error) {
	u := &o.units
	if !u.enabled {
		return nil, nil
	}
	if o.etcdCli == nil {
		return nil, usagef("--units needs --etcd-endpoints (the etcd cluster of the servers)")
	}
	md, err := parseMetadata(u.metadata)
	if err != nil {
		return nil, err
	}
	if u.grace < time.Second {
		return nil, usagef("--unit-grace %s: want at least 1s", u.grace)
	}
	if u.presenceTTL < time.Second || u.presenceTTL%time.Second != 0 {
		return nil, usagef("--unit-presence-ttl %s: want whole seconds, at least 1s", u.presenceTTL)
	}
	var drv fleet.Driver
	switch u.driver {
	case "process":
		dir := u.logDir
		if dir == "" {
			dir = filepath.Join(o.cfg.DataDir, "units")
		}
		if err := mkdirAll(dir); err != nil {
			return nil, err
		}
		drv = fleet.NewProcessDriver(fleet.ProcessConfig{LogDir: dir, Env: []string{"FLOTILLA_MACHINE_ID=" + o.cfg.MachineID}},
			logger.With("component", "units"))
	case "systemd":
		drv = fleet.NewSystemdDriver(u.systemdDir)
	default:
		return nil, usagef("--unit-driver %q: want systemd or process", u.driver)
	}
	cfg := fleet.DefaultAgentConfig()
	cfg.Machine = fleet.Machine{ID: o.cfg.MachineID, Address: u.publicIP, Metadata: md, Version: o.cfg.OSVersion}
	cfg.Grace, cfg.PresenceTTL = u.grace, u.presenceTTL
	cfg.StopOnIsolation, cfg.KeepUnitsOnExit = u.stopOnIsolation, u.keepOnExit
	ua, err := fleet.NewUnitAgent(o.etcdCli, cfg, drv, logger.With("component", "units"), reg)
	if err != nil {
		return nil, err
	}
	for strategy, c := range o.cfg.Coordinators {
		o.cfg.Coordinators[strategy] = &agent.DrainCoordinator{Coordinator: c, Drainer: ua, Timeout: u.drainTimeout,
			Log: logger.With("component", "units")}
	}
	return ua, nil
}

func mkdirAll(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("unit log dir: %w", err)
	}
	return nil
}
