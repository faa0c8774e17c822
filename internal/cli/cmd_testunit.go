package cli

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
)

// newTestUnitCmd is a test helper, hidden from help: a unit's main
// process for images that hold nothing but the flotilla binary (a FROM
// scratch container has no /bin/sh or sleep). It prints
// "start NAME MACHINE PID TIME" and runs until SIGTERM or SIGINT, then
// prints "stop …" the same way and exits 0, so the unit's log (the
// process driver's <unit>.log) records where it ran when.
func newTestUnitCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:    "testunit NAME",
		Short:  "Test helper: log start/stop lines and run until terminated",
		Hidden: true,
		Args:   exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			line := func(what string) {
				now := time.Now()
				fmt.Fprintf(g.stdout, "%s %s %s %d %d.%09d\n", what, args[0], orDash(os.Getenv("FLOTILLA_MACHINE_ID")),
					os.Getpid(), now.Unix(), now.Nanosecond())
			}
			line("start")
			<-cmd.Context().Done()
			line("stop")
			return nil
		},
	}
}
