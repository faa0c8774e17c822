// Package cli builds flotilla's cobra command tree. Commands are built by
// constructors (no package-level command or flag state) so tests can run
// the whole CLI in-process through Run.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

// globals are the flags every command shares.
type globals struct {
	server  string
	token   string
	output  string
	dataDir string

	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	// stopSignals, when set, restores default signal handling so that a
	// second Ctrl-C kills a server that hangs in shutdown.
	stopSignals func()
}

// usageError marks errors caused by how the command was called; Run prints
// a hint to use --help for them.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// Run executes the flotilla command line in args and returns the process
// exit code: 0 success, 1 failure, 2 usage error.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, stopSignals func()) int {
	g := &globals{stdin: stdin, stdout: stdout, stderr: stderr, stopSignals: stopSignals}
	root := newRootCmd(g)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "Error: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(stderr, "Run 'flotilla --help' for usage.")
		return 2
	}
	return 1
}

func newRootCmd(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "flotilla",
		Short: "Self-updating container hosts with operator-controlled rollouts",
		Long: `flotilla runs an update service that container hosts (update_engine, Flatcar,
flotilla agents) ask for new OS releases, and lets the operator decide when
machines update and how fast a release rolls across the fleet.

Start a server with embedded defaults:   flotilla server
Then talk to it:                          flotilla group status --app APPID`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Without this, cobra reports an unknown top-level command as a
		// plain error (exit 1); it is a usage error.
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q for \"flotilla\"", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.server, "server", envOr("FLOTILLA_SERVER", "http://127.0.0.1:8080"), "flotilla server URL (env FLOTILLA_SERVER)")
	pf.StringVar(&g.token, "token", "", "API token (default: $FLOTILLA_TOKEN, else <data-dir>/admin.token)")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	pf.StringVar(&g.dataDir, "data-dir", envOr("FLOTILLA_DATA_DIR", "./flotilla-data"), "data directory of the local server (env FLOTILLA_DATA_DIR)")

	root.AddCommand(newServerCmd(g), newDevCmd(g))
	root.AddCommand(newBenchCmd(g))
	root.AddCommand(newAgentCmd(g))
	root.AddCommand(newDiskCmd(g), newBootCmd(g), newPayloadCmd(g), newConfigCmd(g))
	root.AddCommand(newUnitCmd(g), newMachineCmd(g), newTestUnitCmd(g))
	for _, c := range clientCommands(g) {
		root.AddCommand(c)
	}
	return root
}

// resolveToken picks the API token: --token, then $FLOTILLA_TOKEN, then the
// admin token file a local server wrote into its data directory.
func (g *globals) resolveToken() (string, error) {
	if g.token != "" {
		return g.token, nil
	}
	if t := os.Getenv("FLOTILLA_TOKEN"); t != "" {
		return t, nil
	}
	path := filepath.Join(g.dataDir, "admin.token")
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("no API token: pass --token, set FLOTILLA_TOKEN, or run where the server's data directory is (%s not found)", path)
		}
		return "", fmt.Errorf("read token: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
