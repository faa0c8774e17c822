// Command flotilla is the single binary of flotilla: the update server, the
// machine agent, the developer cluster and the operator commands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	// Update windows are evaluated in IANA time zones; embedding the
	// database keeps them right on hosts without /usr/share/zoneinfo.
	_ "time/tzdata"

	"github.com/flotilla/flotilla/internal/cli"
)

func main() {
	// The first signal cancels the context (graceful shutdown); once stop()
	// runs, a second signal gets Go's default behaviour and kills the process.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, stop)
	stop()
	os.Exit(code)
}
