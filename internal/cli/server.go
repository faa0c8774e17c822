package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/flotilla/flotilla/internal/obs"
	"github.com/flotilla/flotilla/internal/server"
)

type serverOpts struct {
	cfg       server.Config
	logFormat string
	logLevel  string
}

func newServerCmd(g *globals) *cobra.Command {
	o := &serverOpts{cfg: server.DefaultConfig()}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the flotilla server (Omaha update service, REST API, metrics)",
		Long: `Run the flotilla server. With no flags it keeps everything under
./flotilla-data (SQLite database, admin token) and listens on 127.0.0.1:8080.

On the first start it creates an admin API token, writes it to
<data-dir>/admin.token (mode 0600) and prints it once. Client commands run
from the same directory find it there.

Endpoints: POST /v1/update/ (Omaha, update_engine dialect), /api/v1/ (REST),
/metrics (Prometheus), /healthz, /readyz.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.cfg.DataDir = g.dataDir
			return runServer(cmd, g, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.cfg.Listen, "listen", o.cfg.Listen, "address to serve HTTP on")
	f.StringVar(&o.cfg.SQLiteSync, "sqlite-sync", o.cfg.SQLiteSync, "SQLite synchronous mode: FULL (durable against power loss) or NORMAL (durable against crashes, faster)")
	f.BoolVar(&o.cfg.TrustForwardedFor, "trust-forwarded-for", false, "take machine IPs from X-Forwarded-For (only behind a proxy you control)")
	f.DurationVar(&o.cfg.Update.Retention, "retention", o.cfg.Update.Retention, "how long status history, events and activity are kept")
	f.DurationVar(&o.cfg.Update.LastSeenResolution, "last-seen-resolution", o.cfg.Update.LastSeenResolution, "an unchanged machine's last-seen time is written at most this often")
	f.StringVar(&o.cfg.PayloadDir, "payload-dir", "", "serve the update payloads in this directory at /payloads/ (Range requests supported)")
	f.BoolVar(&o.cfg.ResetAdminToken, "reset-admin-token", false, "create a new admin token, write it to <data-dir>/admin.token and print it (old tokens stay valid until deleted)")
	f.DurationVar(&o.cfg.ShutdownTimeout, "shutdown-timeout", o.cfg.ShutdownTimeout, "how long in-flight requests may take to finish on shutdown")
	f.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

func runServer(cmd *cobra.Command, g *globals, o *serverOpts) error {
	logger, err := obs.NewLogger(g.stderr, o.logFormat, o.logLevel)
	if err != nil {
		return usageError{err}
	}
	switch strings.ToUpper(o.cfg.SQLiteSync) {
	case "FULL", "NORMAL":
		o.cfg.SQLiteSync = strings.ToUpper(o.cfg.SQLiteSync)
	default:
		return usagef("--sqlite-sync %q: want FULL or NORMAL", o.cfg.SQLiteSync)
	}
	if o.cfg.Update.Retention < time.Hour {
		return usagef("--retention %s: want at least 1h", o.cfg.Update.Retention)
	}
	ctx := cmd.Context()
	srv, err := server.New(ctx, o.cfg, logger)
	if err != nil {
		return err
	}
	if srv.AdminToken != "" {
		fmt.Fprintf(g.stdout, "Created admin API token (saved to %s/admin.token; shown only once):\n\n    %s\n\n", o.cfg.DataDir, srv.AdminToken)
	}
	logger.Info("flotilla server listening", "addr", "http://"+srv.Addr(), "data_dir", o.cfg.DataDir)
	err = srv.Run(ctx)
	if g.stopSignals != nil {
		g.stopSignals()
	}
	if err != nil {
		return err
	}
	logger.Info("flotilla server stopped")
	return nil
}
