package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/flotilla/flotilla/internal/agent"
	"github.com/flotilla/flotilla/internal/etcdserver"
	"github.com/flotilla/flotilla/internal/fleetlock"
	"github.com/flotilla/flotilla/internal/obs"
	"github.com/flotilla/flotilla/internal/rebootlock"
)

const defaultAgentSocket = "/run/flotilla/agent.sock"

type agentOpts struct {
	cfg           agent.Config
	etcdEndpoints []string
	etcdCA        string
	etcdCert      string
	etcdKey       string
	etcdMember    string
	fleetlockURL  string
	rebootGroup   string
	lockInterval  time.Duration
	socket        string
	machineIDFile string
	osRelease     string
	rebootCommand string
	logFormat     string
	logLevel      string
	overrides     map[string]*string
	units         unitAgentOpts
	etcdCli       *clientv3.Client // opened by coordinators for --etcd-endpoints
}

func newAgentCmd(g *globals) *cobra.Command {
	o := &agentOpts{cfg: agent.DefaultConfig(), overrides: map[string]*string{}}
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node update agent (A/B /usr updates, health gate, rollback)",
		Long: `Run the update agent on a machine: the successor of update_engine.

It asks the Omaha server in update.conf (SERVER=, GROUP=) for new releases,
downloads the signed payload to <data-dir>/staging, verifies it against the
trusted keys (no key, no install), writes it into the inactive USR-A/USR-B
slot of --disk, and commits with one GPT write. After the reboot it marks
the new slot good once the health gate passes; if the machine came back on
the old slot it reports a rollback (3/0/44) and does not install that
version again until 'flotilla agent unblock VERSION'.

update.conf keys (CoreOS names): SERVER, GROUP, REBOOT_STRATEGY (reboot|off;
etcd-lock|fleetlock with a coordinator), LOCKSMITHD_REBOOT_WINDOW_START and
_LENGTH, MACHINE_ALIAS. SERVER=disabled turns update checks off.

The agent's data dir is --data-dir when given, else /var/lib/flotilla/agent.
For simulations (tests, dev mode) pass --machine-id, --boot-id,
--booted-partuuid and --os-version; with --boot-id given, uptime counts
from the agent's start.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("data-dir") {
				o.cfg.DataDir = g.dataDir
			}
			return runAgent(cmd, g, o)
		},
	}
	f := cmd.Flags()
	cmd.PersistentFlags().StringVar(&o.socket, "socket", defaultAgentSocket, "unix socket of the agent's local API")
	f.StringSliceVar(&o.cfg.UpdateConfPaths, "update-conf", o.cfg.UpdateConfPaths, "update.conf files, first hit per key wins")
	for _, kv := range []struct{ flag, key, help string }{
		{"update-server", agent.KeyServer, "Omaha server URL (overrides SERVER=; \"disabled\" turns checks off)"},
		{"group", agent.KeyGroup, "channel or group (overrides GROUP=)"},
		{"reboot-strategy", agent.KeyRebootStrategy, "reboot, off, etcd-lock or fleetlock (overrides REBOOT_STRATEGY=)"},
		{"reboot-window-start", agent.KeyRebootWindowStart, `reboot window start, e.g. "Thu 23:00" or "04:00"`},
		{"reboot-window-length", agent.KeyRebootWindowLen, "reboot window length, e.g. 1h30m"},
		{"reboot-windows", agent.KeyRebootWindows, `more reboot windows, "START LENGTH; …", e.g. "Thu 23:00 1h30m; Sat 02:00 4h" (overrides REBOOT_WINDOWS=)`},
		{"reboot-timezone", agent.KeyRebootTimezone, "IANA time zone of the reboot windows (default: local time)"},
		{"machine-alias", agent.KeyMachineAlias, "machine alias shown by the server (overrides MACHINE_ALIAS=)"},
	} {
		v := new(string)
		o.overrides[kv.key] = v
		f.StringVar(v, kv.flag, "", kv.help)
	}
	f.StringVar(&o.cfg.AppID, "app-id", o.cfg.AppID, "Omaha application id (default: Flatcar's, so any Flatcar-ready server works)")
	f.StringVar(&o.cfg.Board, "board", o.cfg.Board, "board sent to the server")
	f.StringVar(&o.machineIDFile, "machine-id-file", "/etc/machine-id", "file holding the machine id")
	f.StringVar(&o.cfg.MachineID, "machine-id", "", "machine id (default: read from --machine-id-file)")
	f.StringVar(&o.cfg.BootID, "boot-id", "", "boot id (default: the kernel's)")
	f.StringVar(&o.cfg.BootedPartUUID, "booted-partuuid", "", "unique GUID of the booted /usr partition (default: from /proc/cmdline)")
	f.StringVar(&o.cfg.OSVersion, "os-version", "", "running OS version when the booted slot was not written by this agent (default: VERSION_ID of --os-release)")
	f.StringVar(&o.osRelease, "os-release", "/usr/lib/os-release", "os-release file of the booted /usr")
	f.StringVar(&o.cfg.Disk, "disk", "", "disk (block device or image file) with USR-A/USR-B (default: the disk of the booted partition)")
	f.StringSliceVar(&o.cfg.PayloadKeyPaths, "payload-keys", o.cfg.PayloadKeyPaths, "trusted payload public keys: PEM files or directories")
	f.DurationVar(&o.cfg.InitialDelay, "initial-delay", o.cfg.InitialDelay, "delay before the first check")
	f.DurationVar(&o.cfg.CheckInterval, "check-interval", o.cfg.CheckInterval, "interval between checks (±1/9 jitter; doubles per failure up to 4h)")
	f.StringVar(&o.cfg.ConfigRoot, "config-root", "", "apply the group's managed machine config to this root and report drift (\"/\" on a real host; default: off)")
	f.DurationVar(&o.cfg.ConfigInterval, "config-interval", 0, "interval between managed-config rounds (default: --check-interval)")
	f.DurationVar(&o.cfg.Health.MinUptime, "health-min-uptime", o.cfg.Health.MinUptime, "uptime required before a new slot is marked good")
	f.DurationVar(&o.cfg.Health.Timeout, "health-timeout", o.cfg.Health.Timeout, "uptime after which a boot that is not healthy has failed (an update boot is then rolled back)")
	f.DurationVar(&o.cfg.Health.Interval, "health-interval", o.cfg.Health.Interval, "how often the health gate is evaluated")
	f.StringArrayVar(&o.cfg.Health.Units, "health-unit", nil, "systemd unit that must be active (repeatable)")
	f.StringArrayVar(&o.cfg.Health.Commands, "health-command", nil, "command that must exit 0, run with sh -c (repeatable)")
	f.StringSliceVar(&o.etcdEndpoints, "etcd-endpoints", nil, "etcd endpoints for REBOOT_STRATEGY=etcd-lock (the cluster the servers use)")
	f.StringVar(&o.etcdCA, "etcd-cacert", "", "CA bundle for etcd's TLS (alone: server-only TLS)")
	f.StringVar(&o.etcdCert, "etcd-cert", "", "client certificate for etcd")
	f.StringVar(&o.etcdKey, "etcd-key", "", "client key for etcd")
	f.StringVar(&o.etcdMember, "etcd-member-name", "", "this machine's etcd member name: reboot only while every other member is healthy")
	f.StringVar(&o.fleetlockURL, "fleetlock-url", "", "FleetLock base URL for REBOOT_STRATEGY=fleetlock, e.g. http://flotilla:8080/fleetlock")
	f.StringVar(&o.rebootGroup, "reboot-group", "", "reboot group (default: LOCKSMITHD_GROUP from update.conf, else \"default\")")
	f.DurationVar(&o.lockInterval, "lock-interval", 0, "wait between attempts while the reboot group is full (default 5s etcd-lock, 15s fleetlock)")
	f.StringVar(&o.rebootCommand, "reboot-command", "systemctl reboot", "command that reboots the machine (run with sh -c)")
	f.StringVar(&o.cfg.RebootRequiredFile, "reboot-required-file", o.cfg.RebootRequiredFile, "file created once an update waits for a reboot (\"\" to disable)")
	f.StringVar(&o.cfg.CrashPoint, "crash-point", os.Getenv("FLOTILLA_AGENT_CRASH_POINT"), "testing only: kill the process at this step")
	_ = f.MarkHidden("crash-point")
	f.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	o.units.addFlags(f)

	cmd.AddCommand(newAgentStatusCmd(g, o), newAgentCheckCmd(g, o), newAgentUnblockCmd(g, o))
	return cmd
}

// resolveIdentity fills what the flags left empty from the running system.
func (o *agentOpts) resolveIdentity() error {
	c := &o.cfg
	var err error
	if c.MachineID == "" {
		if c.MachineID, err = agent.ReadMachineID(o.machineIDFile); err != nil {
			return err
		}
	}
	simulated := c.BootID != ""
	if c.BootID == "" {
		if c.BootID, err = agent.ReadBootID(); err != nil {
			return err
		}
	}
	if simulated {
		start := time.Now()
		c.Health.Uptime = func() time.Duration { return time.Since(start) }
	}
	if c.BootedPartUUID == "" {
		if b, err := os.ReadFile("/proc/cmdline"); err == nil {
			c.BootedPartUUID = agent.BootedPartUUIDFromCmdline(string(b))
		}
	}
	if c.OSVersion == "" {
		kv, err := agent.ReadKeyValueFile(o.osRelease)
		if err != nil {
			return fmt.Errorf("read %s: %w", o.osRelease, err)
		}
		c.OSVersion = kv["VERSION_ID"]
		if c.OSVersion == "" {
			return fmt.Errorf("cannot tell the running OS version: no VERSION_ID in %s; pass --os-version", o.osRelease)
		}
	}
	for _, p := range []string{"/etc/oem-release", "/usr/share/oem/oem-release"} {
		if kv, err := agent.ReadKeyValueFile(p); err == nil && kv["ID"] != "" {
			c.OEM, c.OEMVersion = kv["ID"], kv["VERSION_ID"]
			break
		}
	}
	if c.Disk == "" && c.BootedPartUUID != "" {
		if d, err := agent.DiskOfPartUUID(c.BootedPartUUID); err == nil {
			c.Disk = d
		}
	}
	return nil
}

func runAgent(cmd *cobra.Command, g *globals, o *agentOpts) error {
	logger, err := obs.NewLogger(g.stderr, o.logFormat, o.logLevel)
	if err != nil {
		return usageError{err}
	}
	if !agent.ValidCrashPoint(o.cfg.CrashPoint) {
		return usagef("unknown crash point %q", o.cfg.CrashPoint)
	}
	o.cfg.Overrides = map[string]string{}
	for k, v := range o.overrides {
		o.cfg.Overrides[k] = *v
	}
	if err := o.resolveIdentity(); err != nil {
		return err
	}
	if len(o.cfg.Health.Units) > 0 {
		sc := &agent.SystemdChecker{}
		defer sc.Close()
		o.cfg.Health.Checker = sc
	}
	if strings.TrimSpace(o.rebootCommand) != "" {
		o.cfg.Rebooter = agent.CommandRebooter{Argv: []string{"sh", "-c", o.rebootCommand}}
	}
	if o.cfg.Disk == "" {
		logger.Warn("no disk with USR-A/USR-B found; updates will fail until --disk is given")
	}
	reg := obs.NewRegistry()
	closeCoord, err := o.coordinators(logger, reg)
	if err != nil {
		return err
	}
	defer closeCoord()
	units, err := o.unitAgent(logger, reg)
	if err != nil {
		return err
	}
	a, err := agent.New(o.cfg, logger, reg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	unitsDone := make(chan struct{})
	if units != nil {
		// The unit agent stops its units and withdraws the machine when
		// ctx ends; closeCoord (deferred above) closes etcd only after.
		go func() { defer close(unitsDone); _ = units.Run(ctx) }()
		defer func() { <-unitsDone }()
	}
	sockErr := make(chan error, 1)
	go func() { sockErr <- agent.ServeSocket(ctx, o.socket, a.Handler(reg), logger) }()
	runErr := a.Run(ctx)
	cancel()
	if err := <-sockErr; err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}

func newAgentStatusCmd(g *globals, o *agentOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the agent's status (update_engine_client -status lines; -o json for everything)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := agent.NewClient(o.socket).Status(cmd.Context())
			if err != nil {
				return err
			}
			if g.jsonOutput() {
				return printJSON(g.stdout, r)
			}
			fmt.Fprint(g.stdout, agent.StatusLines(r))
			return nil
		},
	}
}

func newAgentCheckCmd(g *globals, o *agentOpts) *cobra.Command {
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check for an update now (on demand); with --wait, follow it to the end",
		Long: `Ask the running agent to check for an update now, as
update_engine_client -check_for_update does (installsource=ondemandupdate).
It only starts when the agent is idle. With --wait it then follows the
status until the agent is idle again or waits for its reboot, printing each
change, and fails if the attempt ended with an error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := agent.NewClient(o.socket)
			before, err := c.Status(cmd.Context())
			if err != nil {
				return err
			}
			res, err := c.Check(cmd.Context())
			if err != nil {
				return err
			}
			if !res.Started {
				switch {
				case res.Status == agent.StatusUpdatedNeedReboot:
					fmt.Fprintf(g.stdout, "an update to %s is applied and waits for a reboot\n", before.NewVersion)
					return nil
				case !wait:
					return fmt.Errorf("%s", res.Message)
				}
				// Like update_engine_client -update: follow the attempt
				// already running.
				fmt.Fprintln(g.stdout, "an update attempt is already running; following it")
			} else {
				fmt.Fprintln(g.stdout, "update check started")
			}
			if !wait {
				return nil
			}
			return waitForAgent(cmd.Context(), g, c, before, timeout)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the attempt until it ends")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Hour, "give up waiting after this long")
	return cmd
}

// waitForAgent polls until the attempt started after before has ended.
func waitForAgent(ctx context.Context, g *globals, c *agent.Client, before agent.StatusReport, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	sawWork := false
	for {
		r, err := c.Status(ctx)
		if err != nil {
			return err
		}
		line := r.CurrentOperation
		if r.CurrentOperation == agent.StatusDownloading || r.CurrentOperation == agent.StatusFinalizing || r.CurrentOperation == agent.StatusVerifying {
			line = fmt.Sprintf("%s %3.0f%%", r.CurrentOperation, r.Progress*100)
		}
		if line != last {
			fmt.Fprintln(g.stdout, line)
			last = line
		}
		if r.CurrentOperation != agent.StatusIdle {
			sawWork = true
		}
		done := r.LastCheckedTime != before.LastCheckedTime || sawWork
		switch {
		case r.CurrentOperation == agent.StatusUpdatedNeedReboot:
			fmt.Fprintf(g.stdout, "update to %s applied; reboot required\n", r.NewVersion)
			return nil
		case r.CurrentOperation == agent.StatusIdle && done:
			if r.LastError != nil && (before.LastError == nil || !r.LastError.At.Equal(before.LastError.At)) {
				return fmt.Errorf("update failed: %s (%d): %s", r.LastError.Name, r.LastError.Code, r.LastError.Message)
			}
			fmt.Fprintf(g.stdout, "no update applied; running %s\n", r.CurrentVersion)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the agent: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

func newAgentUnblockCmd(g *globals, o *agentOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "unblock VERSION",
		Short: "Allow a version this machine rolled back from to be installed again",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("want exactly one VERSION")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c := agent.NewClient(o.socket)
			if err := c.Unblock(cmd.Context(), args[0]); err != nil {
				return err
			}
			r, err := c.Status(cmd.Context())
			if err != nil {
				return err
			}
			blocked := append([]string(nil), r.BlockedVersions...)
			sort.Strings(blocked)
			fmt.Fprintf(g.stdout, "version %s unblocked; still blocked: %s\n", args[0], orNone(strings.Join(blocked, ", ")))
			return nil
		},
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// coordinators builds the reboot coordinators the flags ask for: etcd-lock
// with --etcd-endpoints, fleetlock with --fleetlock-url.
func (o *agentOpts) coordinators(logger *slog.Logger, reg prometheus.Registerer) (func(), error) {
	o.cfg.Coordinators = map[string]agent.Coordinator{}
	closeAll := func() {}
	group := o.rebootGroup
	if group == "" {
		if c, err := agent.ReadUpdateConf(o.cfg.UpdateConfPaths); err == nil {
			group = c.Get(agent.KeyRebootGroup)
		}
	}
	if group == "" {
		group = rebootlock.DefaultGroup
	}
	if err := rebootlock.ValidateGroup(group); err != nil {
		return closeAll, usageError{err}
	}
	if o.fleetlockURL != "" {
		o.cfg.Coordinators[agent.StrategyFleet] = &agent.FleetLockCoordinator{
			Client: &fleetlock.Client{BaseURL: o.fleetlockURL, HTTP: &http.Client{Timeout: time.Minute}},
			Group:  group, ID: o.cfg.MachineID, Interval: o.lockInterval, Log: logger.With("component", "fleetlock"),
		}
	}
	if len(o.etcdEndpoints) > 0 {
		tlsCfg, err := etcdserver.ClientTLS(o.etcdCA, o.etcdCert, o.etcdKey)
		if err != nil {
			return closeAll, err
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: o.etcdEndpoints, DialTimeout: 10 * time.Second, TLS: tlsCfg, Logger: zap.NewNop()})
		if err != nil {
			return closeAll, fmt.Errorf("etcd client: %w", err)
		}
		closeAll = func() { cli.Close() }
		o.etcdCli = cli
		locks, err := rebootlock.New(cli, rebootlock.Config{}, logger, reg)
		if err != nil {
			return closeAll, err
		}
		o.cfg.Coordinators[agent.StrategyEtcdLock] = &agent.EtcdCoordinator{
			Locks: locks, Group: group, ID: o.cfg.MachineID, BootID: o.cfg.BootID, Interval: o.lockInterval,
			EtcdMember: o.etcdMember, Etcd: cli, Log: logger.With("component", "etcd-lock"),
		}
	}
	return closeAll, nil
}
