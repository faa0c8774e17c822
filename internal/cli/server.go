package cli

import (
	"fmt"
	"os"
	"path/filepath"
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

It also runs an embedded etcd member (data in <data-dir>/etcd, clients on
127.0.0.1:2379, peers on 127.0.0.1:2380) for reboot coordination. Several
servers form one etcd cluster with --etcd-name, --etcd-peer-url and the same
--etcd-initial-cluster; --etcd-endpoints uses an external etcd instead.

--database postgres://USER:PASSWORD@HOST/DB keeps the data in PostgreSQL
instead of SQLite; several servers (replicas) then share that database and
one etcd (--etcd-endpoints, or the cluster their embedded members form)
behind one load balancer. Each still needs its own data dir (docs/operations.md).
The password may come from the environment instead (PGPASSWORD).

Every server also runs the unit scheduler's engine (docs/fleet.md); the
servers elect one leader through etcd, which places units on the machines
whose agents run with --units.

Endpoints: POST /v1/update/ (Omaha, update_engine dialect), /api/v1/ (REST),
/metrics (Prometheus), /healthz, /readyz (store and etcd).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.cfg.DataDir = g.dataDir
			return runServer(cmd, g, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.cfg.Listen, "listen", o.cfg.Listen, "address to serve HTTP on")
	f.StringVar(&o.cfg.Database, "database", "", "store: PostgreSQL URL (postgres://user@host/db?sslmode=…, shared by replicas) or sqlite:///path (default: SQLite in <data-dir>/flotilla.db)")
	f.StringVar(&o.cfg.SQLiteSync, "sqlite-sync", o.cfg.SQLiteSync, "SQLite synchronous mode: FULL (durable against power loss) or NORMAL (durable against crashes, faster)")
	f.BoolVar(&o.cfg.TrustForwardedFor, "trust-forwarded-for", false, "take machine IPs from X-Forwarded-For (only behind a proxy you control)")
	f.DurationVar(&o.cfg.Update.Retention, "retention", o.cfg.Update.Retention, "how long status history, events and activity are kept")
	f.DurationVar(&o.cfg.Update.SampleInterval, "sample-interval", o.cfg.Update.SampleInterval, "how often each group's version breakdown is recorded for the dashboard's chart")
	f.DurationVar(&o.cfg.Update.LastSeenResolution, "last-seen-resolution", o.cfg.Update.LastSeenResolution, "an unchanged machine's last-seen time is written at most this often")
	f.DurationVar(&o.cfg.FleetLockWait, "fleetlock-wait", o.cfg.FleetLockWait, "how long a FleetLock pre-reboot for a full group waits for a slot before answering \"full\" (0: at once)")
	f.DurationVar(&o.cfg.Units.Grace, "unit-grace", o.cfg.Units.Grace, "how long a machine whose unit agent stopped answering is unknown (its units stay) before its units move; agents' --unit-grace must not be longer")
	f.DurationVar(&o.cfg.Units.SessionTTL, "unit-engine-ttl", 10*time.Second, "lease TTL of the unit engine's leadership: how long a crashed leader blocks the other servers' engines (whole seconds)")
	f.StringVar(&o.cfg.PayloadDir, "payload-dir", "", "serve the update payloads in this directory at /payloads/ (Range requests supported)")
	f.BoolVar(&o.cfg.ResetAdminToken, "reset-admin-token", false, "create a new admin token, write it to <data-dir>/admin.token and print it (old tokens stay valid until deleted)")
	f.DurationVar(&o.cfg.ShutdownTimeout, "shutdown-timeout", o.cfg.ShutdownTimeout, "how long in-flight requests may take to finish on shutdown")
	e := &o.cfg.Etcd
	f.StringVar(&e.Name, "etcd-name", e.Name, "name of the embedded etcd member (unique in its cluster)")
	f.StringVar(&e.ClientURL, "etcd-client-url", e.ClientURL, "URL the embedded etcd member serves clients on and advertises (IP address; port 0 picks a free port, single member only)")
	f.StringVar(&e.PeerURL, "etcd-peer-url", e.PeerURL, "URL the embedded etcd member talks to its peers on and advertises (IP address; must match its --etcd-initial-cluster entry)")
	f.StringVar(&e.InitialCluster, "etcd-initial-cluster", "", "members of a new etcd cluster as NAME=PEER-URL,... (default: this member alone); used on the first start only")
	f.StringVar(&e.ClusterState, "etcd-initial-cluster-state", e.ClusterState, "new (bootstrap a new cluster) or existing (join one after 'etcdctl member add')")
	f.StringVar(&e.ClusterToken, "etcd-cluster-token", e.ClusterToken, "token shared by the members of one etcd cluster")
	f.DurationVar(&e.AutoCompactionRetention, "etcd-auto-compaction", e.AutoCompactionRetention, "etcd history kept before periodic compaction (0 turns compaction off)")
	f.DurationVar(&e.StartTimeout, "etcd-start-timeout", e.StartTimeout, "how long to wait for the etcd cluster to form (a quorum of members started)")
	f.StringSliceVar(&e.Endpoints, "etcd-endpoints", nil, "client URLs of an external etcd cluster to use instead of the embedded member (comma-separated)")
	f.StringVar(&e.CAFile, "etcd-cacert", "", "CA certificate to verify the external etcd's server certificate (default: system roots)")
	f.StringVar(&e.CertFile, "etcd-cert", "", "client certificate for the external etcd (with --etcd-key)")
	f.StringVar(&e.KeyFile, "etcd-key", "", "client key for the external etcd (with --etcd-cert)")
	f.StringVar(&e.Username, "etcd-username", "", "user name for an external etcd with authentication")
	f.StringVar(&e.Password, "etcd-password", "", "password for --etcd-username (env FLOTILLA_ETCD_PASSWORD, which keeps it out of the process list)")
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
	if d := o.cfg.Database; d != "" && !server.IsPostgres(d) && (!strings.HasPrefix(d, "sqlite://") || d == "sqlite://") {
		// The value is not echoed: a mistyped URL may carry a password.
		return usagef("--database: want postgres://…, postgresql://… or sqlite:///path")
	}
	if o.cfg.Update.SampleInterval < time.Second {
		return usagef("--sample-interval %s: want at least 1s", o.cfg.Update.SampleInterval)
	}
	if o.cfg.Update.Retention < time.Hour {
		return usagef("--retention %s: want at least 1h", o.cfg.Update.Retention)
	}
	if o.cfg.Units.Grace < time.Second {
		return usagef("--unit-grace %s: want at least 1s", o.cfg.Units.Grace)
	}
	if o.cfg.Units.SessionTTL < time.Second || o.cfg.Units.SessionTTL%time.Second != 0 {
		return usagef("--unit-engine-ttl %s: want whole seconds, at least 1s", o.cfg.Units.SessionTTL)
	}
	if err := checkEtcdFlags(cmd, &o.cfg); err != nil {
		return err
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

// embeddedEtcdFlags configure the embedded member; they mean nothing with
// --etcd-endpoints.
var embeddedEtcdFlags = []string{"etcd-name", "etcd-client-url", "etcd-peer-url", "etcd-initial-cluster",
	"etcd-initial-cluster-state", "etcd-cluster-token", "etcd-auto-compaction", "etcd-start-timeout"}

// externalEtcdFlags configure the client of an external cluster.
var externalEtcdFlags = []string{"etcd-cacert", "etcd-cert", "etcd-key", "etcd-username", "etcd-password"}

// checkEtcdFlags refuses flags for the embedded member together with
// --etcd-endpoints and vice versa, takes the password from the environment
// and validates the rest before anything is started.
func checkEtcdFlags(cmd *cobra.Command, cfg *server.Config) error {
	f := cmd.Flags()
	if cfg.Etcd.Password == "" && cfg.Etcd.Username != "" {
		cfg.Etcd.Password = os.Getenv("FLOTILLA_ETCD_PASSWORD")
	}
	if len(cfg.Etcd.Endpoints) > 0 {
		for _, name := range embeddedEtcdFlags {
			if f.Changed(name) {
				return usagef("--%s configures the embedded etcd member, which --etcd-endpoints replaces: give one or the other", name)
			}
		}
	} else {
		for _, name := range externalEtcdFlags {
			if f.Changed(name) {
				return usagef("--%s is for an external etcd: it needs --etcd-endpoints", name)
			}
		}
	}
	check := cfg.Etcd
	if check.DataDir == "" && !check.External() {
		check.DataDir = filepath.Join(cfg.DataDir, "etcd")
	}
	if err := check.Validate(); err != nil {
		return usageError{err}
	}
	return nil
}
