// Package etcdserver gives a flotilla server its etcd: either an embedded
// member (go.etcd.io/etcd/server/v3/embed) that keeps its data under the
// server's data directory and may form a cluster with other flotilla
// servers, or a client of an external etcd cluster. Either way the process
// gets exactly one clientv3.Client, which reboot coordination and the unit
// scheduler share.
//
// The embedded member logs through the caller's slog.Logger: etcd's warnings
// and errors keep their level, its info chatter becomes debug.
package etcdserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/flotilla/flotilla/internal/lockfile"
)

// Defaults for Config.
const (
	DefaultName                    = "flotilla"
	DefaultClientURL               = "http://127.0.0.1:2379"
	DefaultPeerURL                 = "http://127.0.0.1:2380"
	DefaultClusterToken            = "flotilla-etcd"
	DefaultAutoCompactionRetention = time.Hour
	DefaultStartTimeout            = 60 * time.Second
)

// Cluster states for Config.ClusterState, as in etcd's
// --initial-cluster-state.
const (
	ClusterStateNew      = "new"
	ClusterStateExisting = "existing"
)

// Config configures the process's etcd. With Endpoints empty an embedded
// member is started; with Endpoints set nothing is embedded and only the
// client fields (Endpoints, TLS, Username, Password) apply.
type Config struct {
	// DataDir holds the embedded member's WAL and database, and the
	// etcd.lock file that keeps a second process off it.
	DataDir string
	// Name is the member name; it must appear in InitialCluster.
	Name string
	// ClientURL is where the member serves clients, e.g.
	// http://127.0.0.1:2379. It is listened on and advertised as is, so
	// the host must be an IP address (or localhost) that the other
	// members and the agents can reach. Port 0 picks a free port (only
	// for a single member; the log line "etcd listening" and
	// Etcd.ClientURL say which).
	ClientURL string
	// PeerURL is where the member talks to the other members, e.g.
	// http://127.0.0.1:2380. Port 0 works as for ClientURL, but only
	// without InitialCluster.
	PeerURL string
	// InitialCluster lists the members of a new cluster as
	// "a=http://10.0.0.1:2380,b=http://10.0.0.2:2380", as etcd's
	// --initial-cluster. Empty means a single member Name=PeerURL. It only
	// matters on a member's first start; later the data dir knows.
	InitialCluster string
	// ClusterState is ClusterStateNew (bootstrap a new cluster, the
	// default) or ClusterStateExisting (join a cluster after `etcdctl
	// member add`).
	ClusterState string
	// ClusterToken tells clusters bootstrapped from the same
	// InitialCluster apart; all members of one cluster use the same one.
	ClusterToken string
	// AutoCompactionRetention keeps this much history; older revisions are
	// compacted periodically. Zero turns compaction off, which lets the
	// database grow until QuotaBackendBytes stops all writes.
	AutoCompactionRetention time.Duration
	// QuotaBackendBytes limits the database size; zero keeps etcd's default
	// (2 GiB).
	QuotaBackendBytes int64
	// StartTimeout bounds the wait for the member to become ready, which
	// for a new multi-member cluster means until a quorum of members is
	// up.
	StartTimeout time.Duration

	// Endpoints, when set, are the client URLs of an external etcd
	// cluster to use instead of an embedded member.
	Endpoints []string
	// CAFile verifies the external etcd's server certificate (system roots
	// when empty). CertFile and KeyFile give a client certificate; they go
	// together, and each of CAFile and the pair works without the other.
	CAFile, CertFile, KeyFile string
	// Username and Password authenticate to an external etcd with auth
	// enabled.
	Username, Password string
}

// DefaultConfig returns a single embedded member named DefaultName on the
// default ports. DataDir is left empty for the caller to set.
func DefaultConfig() Config {
	return Config{
		Name:                    DefaultName,
		ClientURL:               DefaultClientURL,
		PeerURL:                 DefaultPeerURL,
		ClusterState:            ClusterStateNew,
		ClusterToken:            DefaultClusterToken,
		AutoCompactionRetention: DefaultAutoCompactionRetention,
		StartTimeout:            DefaultStartTimeout,
	}
}

// External reports whether cfg uses an external cluster.
func (cfg Config) External() bool { return len(cfg.Endpoints) > 0 }

// Validate refuses incomplete or unsafe configurations with an error that
// names the offending setting.
func (cfg Config) Validate() error {
	if cfg.External() {
		return cfg.validateExternal()
	}
	if cfg.CAFile != "" || cfg.CertFile != "" || cfg.KeyFile != "" || cfg.Username != "" || cfg.Password != "" {
		return errors.New("etcd TLS and username/password settings are for an external etcd (endpoints); the embedded member does not use them")
	}
	if cfg.DataDir == "" {
		return errors.New("etcd data dir not set")
	}
	if cfg.Name == "" {
		return errors.New("etcd member name is empty")
	}
	if strings.ContainsAny(cfg.Name, "=,") {
		return fmt.Errorf("etcd member name %q: must not contain '=' or ','", cfg.Name)
	}
	switch cfg.ClusterState {
	case "", ClusterStateNew, ClusterStateExisting:
	default:
		return fmt.Errorf("etcd initial cluster state %q: want %q or %q", cfg.ClusterState, ClusterStateNew, ClusterStateExisting)
	}
	client, err := parseMemberURL("client", cfg.ClientURL)
	if err != nil {
		return err
	}
	peer, err := parseMemberURL("peer", cfg.PeerURL)
	if err != nil {
		return err
	}
	if client.Host == peer.Host && client.Port() != "0" {
		return fmt.Errorf("etcd client URL %s and peer URL %s: must differ", cfg.ClientURL, cfg.PeerURL)
	}
	if cfg.InitialCluster != "" {
		if peer.Port() == "0" {
			return fmt.Errorf("etcd peer URL %s: port 0 only works for a single member without an initial cluster, since the other members must know the port", cfg.PeerURL)
		}
		members, err := parseInitialCluster(cfg.InitialCluster)
		if err != nil {
			return err
		}
		own, ok := members[cfg.Name]
		if !ok {
			return fmt.Errorf("etcd initial cluster %q does not contain this member's name %q", cfg.InitialCluster, cfg.Name)
		}
		if !containsURL(own, peer) {
			return fmt.Errorf("etcd initial cluster gives member %q peer URL %s, but its peer URL is %s", cfg.Name, strings.Join(own, ","), cfg.PeerURL)
		}
	} else if cfg.ClusterState == ClusterStateExisting {
		return errors.New("etcd initial cluster state \"existing\" needs the initial cluster (all members, this one included, as after `etcdctl member add`)")
	}
	if cfg.AutoCompactionRetention < 0 {
		return fmt.Errorf("etcd auto-compaction retention %s: must not be negative", cfg.AutoCompactionRetention)
	}
	if cfg.QuotaBackendBytes < 0 {
		return fmt.Errorf("etcd quota %d: must not be negative", cfg.QuotaBackendBytes)
	}
	return nil
}

func (cfg Config) validateExternal() error {
	// The embedded-member fields have defaults, so only settings that
	// make sense for a cluster alone are refused here; the CLI also
	// refuses flags given together.
	if cfg.InitialCluster != "" || cfg.ClusterState == ClusterStateExisting {
		return errors.New("etcd endpoints (an external cluster) and an embedded cluster (initial cluster, cluster state) both given: choose one")
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return errors.New("etcd client certificate and key go together: give both or neither")
	}
	if (cfg.Username == "") != (cfg.Password == "") {
		return errors.New("etcd username and password go together: give both or neither")
	}
	tlsFiles := cfg.CAFile != "" || cfg.CertFile != ""
	for _, ep := range cfg.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return fmt.Errorf("etcd endpoint %q: want http://HOST:PORT or https://HOST:PORT", ep)
		}
		if tlsFiles && u.Scheme != "https" {
			return fmt.Errorf("etcd endpoint %s: TLS files given, so use https://", ep)
		}
	}
	return nil
}

// parseMemberURL checks a URL the embedded member listens on and
// advertises.
func parseMemberURL(what, s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("etcd %s URL %q: want http://IP:PORT", what, s)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("etcd %s URL %s: only http:// is supported for the embedded member", what, s)
	}
	if u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("etcd %s URL %s: must not have a path", what, s)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return nil, fmt.Errorf("etcd %s URL %s: %w", what, s, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return nil, fmt.Errorf("etcd %s URL %s: bad port %q", what, s, port)
	}
	if host != "localhost" {
		ip := net.ParseIP(host)
		if ip == nil {
			return nil, fmt.Errorf("etcd %s URL %s: the host must be an IP address, since it is listened on", what, s)
		}
		if ip.IsUnspecified() {
			return nil, fmt.Errorf("etcd %s URL %s: the URL is also advertised to others, so give the address they reach this member at, not %s", what, s, host)
		}
	}
	return u, nil
}

// parseInitialCluster parses "a=URL,b=URL" (a name may repeat for several
// URLs) into name → URLs.
func parseInitialCluster(s string) (map[string][]string, error) {
	m := map[string][]string{}
	for part := range strings.SplitSeq(s, ",") {
		name, u, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || name == "" || u == "" {
			return nil, fmt.Errorf("etcd initial cluster %q: entry %q: want NAME=URL", s, part)
		}
		if _, err := parseMemberURL("peer", u); err != nil {
			return nil, fmt.Errorf("etcd initial cluster member %s: %w", name, err)
		}
		m[name] = append(m[name], u)
	}
	return m, nil
}

func containsURL(urls []string, want *url.URL) bool {
	for _, s := range urls {
		if u, err := url.Parse(s); err == nil && u.Scheme == want.Scheme && u.Host == want.Host {
			return true
		}
	}
	return false
}

// Etcd is the process's etcd: an embedded member with a client on it, or a
// client of an external cluster.
type Etcd struct {
	cfg       Config
	log       *slog.Logger
	zlog      *zap.Logger
	client    *clientv3.Client
	member    *embed.Etcd // nil for an external cluster
	clientURL string      // embedded: the actual client URL
	peerURL   string      // embedded: the actual peer URL
	lock      *os.File

	failed    chan error    // one error when the member stops on its own
	closing   chan struct{} // closed by Close
	monitor   sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Start starts the embedded member (and waits until it is ready) or, with
// cfg.Endpoints set, connects to the external cluster, and creates the
// client. Close releases everything.
func Start(ctx context.Context, cfg Config, logger *slog.Logger) (*Etcd, error) {
	if cfg.ClusterState == "" {
		cfg.ClusterState = ClusterStateNew
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Etcd{
		cfg:     cfg,
		log:     logger,
		zlog:    newZapLogger(logger, false),
		failed:  make(chan error, 1),
		closing: make(chan struct{}),
	}
	if cfg.External() {
		if err := e.connect(cfg.Endpoints); err != nil {
			return nil, err
		}
		logger.Info("using external etcd", "endpoints", strings.Join(cfg.Endpoints, ","))
		return e, nil
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create etcd data dir: %w", err)
	}
	lf, err := lockfile.Acquire(cfg.DataDir, "etcd.lock", "flotilla etcd member")
	if err != nil {
		return nil, err
	}
	e.lock = lf
	if err := e.startMember(ctx); err != nil {
		lf.Close()
		return nil, err
	}
	logger.Info("etcd ready", "name", cfg.Name)
	if err := e.connect([]string{e.clientURL}); err != nil {
		e.member.Close()
		lf.Close()
		return nil, err
	}
	e.monitor.Add(1)
	go e.watchMember()
	return e, nil
}

// startMember starts the embedded member and waits for it to be ready.
func (e *Etcd) startMember(ctx context.Context) error {
	const attempts = 5
	var member *embed.Etcd
	for i := 0; ; i++ {
		ecfg, picked, err := e.embedConfig()
		if err != nil {
			return err
		}
		member, err = embed.StartEtcd(ecfg)
		if err == nil {
			break
		}
		// A port picked for a port-0 URL may be taken between our probe
		// and etcd's listen; pick another.
		if picked && errors.Is(err, syscall.EADDRINUSE) && i+1 < attempts {
			continue
		}
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("start etcd member %s (client %s, peer %s): %w (is another flotilla server or etcd running on this machine? give this one other client and peer URLs)", e.cfg.Name, e.cfg.ClientURL, e.cfg.PeerURL, err)
		}
		return fmt.Errorf("start etcd member %s (client %s, peer %s): %w", e.cfg.Name, e.cfg.ClientURL, e.cfg.PeerURL, err)
	}
	e.member = member
	e.log.Info("etcd listening", "name", e.cfg.Name, "client_url", e.clientURL, "peer_url", e.peerURL, "data_dir", e.cfg.DataDir)
	if err := e.waitReady(ctx); err != nil {
		// Close alone would wait for client serving, which only starts
		// once the member is ready; stopping the server first ends it.
		member.Server.Stop()
		member.Close()
		return err
	}
	return nil
}

// embedConfig builds the embed configuration, resolving port-0 URLs to free
// ports (picked reports whether it did).
func (e *Etcd) embedConfig() (*embed.Config, bool, error) {
	cu, cPicked, err := resolvePort(e.cfg.ClientURL)
	if err != nil {
		return nil, false, err
	}
	pu, pPicked, err := resolvePort(e.cfg.PeerURL)
	if err != nil {
		return nil, false, err
	}
	c := embed.NewConfig()
	c.Name = e.cfg.Name
	c.Dir = e.cfg.DataDir
	c.ListenClientUrls = []url.URL{*cu}
	c.AdvertiseClientUrls = []url.URL{*cu}
	c.ListenPeerUrls = []url.URL{*pu}
	c.AdvertisePeerUrls = []url.URL{*pu}
	c.InitialCluster = e.cfg.InitialCluster
	if c.InitialCluster == "" {
		c.InitialCluster = e.cfg.Name + "=" + pu.String()
	}
	c.ClusterState = e.cfg.ClusterState
	c.InitialClusterToken = e.cfg.ClusterToken
	if e.cfg.AutoCompactionRetention > 0 {
		c.AutoCompactionMode = embed.CompactorModePeriodic
		c.AutoCompactionRetention = e.cfg.AutoCompactionRetention.String()
	}
	if e.cfg.QuotaBackendBytes > 0 {
		c.QuotaBackendBytes = e.cfg.QuotaBackendBytes
	}
	c.ZapLoggerBuilder = embed.NewZapLoggerBuilder(e.zlog.Named("server"))
	e.clientURL, e.peerURL = cu.String(), pu.String()
	return c, cPicked || pPicked, nil
}

// resolvePort returns s as a URL, with port 0 replaced by a port that is
// free at the moment.
func resolvePort(s string) (*url.URL, bool, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, false, fmt.Errorf("etcd URL %q: %w", s, err)
	}
	if u.Port() != "0" {
		return u, false, nil
	}
	ln, err := net.Listen("tcp", u.Host)
	if err != nil {
		return nil, false, fmt.Errorf("pick a free port for %s: %w", s, err)
	}
	host := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(host)
	r := *u
	r.Host = net.JoinHostPort(u.Hostname(), port)
	return &r, true, nil
}

// waitReady waits for the member to join its cluster, logging progress,
// until StartTimeout.
func (e *Etcd) waitReady(ctx context.Context) error {
	timeout := time.NewTimer(e.cfg.StartTimeout)
	defer timeout.Stop()
	progress := time.NewTicker(5 * time.Second)
	defer progress.Stop()
	start := time.Now()
	cluster := e.cfg.InitialCluster
	if cluster == "" {
		cluster = e.cfg.Name + "=" + e.peerURL
	}
	for {
		select {
		case <-e.member.Server.ReadyNotify():
			return nil
		case err := <-e.member.Err():
			return fmt.Errorf("etcd member %s failed while starting: %w", e.cfg.Name, err)
		case <-e.member.Server.StopNotify():
			return fmt.Errorf("etcd member %s stopped while starting (see the etcd log lines above)", e.cfg.Name)
		case <-ctx.Done():
			return fmt.Errorf("start etcd member %s: %w", e.cfg.Name, ctx.Err())
		case <-progress.C:
			e.log.Info("waiting for etcd to become ready; a new cluster needs a quorum of its members up", "name", e.cfg.Name, "initial_cluster", cluster, "waited", time.Since(start).Round(time.Second))
		case <-timeout.C:
			return fmt.Errorf("etcd member %s (client %s, peer %s) not ready after %s: a new cluster needs a quorum of its members started (initial cluster %s)", e.cfg.Name, e.clientURL, e.peerURL, e.cfg.StartTimeout, cluster)
		}
	}
}

// watchMember reports the member stopping or failing on its own (not by
// Close) through failed.
func (e *Etcd) watchMember() {
	defer e.monitor.Done()
	var err error
	select {
	case <-e.closing:
		return
	case <-e.member.Server.StopNotify():
	case err = <-e.member.Err():
	}
	select {
	case <-e.closing:
		// Close was called meanwhile: a stop is expected.
		return
	default:
	}
	if err == nil {
		err = errors.New("embedded etcd member stopped")
	}
	e.log.Error("etcd member failed", "name", e.cfg.Name, "err", err)
	e.failed <- err
}

// connect creates the client.
func (e *Etcd) connect(endpoints []string) error {
	tc, err := ClientTLS(e.cfg.CAFile, e.cfg.CertFile, e.cfg.KeyFile)
	if err != nil {
		return err
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		TLS:         tc,
		Username:    e.cfg.Username,
		Password:    e.cfg.Password,
		Logger:      newZapLogger(e.log, true).Named("client"),
	})
	if err != nil {
		return fmt.Errorf("etcd client for %s: %w", strings.Join(endpoints, ","), err)
	}
	e.client = c
	return nil
}

// ClientTLS builds the TLS configuration for a client of an external
// etcd: nil when no file is given (https endpoints then verify against the
// system roots). caFile and the certFile/keyFile pair are independent, so a
// server-only TLS setup with just a CA works (locksmith required all three:
// flatcar/Flatcar#948).
func ClientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("etcd client certificate and key go together: give both or neither")
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("etcd CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd CA %s: no PEM certificates in it", caFile)
		}
		tc.RootCAs = pool
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Client is the process's one etcd client. It stays valid until Close.
func (e *Etcd) Client() *clientv3.Client { return e.client }

// Embedded reports whether this process runs an etcd member.
func (e *Etcd) Embedded() bool { return e.member != nil }

// MemberName is the embedded member's name, "" for an external cluster.
func (e *Etcd) MemberName() string {
	if e.member == nil {
		return ""
	}
	return e.cfg.Name
}

// ClientURL is the embedded member's client URL with the actual port (a
// port-0 URL resolved), or the first external endpoint.
func (e *Etcd) ClientURL() string {
	if e.member == nil {
		return e.cfg.Endpoints[0]
	}
	return e.clientURL
}

// PeerURL is the embedded member's peer URL with the actual port, "" for
// an external cluster.
func (e *Etcd) PeerURL() string { return e.peerURL }

// Err delivers an error if the embedded member stops or fails on its own
// while running (never after Close, never for an external cluster). A
// server exits on it so that its supervisor restarts it.
func (e *Etcd) Err() <-chan error { return e.failed }

// Close closes the client, then stops the embedded member gracefully
// (handing leadership to another member if it has it) and releases the
// data directory. It is safe to call more than once.
func (e *Etcd) Close() error {
	e.closeOnce.Do(func() {
		close(e.closing)
		if err := e.client.Close(); err != nil && !errors.Is(err, context.Canceled) {
			e.closeErr = fmt.Errorf("close etcd client: %w", err)
		}
		if e.member != nil {
			e.member.Close()
			e.monitor.Wait()
			e.log.Info("etcd member stopped", "name", e.cfg.Name)
		}
		if e.lock != nil {
			e.lock.Close()
		}
	})
	return e.closeErr
}
