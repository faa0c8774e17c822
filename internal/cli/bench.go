package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/flotilla/flotilla/internal/bench"
	"github.com/flotilla/flotilla/internal/obs"
)

// rolloutDefaultDuration bounds a rollout run when --duration is not given:
// a rollout ends when every machine is updated, the bound only stops a run
// whose group holds machines back.
const rolloutDefaultDuration = 5 * time.Minute

type benchOmahaOpts struct {
	cfg        bench.OmahaConfig
	mode       string
	cpuProfile string
	logLevel   string
}

func newBenchCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load-test flotilla",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newBenchOmahaCmd(g), newBenchFleetLockCmd(g))
	return cmd
}

func newBenchOmahaCmd(g *globals) *cobra.Command {
	o := &benchOmahaOpts{cfg: bench.DefaultOmahaConfig()}
	cmd := &cobra.Command{
		Use:   "omaha",
		Short: "Simulate update_engine machines against an Omaha endpoint and measure it",
		Long: `Simulate a fleet of update_engine machines (like updateservicectl's
"instance fake") and measure the Omaha endpoint: throughput, latency
percentiles and errors.

Without --server an in-process flotilla server is started on 127.0.0.1 in a
temporary directory (removed afterwards) and --instances machines are
registered in its store before the run. With --server the load goes to that
Omaha endpoint (flotilla or Nebraska) and nothing is set up.

Modes:
  check    update checks (ping + updatecheck + event 3.2) for random machines,
           one phase per --concurrency value, each bounded by --duration or
           --requests. --reference also measures a trivial net/http handler
           with the same client, so the result can be read as a ratio.
  rollout  every machine updates from --from-version to --to-version:
           check, events 13.1, 14.1, 3.1, reboot, check on the new version.
           Reports the time to complete and the group's final status.

The load generator runs in this process, on the same CPUs as an in-process
server.`,
		Example: `  flotilla bench omaha --concurrency 16,64 --reference
  flotilla bench omaha --machines 100000 --duration 20s -o markdown
  flotilla bench omaha --mode rollout --machines 1000 --concurrency 32
  flotilla bench omaha --server http://nebraska.local:8000 --machines 500 --concurrency 8`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBenchOmaha(cmd, g, o)
		},
	}
	f := cmd.Flags()
	// --server shadows the global flag of the same name: here it is an
	// Omaha endpoint, and empty means "start one in-process".
	f.StringVar(&o.cfg.ServerURL, "server", "", "Omaha endpoint of a running server, or several comma-separated replicas' taken round-robin (default: start an in-process flotilla)")
	f.StringVar(&o.cfg.Database, "database", "", "in-process server's store: a PostgreSQL URL of an empty database (default: SQLite in a temporary directory)")
	f.IntVar(&o.cfg.Replicas, "replicas", 1, "in-process servers sharing --database (PostgreSQL) and one etcd, taken round-robin")
	f.StringVar(&o.cfg.AppID, "app", o.cfg.AppID, "application id the machines send")
	f.StringVar(&o.cfg.Track, "track", o.cfg.Track, "track (GROUP=) the machines send")
	f.IntVar(&o.cfg.Machines, "machines", o.cfg.Machines, "number of simulated machines")
	f.IntVar(&o.cfg.Instances, "instances", 0, "instances registered in the in-process server before the run (default: --machines)")
	f.IntSliceVar(&o.cfg.Concurrency, "concurrency", o.cfg.Concurrency, "concurrent requests; a list measures each in turn (check mode)")
	f.DurationVar(&o.cfg.Duration, "duration", o.cfg.Duration, "length of each check phase (rollout: upper bound, default 5m)")
	f.IntVar(&o.cfg.Requests, "requests", 0, "requests per check phase (or for the rollout) instead of a duration")
	f.StringVar(&o.mode, "mode", string(o.cfg.Mode), "check or rollout")
	f.StringVar(&o.cfg.FromVersion, "from-version", o.cfg.FromVersion, "version the machines run")
	f.StringVar(&o.cfg.ToVersion, "to-version", o.cfg.ToVersion, "version rolled out (rollout mode)")
	f.BoolVar(&o.cfg.Reference, "reference", false, "also measure a trivial net/http handler on loopback and print the ratio")
	f.DurationVar(&o.cfg.LastSeenAge, "last-seen-age", 0, "back-date registered instances' last check, so each machine's first check writes (e.g. 45m)")
	f.StringVar(&o.cfg.SQLiteSync, "sqlite-sync", o.cfg.SQLiteSync, "in-process server's SQLite synchronous mode: FULL or NORMAL")
	f.DurationVar(&o.cfg.Timeout, "timeout", o.cfg.Timeout, "timeout of one request")
	f.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the measured phases to `FILE` (server and load generator together)")
	f.StringVar(&o.logLevel, "log-level", "warn", "in-process server log level: debug, info, warn or error")
	return cmd
}

func runBenchOmaha(cmd *cobra.Command, g *globals, o *benchOmahaOpts) error {
	switch g.output {
	case bench.FormatTable, bench.FormatJSON, bench.FormatMarkdown:
	default:
		return usagef("unknown output format %q (-o): use table, json or markdown", g.output)
	}
	o.cfg.Mode = bench.Mode(o.mode)
	if o.cfg.Mode == bench.ModeRollout && !cmd.Flags().Changed("duration") {
		o.cfg.Duration = rolloutDefaultDuration
	}
	if cmd.Flags().Changed("requests") && !cmd.Flags().Changed("duration") {
		o.cfg.Duration = 0 // the request count alone bounds the run
	}
	o.cfg.SQLiteSync = strings.ToUpper(o.cfg.SQLiteSync)
	logger, err := obs.NewLogger(g.stderr, "text", o.logLevel)
	if err != nil {
		return usageError{err}
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return fmt.Errorf("create cpu profile: %w", err)
		}
		o.cfg.CPUProfile = f
	}
	res, err := bench.RunOmaha(cmd.Context(), o.cfg, logger, g.stderr)
	if f, ok := o.cfg.CPUProfile.(*os.File); ok {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("write cpu profile: %w", cerr)
		}
	}
	if err != nil {
		if errors.Is(err, bench.ErrInvalidConfig) {
			return usageError{err}
		}
		return err
	}
	if err := res.Write(g.stdout, g.output); err != nil {
		return err
	}
	if n := res.Failed(); n > 0 {
		return fmt.Errorf("%d requests failed (see the warnings above)", n)
	}
	return nil
}

func newBenchFleetLockCmd(g *globals) *cobra.Command {
	cfg := bench.DefaultFleetLockConfig()
	var url, logLevel string
	cmd := &cobra.Command{
		Use:   "fleetlock",
		Short: "Contend for reboot slots over FleetLock HTTP and measure cycles/s, waits and failures",
		Long: `Simulate --machines machines contending for --slots reboot slots of one
group over FleetLock: each asks (pre-reboot) until granted, holds the slot for
--hold, gives it back (steady-state), and starts over, for --duration. Reported:
cycles/s beside the physical limit (slots / hold), the longest wait for a
slot, cycles per machine (fairness), failed requests by kind (a full group is
expected and not a failure), and the uncontended lock+unlock latency.

Without --server an in-process flotilla server with embedded etcd is started
and the group's max is set. With --server, set it first
(flotilla lock set-max N --group G).`,
		Example: `  flotilla bench fleetlock
  flotilla bench fleetlock --server http://flotilla:8080/fleetlock --group bench --slots 3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := obs.NewLogger(g.stderr, "text", logLevel)
			if err != nil {
				return usageError{err}
			}
			if cfg.Machines < 1 || cfg.Slots < 1 || cfg.Hold <= 0 || cfg.Duration <= 0 {
				return usagef("--machines, --slots, --hold and --duration must be positive")
			}
			var res bench.FleetLockResult
			if url != "" {
				cfg.BaseURL = url
				res, err = bench.RunFleetLock(cmd.Context(), cfg)
			} else {
				res, err = bench.RunFleetLockInProcess(cmd.Context(), cfg, logger)
			}
			if err != nil {
				return err
			}
			if g.jsonOutput() {
				return printJSON(g.stdout, res)
			}
			fmt.Fprint(g.stdout, res.Summary())
			var failed int64
			for _, n := range res.Failed {
				failed += n
			}
			if failed > 0 {
				return fmt.Errorf("%d requests failed", failed)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&url, "server", "", "FleetLock base URL of a running server (default: start an in-process flotilla)")
	f.StringVar(&cfg.Group, "group", cfg.Group, "reboot group")
	f.IntVar(&cfg.Machines, "machines", cfg.Machines, "contending machines")
	f.IntVar(&cfg.Slots, "slots", cfg.Slots, "slots of the group (in-process: set as its max)")
	f.DurationVar(&cfg.Hold, "hold", cfg.Hold, "how long a machine holds a granted slot")
	f.DurationVar(&cfg.Duration, "duration", cfg.Duration, "length of the contended run")
	f.DurationVar(&cfg.Retry, "retry", cfg.Retry, "wait after a full answer before asking again")
	f.IntVar(&cfg.Uncontended, "uncontended", cfg.Uncontended, "lock+unlock cycles measured alone first")
	f.StringVar(&logLevel, "log-level", "warn", "in-process server log level")
	return cmd
}
