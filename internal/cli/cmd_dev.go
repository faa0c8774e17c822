package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/flotilla/flotilla/internal/devcluster"
)

type devOpts struct {
	o       devcluster.Options
	keep    bool
	logPath string
}

func newDevCmd(g *globals) *cobra.Command {
	d := &devOpts{o: devcluster.Defaults()}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a server and simulated machines, and watch a rollout (a demo in one command)",
		Long: `Run a whole cluster in one process and roll out an update, in about a minute.

flotilla dev starts a flotilla server on embedded defaults (SQLite and an
embedded etcd member) and --machines simulated machines. Each machine runs
the real agent with its own disk image file (USR-A/USR-B slots), data dir and
machine id; a reboot is simulated (the bootloader's slot selection runs on
its disk, the agent starts again with a new boot id).

It then builds and signs a payload for --to (1.0.1), publishes it and rolls
it out to the machines on --from (1.0.0): a percentage ramp over --ramp, at
most --max-reboots machines rebooting at once (FleetLock over etcd), and an
automatic pause after the first failure. With --fail M, M machines fail their
health gate on the new version: they roll back, and the group pauses itself.

The dashboard URL and token are printed first, then one line per event and
the fleet's progress, then a summary. Without --exit-when-done the cluster
keeps running after the outcome, for the dashboard, until Ctrl-C.

The data live in a temporary directory that is removed at exit, unless
--data-dir is given (or --keep).`,
		Example: `  flotilla dev
  flotilla dev --machines 50 --max-reboots 5
  flotilla dev --fail 1 --exit-when-done`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDev(cmd, g, d)
		},
	}
	f := cmd.Flags()
	f.IntVar(&d.o.Machines, "machines", d.o.Machines, "number of simulated machines")
	f.IntVar(&d.o.MaxReboots, "max-reboots", d.o.MaxReboots, "machines that may reboot at once")
	f.IntVar(&d.o.Fail, "fail", 0, "machines whose new version fails its health gate (they roll back, the group pauses)")
	f.StringVar(&d.o.Listen, "listen", d.o.Listen, "address of the server (dashboard, API, Omaha); :0 picks a free port")
	f.BoolVar(&d.o.ExitWhenDone, "exit-when-done", false, "exit once the rollout completed (0) or the expected pause happened (0); otherwise non-zero")
	f.DurationVar(&d.o.Timeout, "timeout", d.o.Timeout, "with --exit-when-done: give up after this long")
	f.StringVar(&d.o.FromVersion, "from", d.o.FromVersion, "version the machines run")
	f.StringVar(&d.o.ToVersion, "to", d.o.ToVersion, "version rolled out")
	f.DurationVar(&d.o.Ramp, "ramp", d.o.Ramp, "time for the rollout to ramp from 10% of the machines to all")
	f.DurationVar(&d.o.CheckInterval, "check-interval", d.o.CheckInterval, "agents' update-check interval")
	f.BoolVar(&d.keep, "keep", false, "keep the temporary data directory")
	f.StringVar(&d.logPath, "log", "", "file for the server's and agents' logs (default <data-dir>/flotilla-dev.log)")
	return cmd
}

func runDev(cmd *cobra.Command, g *globals, d *devOpts) error {
	o := d.o
	temp := !cmd.Flags().Changed("data-dir") && os.Getenv("FLOTILLA_DATA_DIR") == ""
	if temp {
		dir, err := os.MkdirTemp("", "flotilla-dev-")
		if err != nil {
			return fmt.Errorf("dev: %w", err)
		}
		o.DataDir = dir
		if !d.keep {
			defer os.RemoveAll(dir)
		}
	} else {
		o.DataDir = g.dataDir
		if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
			return fmt.Errorf("dev: %w", err)
		}
	}
	if err := o.Validate(); err != nil {
		return usageError{err}
	}
	logPath := d.logPath
	if logPath == "" {
		logPath = filepath.Join(o.DataDir, "flotilla-dev.log")
	}
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	defer logFile.Close()
	o.Out, o.Log = g.stdout, logFile
	fmt.Fprintf(g.stdout, "logs: %s\n", logPath)

	start := time.Now()
	res, err := devcluster.Run(cmd.Context(), o)
	if g.stopSignals != nil {
		g.stopSignals()
	}
	if err != nil {
		return err
	}
	if temp && d.keep {
		fmt.Fprintf(g.stdout, "data kept in %s\n", o.DataDir)
	}
	if !o.ExitWhenDone {
		return nil
	}
	want := devcluster.OutcomeComplete
	if o.Fail > 0 {
		want = devcluster.OutcomePaused
	}
	if res.Outcome != want {
		return fmt.Errorf("dev: the rollout ended %q after %s, expected %q", res.Outcome, time.Since(start).Round(time.Second), want)
	}
	return nil
}
