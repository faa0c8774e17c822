// Package server is the composition root of `flotilla server`: it opens the
// data directory and the store, seeds a fresh installation, starts or
// connects to etcd (the process's one etcd client lives in Etcd), builds
// the update service, the REST API and the Omaha endpoint, and runs them
// behind one HTTP server with graceful shutdown.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/flotilla/flotilla/internal/dashboard"
	"github.com/flotilla/flotilla/internal/etcdserver"
	"github.com/flotilla/flotilla/internal/fleet"
	"github.com/flotilla/flotilla/internal/fleetlock"
	"github.com/flotilla/flotilla/internal/lockfile"
	"github.com/flotilla/flotilla/internal/obs"
	"github.com/flotilla/flotilla/internal/rebootlock"
	"github.com/flotilla/flotilla/internal/replica"
	"github.com/flotilla/flotilla/internal/restapi"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/store/postgres"
	"github.com/flotilla/flotilla/internal/store/sqlite"
	"github.com/flotilla/flotilla/internal/updatesvc"
	"github.com/flotilla/flotilla/omaha"
)

// Config configures a server. DefaultConfig gives the embedded defaults.
type Config struct {
	DataDir string
	Listen  string
	// Database selects the store: empty for SQLite in
	// <DataDir>/flotilla.db, "sqlite:///path/to/file.db" for SQLite
	// elsewhere, or a PostgreSQL URL (postgres://…, postgresql://…), which
	// several replicas can share.
	Database string
	// SQLiteSync is SQLite's synchronous mode: FULL (default; every commit
	// is on disk before it is acknowledged) or NORMAL (faster; a power cut
	// may lose the last commits, a process crash loses nothing).
	SQLiteSync        string
	TrustForwardedFor bool
	ShutdownTimeout   time.Duration
	// ResetAdminToken creates a new admin token at start (for an operator
	// who lost admin.token).
	ResetAdminToken bool
	// PayloadDir, when set, is served read-only at /payloads/ so a small
	// setup needs no separate file server for its update payloads.
	PayloadDir string
	Update     updatesvc.Config
	// Etcd is the embedded etcd member (by default one member named
	// "flotilla" on 127.0.0.1:2379/2380 with its data in
	// <DataDir>/etcd) or the external cluster to use. Several servers on
	// one machine (and tests) need other ports; port 0 picks free ones.
	Etcd etcdserver.Config
	// RebootLock configures the reboot semaphore kept in etcd.
	RebootLock rebootlock.Config
	// FleetLockWait is how long a FleetLock pre-reboot for a full group
	// waits for a slot before answering "full".
	FleetLockWait time.Duration
	// Units configures the unit scheduler's engine (docs/fleet.md); every
	// server runs one, the one elected through etcd leads. Its Grace must
	// not be shorter than the agents'.
	Units fleet.EngineConfig
}

// DefaultConfig returns the embedded defaults.
func DefaultConfig() Config {
	return Config{
		DataDir:         "./flotilla-data",
		Listen:          "127.0.0.1:8080",
		SQLiteSync:      "FULL",
		ShutdownTimeout: 15 * time.Second,
		Update:          updatesvc.DefaultConfig(),
		Etcd:            etcdserver.DefaultConfig(),
		FleetLockWait:   5 * time.Second,
		Units:           fleet.EngineConfig{Grace: fleet.DefaultGrace},
	}
}

// Server is a running flotilla server.
type Server struct {
	cfg       Config
	log       *slog.Logger
	reg       *prometheus.Registry
	st        store.Store
	svc       *updatesvc.Service
	etcd      *etcdserver.Etcd
	locks     *rebootlock.Manager
	fleetlock *fleetlock.Handler
	units     *fleet.Registry
	engine    *fleet.Engine
	etcdUp    prometheus.Gauge
	ln        net.Listener
	handler   http.Handler
	lockFile  *os.File
	events    *dashboard.Events // the dashboard's live-update streams
	// What replicas share through etcd: configuration-change
	// announcements, dashboard sign-outs, the background jobs' leader.
	bus        *replica.Bus
	revs       *replica.Revocations
	jobsLeader prometheus.Gauge

	// AdminToken is set when this start created an admin token (first
	// start, or ResetAdminToken); it is empty otherwise.
	AdminToken string
}

// New opens the data directory and store, starts the embedded etcd member
// (waiting for its cluster's quorum, up to cfg.Etcd.StartTimeout) or
// connects to the external one, and binds the listener, so that
// configuration errors surface before Run and Addr is known at once.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	s := &Server{cfg: cfg, log: logger, reg: obs.NewRegistry()}
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()
	lf, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	s.lockFile = lf
	st, err := openStore(ctx, cfg, logger.With("component", "store"), s.reg)
	if err != nil {
		return nil, err
	}
	s.st = st
	if err := s.seed(ctx); err != nil {
		return nil, err
	}
	if cfg.ResetAdminToken && s.AdminToken == "" {
		if err := s.resetAdminToken(ctx); err != nil {
			return nil, err
		}
	}
	s.events = dashboard.NewEvents()
	svc, err := updatesvc.New(st, cfg.Update, logger.With("component", "update"), s.reg, updatesvc.WithActivityHook(s.events.Activity),
		updatesvc.WithStatusHook(s.events.Status), updatesvc.WithInvalidateHook(s.announceConfigChange))
	if err != nil {
		return nil, err
	}
	s.svc = svc
	ecfg := cfg.Etcd
	if ecfg.DataDir == "" && !ecfg.External() {
		ecfg.DataDir = filepath.Join(cfg.DataDir, "etcd")
	}
	etcd, err := etcdserver.Start(ctx, ecfg, logger.With("component", "etcd"))
	if err != nil {
		return nil, err
	}
	s.etcd = etcd
	s.etcdUp = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "flotilla_etcd_up",
		Help: "1 when the last etcd health check (a linearizable read) passed, 0 otherwise.",
	})
	s.etcdUp.Set(1) // Start has just seen it ready
	if err := s.reg.Register(s.etcdUp); err != nil {
		return nil, fmt.Errorf("register etcd metrics: %w", err)
	}
	s.bus = replica.NewBus(etcd.Client(), replica.DefaultPrefix, logger.With("component", "replica"))
	s.revs = replica.NewRevocations(etcd.Client(), replica.DefaultPrefix, logger.With("component", "replica"))
	s.jobsLeader = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "flotilla_update_jobs_leader",
		Help: "1 while this replica runs the update service's background jobs (grant timeouts, retention, version samples).",
	})
	if err := s.reg.Register(s.jobsLeader); err != nil {
		return nil, fmt.Errorf("register replica metrics: %w", err)
	}
	s.locks, err = rebootlock.New(etcd.Client(), cfg.RebootLock, logger, s.reg)
	if err != nil {
		return nil, err
	}
	s.locks.OnEvent(s.lockActivity)
	s.fleetlock, err = fleetlock.NewHandler(s.locks, logger.With("component", "fleetlock"), s.reg)
	if err != nil {
		return nil, err
	}
	s.fleetlock.Wait = cfg.FleetLockWait
	s.units = fleet.NewRegistry(etcd.Client(), fleet.RegistryConfig{Prefix: cfg.Units.Prefix, Grace: cfg.Units.Grace}, logger.With("component", "units"))
	s.engine, err = fleet.NewEngine(etcd.Client(), cfg.Units, logger.With("component", "engine"), s.reg)
	if err != nil {
		return nil, err
	}
	hm, err := obs.NewHTTPMetrics(s.reg, logger)
	if err != nil {
		return nil, err
	}
	dashKey, err := dashboard.LoadKey(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	// Replicas sign sessions with one key, so any of them accepts a
	// session cookie another issued.
	dashKey, err = replica.SharedSecret(ctx, etcd.Client(), replica.DefaultPrefix, "dashboard-session-key", dashKey)
	if err != nil {
		return nil, err
	}
	dash, err := dashboard.New(svc, dashKey, s.locks, logger.With("component", "dashboard"), dashboard.WithEvents(s.events),
		dashboard.WithRevocations(s.revs), dashboard.WithUnits(s.units))
	if err != nil {
		return nil, err
	}
	s.handler = hm.Wrap(s.routes(dash))
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	s.ln = ln
	ok = true
	return s, nil
}

// IsPostgres reports whether a Config.Database value names a PostgreSQL
// database.
func IsPostgres(database string) bool {
	return strings.HasPrefix(database, "postgres://") || strings.HasPrefix(database, "postgresql://")
}

// openStore opens the store cfg.Database names (see Config.Database).
func openStore(ctx context.Context, cfg Config, logger *slog.Logger, reg prometheus.Registerer) (store.Store, error) {
	switch {
	case IsPostgres(cfg.Database):
		st, err := postgres.Open(ctx, cfg.Database, logger, reg)
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		return st, nil
	case cfg.Database == "" || strings.HasPrefix(cfg.Database, "sqlite://"):
		path := strings.TrimPrefix(cfg.Database, "sqlite://")
		if path == "" {
			path = filepath.Join(cfg.DataDir, "flotilla.db")
		}
		st, err := sqlite.Open(ctx, path, sqlite.Options{Synchronous: cfg.SQLiteSync}, logger, reg)
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		return st, nil
	default:
		// The value is not quoted: a mistyped URL may carry a password.
		return nil, fmt.Errorf("open store: %w: database: want postgres://…, postgresql://… or sqlite:///path", store.ErrInvalid)
	}
}

// lockDataDir takes an exclusive lock so that a second server on the same
// data directory fails fast instead of corrupting shared state.
func lockDataDir(dir string) (*os.File, error) {
	return lockfile.Acquire(dir, "flotilla.lock", "flotilla server")
}

func (s *Server) routes(dash http.Handler) http.Handler {
	mux := http.NewServeMux()
	omahaH := s.svc.OmahaHandler(s.cfg.TrustForwardedFor)
	mux.Handle("/v1/update", omahaH)
	mux.Handle("/v1/update/", omahaH)
	api := restapi.New(s.svc, s.log.With("component", "api"))
	api.SetLocks(s.locks)
	api.SetUnits(s.units)
	mux.Handle("/api/v1/", api)
	// Agents fetch their group's machine config and report back without a
	// token, like the Omaha endpoint.
	mux.Handle("/v1/config/", api.AgentConfigHandler())
	// FleetLock (Zincati, airlock clients): <server>/fleetlock/v1/pre-reboot
	// and …/steady-state. Like the Omaha endpoint it takes no token: the
	// protocol has none.
	mux.Handle("/fleetlock/", http.StripPrefix("/fleetlock", s.fleetlock))
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	if s.cfg.PayloadDir != "" {
		mux.Handle("GET /payloads/", payloadFiles(s.cfg.PayloadDir))
	}
	// Both report whether the store and etcd answer. /healthz is the
	// liveness check and stays 200 while the process serves: restarting
	// every replica because the shared database is down would not help.
	// /readyz is 503 then, so a load balancer routes around a replica
	// that cannot reach its dependencies.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
		s.writeDependencies(r.Context(), w)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		var body strings.Builder
		if !s.writeDependencies(r.Context(), &body) {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		io.WriteString(w, body.String())
	})
	// The web dashboard (docs/dashboard.md) serves everything else.
	mux.Handle("/", dash)
	return mux
}

// writeDependencies checks the store and etcd (2 seconds at most) and
// writes one "name: ok" or "name: error" line for each; it reports whether
// both answered.
func (s *Server) writeDependencies(ctx context.Context, w io.Writer) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	storeErr := s.st.Ping(ctx)
	etcdErr := s.checkEtcd(ctx)
	for _, c := range []struct {
		name string
		err  error
	}{{"store", storeErr}, {"etcd", etcdErr}} {
		if c.err != nil {
			fmt.Fprintf(w, "%s: %v\n", c.name, c.err)
		} else {
			fmt.Fprintf(w, "%s: ok\n", c.name)
		}
	}
	return storeErr == nil && etcdErr == nil
}

// seed prepares a fresh installation: the admin token and the Flatcar
// application with its usual channels and groups, so that Flatcar machines
// with GROUP=stable (etc.) work out of the box. It runs only when the
// store has no token yet, so groups an operator deleted stay deleted.
//
// Replicas sharing a PostgreSQL database may start at the same time and
// all find no token. The seed token has a fixed id, so the second
// transaction's CreateToken waits for the first to commit and then fails
// with ErrConflict: that replica seeds nothing and prints no token (the
// first one's works on every replica, tokens being in the store).
func (s *Server) seed(ctx context.Context) error {
	toks, err := s.st.ListTokens(ctx)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	if len(toks) > 0 {
		return nil
	}
	now := time.Now().UTC()
	tok, secret := restapi.NewToken("admin", restapi.RoleAdmin, now)
	tok.ID = seedTokenID
	err = s.st.Update(ctx, func(q store.TxQueries) error {
		if err := q.CreateToken(ctx, tok); err != nil {
			return err
		}
		err := q.CreateApp(ctx, store.Application{ID: omaha.FlatcarAppID, Name: "Flatcar Container Linux", Description: "The CoreOS/Flatcar operating system (appid used by update_engine)", CreatedAt: now})
		if err != nil && !errors.Is(err, store.ErrConflict) {
			return err
		}
		for _, name := range []string{"stable", "beta", "alpha", "edge"} {
			if err := q.CreateChannel(ctx, store.Channel{AppID: omaha.FlatcarAppID, Name: name, CreatedAt: now, UpdatedAt: now}); err != nil && !errors.Is(err, store.ErrConflict) {
				return err
			}
			g := store.Group{AppID: omaha.FlatcarAppID, Name: name, Track: name, Channel: name, Policy: store.DefaultPolicy(), CreatedAt: now, UpdatedAt: now}
			if err := q.CreateGroup(ctx, g); err != nil && !errors.Is(err, store.ErrConflict) {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, store.ErrConflict) {
		s.log.Info("another replica seeded the store at the same time; its admin token is the one to use")
		return nil
	}
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	return s.writeAdminToken(secret)
}

// seedTokenID is the id of the admin token the first start creates.
const seedTokenID = "admin"

func (s *Server) writeAdminToken(secret string) error {
	path := filepath.Join(s.cfg.DataDir, "admin.token")
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return fmt.Errorf("write admin token: %w", err)
	}
	s.AdminToken = secret
	return nil
}

// resetAdminToken adds a new admin token and writes it to admin.token, for
// an operator who lost the old one. Existing tokens stay valid until
// deleted (flotilla token delete).
func (s *Server) resetAdminToken(ctx context.Context) error {
	tok, secret := restapi.NewToken("admin-"+time.Now().UTC().Format("20060102-150405"), restapi.RoleAdmin, time.Now())
	if err := s.st.CreateToken(ctx, tok); err != nil {
		return fmt.Errorf("reset admin token: %w", err)
	}
	return s.writeAdminToken(secret)
}

// configTopic is the bus topic for update-service configuration changes.
const configTopic = "update-config"

// announceConfigChange tells the other replicas that this one changed the
// update service's configuration, so they drop their caches. It does not
// wait: the request that made the change is answered meanwhile, and a
// failed announcement is bounded by the cache's TTL.
func (s *Server) announceConfigChange() {
	if s.bus == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.bus.Publish(ctx, configTopic); err != nil {
			s.log.Warn("announce configuration change to other replicas", "err", err)
		}
	}()
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Handler is the server's whole HTTP handler (for in-process tests).
func (s *Server) Handler() http.Handler { return s.handler }

// Service is the update service.
func (s *Server) Service() *updatesvc.Service { return s.svc }

// Store is the server's store.
func (s *Server) Store() store.Store { return s.st }

// Locks is the reboot semaphore.
func (s *Server) Locks() *rebootlock.Manager { return s.locks }

// lockActivity records reboot-lock events in the activity log, under
// restapi.LockActivityScope, so they are listed with the group's lock.
func (s *Server) lockActivity(e rebootlock.Event) {
	sev := store.SeverityInfo
	switch e.Kind {
	case rebootlock.EventOverdue, rebootlock.EventAutoReleased, rebootlock.EventForceReleased:
		sev = store.SeverityWarning
	}
	a := store.Activity{AppID: restapi.LockActivityScope, Group: e.Group, Kind: store.ActivityKind(e.Kind),
		Severity: sev, Message: e.Message, At: time.Now().UTC()}
	if e.ID != "" {
		a.MachineIDs = []string{e.ID}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.svc.RecordActivity(ctx, a); err != nil {
		s.log.Warn("cannot record lock activity", "kind", e.Kind, "err", err)
	}
}

// Etcd is the server's etcd: the embedded member or the external cluster,
// with the process's one client (Etcd().Client()).
func (s *Server) Etcd() *etcdserver.Etcd { return s.etcd }

// Units is the unit scheduler's registry (units, machines, assignments).
func (s *Server) Units() *fleet.Registry { return s.units }

// Engine is the server's unit scheduling engine; IsLeader tells whether it
// is the one placing units.
func (s *Server) Engine() *fleet.Engine { return s.engine }

// etcdCheckInterval is how often Run checks etcd's health for the
// flotilla_etcd_up gauge (/readyz checks on every request).
const etcdCheckInterval = 10 * time.Second

// checkEtcd runs the etcd health check and records it in flotilla_etcd_up.
func (s *Server) checkEtcd(ctx context.Context) error {
	err := s.etcd.Health(ctx)
	if err != nil {
		s.etcdUp.Set(0)
	} else {
		s.etcdUp.Set(1)
	}
	return err
}

// watchEtcd keeps flotilla_etcd_up current, logs when etcd becomes
// unhealthy or recovers, and fails when the embedded member stops on its
// own, so that the server exits and its supervisor restarts it.
func (s *Server) watchEtcd(ctx context.Context) error {
	t := time.NewTicker(etcdCheckInterval)
	defer t.Stop()
	healthy := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-s.etcd.Err():
			return fmt.Errorf("etcd: %w", err)
		case <-t.C:
			err := s.checkEtcd(ctx)
			if ctx.Err() != nil {
				return nil // shutting down: the check was cut short
			}
			switch {
			case err != nil && healthy:
				s.log.Warn("etcd unhealthy", "err", err)
			case err == nil && !healthy:
				s.log.Info("etcd healthy again")
			}
			healthy = err == nil
		}
	}
}

// Run serves until ctx is cancelled, then shuts down gracefully: it stops
// accepting, lets in-flight requests finish (up to ShutdownTimeout), then
// closes etcd (the client, then the embedded member) and the store. It
// always releases the server's resources.
func (s *Server) Run(ctx context.Context) error {
	defer s.close()
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	// Shutdown waits for requests to finish; the dashboard's event streams
	// never do on their own.
	hs.RegisterOnShutdown(s.events.Close)
	// http.Server.Shutdown treats a connection that has not sent a request
	// yet as busy for 5 seconds. HTTP clients open such spare connections
	// routinely, so shutdown closes them at once instead of waiting.
	var connMu sync.Mutex
	fresh := map[net.Conn]struct{}{}
	hs.ConnState = func(c net.Conn, st http.ConnState) {
		connMu.Lock()
		defer connMu.Unlock()
		if st == http.StateNew {
			fresh[c] = struct{}{}
		} else {
			delete(fresh, c)
		}
	}
	closeFresh := func() {
		connMu.Lock()
		defer connMu.Unlock()
		for c := range fresh {
			c.Close()
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := hs.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve http: %w", err)
		}
		return nil
	})
	// Background jobs run on one replica at a time (a single server leads
	// its own embedded etcd at once).
	g.Go(func() error {
		return replica.Leader(gctx, s.etcd.Client(), replica.DefaultPrefix, "update-jobs", 10, s.log.With("component", "replica"), s.jobsLeader, s.svc.Run)
	})
	g.Go(func() error { return s.bus.Watch(gctx, configTopic, s.svc.InvalidateLocal) })
	g.Go(func() error { return s.revs.Run(gctx) })
	g.Go(func() error { return s.watchEtcd(gctx) })
	g.Go(func() error { return s.locks.Run(gctx) })
	g.Go(func() error { return s.engine.Run(gctx) })
	g.Go(func() error {
		<-gctx.Done()
		s.log.Info("shutting down", "timeout", s.cfg.ShutdownTimeout)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
		defer cancel()
		closeFresh()
		if err := hs.Shutdown(sctx); err != nil {
			return fmt.Errorf("shutdown http: %w", err)
		}
		return nil
	})
	return g.Wait()
}

func (s *Server) close() {
	if s.ln != nil {
		s.ln.Close()
	}
	if s.etcd != nil {
		if err := s.etcd.Close(); err != nil {
			s.log.Warn("close etcd", "err", err)
		}
	}
	if s.st != nil {
		if err := s.st.Close(); err != nil {
			s.log.Warn("close store", "err", err)
		}
	}
	if s.lockFile != nil {
		s.lockFile.Close()
	}
}

// payloadFiles serves the files of dir (with Range support, which agents
// use to resume downloads) but no directory listings.
func payloadFiles(dir string) http.Handler {
	fs := http.StripPrefix("/payloads/", http.FileServer(http.Dir(dir)))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		fs.ServeHTTP(w, r)
	})
}
