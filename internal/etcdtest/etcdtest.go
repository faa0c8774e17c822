// Package etcdtest runs real etcd servers inside the test process.
//
// flotilla's coordination code (the reboot semaphore, the unit scheduler) is
// correct only because of etcd semantics: Txn compares, lease expiry,
// linearizable reads across leader changes. Faking etcd would test the fake,
// so tests start one or three embedded members (go.etcd.io/etcd/server/v3/embed)
// listening on loopback ports, with data in t.TempDir() and election timers
// short enough that a leader change takes a fraction of a second.
//
// A Cluster can kill and restart members and cut a member off from its peers
// (Partition/Heal), which is how fault-injection tests exercise leader loss
// and minority partitions without leaving the process.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Timing used for every member. A 25 ms heartbeat and 250 ms election timeout
// elect a new leader quickly after a kill while leaving headroom for -race and
// busy CI machines, where much shorter timeouts cause spurious elections.
const (
	tickMs     = 25
	electionMs = 250

	// readyTimeout bounds how long Start and Restart wait for a member to
	// join its cluster and serve clients.
	readyTimeout = 20 * time.Second

	// startAttempts bounds retries when a picked port was taken by someone
	// else between picking and binding.
	startAttempts = 5
)

// LogEnv names the environment variable that turns on etcd server logging
// for debugging a test ("debug", "info", "warn" or "error"; output goes to
// stderr). By default embedded members log nothing: a fault-injection test
// makes them complain loudly about unreachable peers, by design.
const LogEnv = "FLOTILLA_ETCDTEST_LOG"

// Cluster is a set of embedded etcd members forming one etcd cluster.
// Its methods are safe for concurrent use, so a fault injector goroutine
// may kill and restart members while test clients run.
type Cluster struct {
	token   string
	mu      sync.Mutex
	members []*member
	closed  bool
}

type member struct {
	name      string
	dir       string
	clientURL url.URL
	peerURL   url.URL
	etcd      *embed.Etcd // nil while killed
	starting  bool        // a Restart is in progress
	// stopped is closed once the last killed incarnation has released its
	// listeners and data directory; nil if none was killed.
	stopped chan struct{}
	// partitioned is true while the member is cut off from all peers; kept
	// so that a restart (of it or of a peer) re-applies the cut.
	partitioned bool
}

// MemberInfo describes one member of a Cluster.
type MemberInfo struct {
	Name      string
	ClientURL string
	PeerURL   string
	// Running is false between Kill and Restart.
	Running bool
	// Partitioned is true between Partition and Heal.
	Partitioned bool
}

// Start starts an etcd cluster of the given number of members (1 or 3;
// any positive number works, but only those are exercised) and waits until
// every member serves clients. All members are stopped when the test ends.
func Start(tb testing.TB, members int) *Cluster {
	tb.Helper()
	if members < 1 {
		tb.Fatalf("etcdtest: start: %d members", members)
	}
	// TempDir first: cleanups run last-registered-first, and the members
	// must be stopped before their directories are removed.
	base := tb.TempDir()
	c := &Cluster{token: fmt.Sprintf("etcdtest-%d", time.Now().UnixNano())}
	tb.Cleanup(c.close)

	var lastErr error
	for attempt := 0; attempt < startAttempts; attempt++ {
		err := c.startNew(base, members, attempt)
		if err == nil {
			return c
		}
		lastErr = err
		if !isAddrInUse(err) {
			break
		}
	}
	tb.Fatalf("etcdtest: start %d members: %v", members, lastErr)
	return nil
}

// startNew picks fresh ports and data directories and starts a new cluster.
// On failure every member started so far is closed again.
func (c *Cluster) startNew(base string, n, attempt int) error {
	ports, err := freePorts(2 * n)
	if err != nil {
		return err
	}
	ms := make([]*member, n)
	initial := make([]string, n)
	for i := range ms {
		ms[i] = &member{
			name:      fmt.Sprintf("m%d", i),
			dir:       filepath.Join(base, fmt.Sprintf("m%d-%d", i, attempt)),
			clientURL: url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i])},
			peerURL:   url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])},
		}
		initial[i] = ms[i].name + "=" + ms[i].peerURL.String()
	}
	cluster := strings.Join(initial, ",")

	for i, m := range ms {
		e, err := embed.StartEtcd(c.config(m, cluster, embed.ClusterStateFlagNew))
		if err != nil {
			for _, started := range ms[:i] {
				started.etcd.Close()
			}
			return fmt.Errorf("start member %s: %w", m.name, err)
		}
		m.etcd = e
	}
	// Members of a new cluster become ready only together (they need a
	// quorum to publish themselves), so wait after starting all of them.
	for _, m := range ms {
		if err := waitReady(m.etcd); err != nil {
			for _, m := range ms {
				m.etcd.Close()
			}
			return fmt.Errorf("member %s: %w", m.name, err)
		}
	}
	c.mu.Lock()
	c.members = ms
	c.mu.Unlock()
	return nil
}

// config builds the embed configuration for m.
func (c *Cluster) config(m *member, initialCluster, state string) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = m.name
	cfg.Dir = m.dir
	cfg.ListenClientUrls = []url.URL{m.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{m.clientURL}
	cfg.ListenPeerUrls = []url.URL{m.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{m.peerURL}
	cfg.InitialCluster = initialCluster
	cfg.InitialClusterToken = c.token
	cfg.ClusterState = state
	cfg.TickMs = tickMs
	cfg.ElectionMs = electionMs
	cfg.UnsafeNoFsync = true
	cfg.SocketOpts.ReuseAddress = true
	// The gRPC gateway (HTTP/JSON) is not used by tests; skipping it saves
	// goroutines and a self-dial per member.
	cfg.EnableGRPCGateway = false
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(serverLogger())
	return cfg
}

// serverLogger returns the zap logger for embedded members: silent unless
// LogEnv asks for output.
func serverLogger() *zap.Logger {
	level := os.Getenv(LogEnv)
	if level == "" {
		return zap.NewNop()
	}
	var lv zapcore.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		lv = zapcore.ErrorLevel
	}
	core := zapcore.NewCore(
		zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
		zapcore.Lock(os.Stderr), lv)
	return zap.New(core)
}

func waitReady(e *embed.Etcd) error {
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("wait ready: %w", err)
	case <-time.After(readyTimeout):
		return fmt.Errorf("wait ready: not ready after %v", readyTimeout)
	}
}

// freePorts returns n distinct loopback TCP ports that were free a moment
// ago. All listeners stay open until every port is picked so the kernel
// cannot hand out the same port twice.
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func isAddrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

// Size returns the number of members.
func (c *Cluster) Size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.members)
}

// Endpoints returns the client URLs of all members, running or not, so a
// client built from them fails over when members come and go.
func (c *Cluster) Endpoints() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	eps := make([]string, len(c.members))
	for i, m := range c.members {
		eps[i] = m.clientURL.String()
	}
	return eps
}

// Member describes member i.
func (c *Cluster) Member(i int) MemberInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.member(i)
	return MemberInfo{
		Name:        m.name,
		ClientURL:   m.clientURL.String(),
		PeerURL:     m.peerURL.String(),
		Running:     m.etcd != nil,
		Partitioned: m.partitioned,
	}
}

// Etcd returns the embedded server of member i, or nil while it is killed.
// It is meant for assertions that need server internals (leader, member
// id); tests should normally talk to etcd through a client.
func (c *Cluster) Etcd(i int) *embed.Etcd {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.member(i).etcd
}

func (c *Cluster) member(i int) *member {
	if i < 0 || i >= len(c.members) {
		panic(fmt.Sprintf("etcdtest: member %d of %d", i, len(c.members)))
	}
	return c.members[i]
}

// Client returns a client for all endpoints, closed when the test ends.
// Each call returns a new client (with its own connections), which is how
// tests simulate independent machines.
func (c *Cluster) Client(tb testing.TB) *clientv3.Client {
	tb.Helper()
	cli, err := clientv3.New(ClientConfig(c.Endpoints()))
	if err != nil {
		tb.Fatalf("etcdtest: client: %v", err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}

// ClientConfig returns the client configuration Client uses: short dial
// timeout, short keepalives so a killed member is noticed quickly, and no
// client logging (the etcd client warns on every retried call, which a
// fault-injection test triggers constantly).
func ClientConfig(endpoints []string) clientv3.Config {
	return clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          2 * time.Second,
		DialKeepAliveTime:    time.Second,
		DialKeepAliveTimeout: time.Second,
		Logger:               zap.NewNop(),
	}
}

// Kill stops member i as if its process died: raft stops at once, without
// the leadership transfer of a graceful shutdown, so the peers see a dead
// member. Listeners and files are released in the background (embed's
// Close waits up to a request timeout for in-flight client calls, which
// then fail as against a crashed server); Restart waits for that. The data
// directory stays. Killing a killed member does nothing.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	m := c.member(i)
	e := m.etcd
	m.etcd = nil
	var done chan struct{}
	if e != nil {
		done = make(chan struct{})
		m.stopped = done
	}
	c.mu.Unlock()
	if e == nil {
		return
	}
	e.Server.HardStop()
	go func() {
		defer close(done)
		e.Close()
	}()
}

// Restart starts a killed member again with the same name, data directory
// and URLs. When enough members run for a quorum it waits until the member
// serves clients; otherwise (for example the first of two killed members
// of three) it returns once the member is started, since readiness needs a
// quorum. Restarting a running member does nothing.
func (c *Cluster) Restart(i int) error {
	c.mu.Lock()
	m := c.member(i)
	if m.etcd != nil || m.starting || c.closed {
		c.mu.Unlock()
		return nil
	}
	m.starting = true
	initial := make([]string, len(c.members))
	running := 1
	for j, o := range c.members {
		initial[j] = o.name + "=" + o.peerURL.String()
		if o.etcd != nil {
			running++
		}
	}
	quorum := running > len(c.members)/2
	cfg := c.config(m, strings.Join(initial, ","), embed.ClusterStateFlagExisting)
	stopped := m.stopped
	c.mu.Unlock()
	if stopped != nil {
		<-stopped
	}

	// The ports were ours until Kill; the kernel may still be tearing down
	// the old listener or another test may have grabbed one, so retry a
	// little before giving up.
	var (
		e   *embed.Etcd
		err error
	)
	for attempt := 0; ; attempt++ {
		e, err = embed.StartEtcd(cfg)
		if err == nil || !isAddrInUse(err) || attempt >= 20 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err == nil && quorum {
		if err = waitReady(e); err != nil {
			e.Close()
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	m.starting = false
	if err != nil {
		return fmt.Errorf("etcdtest: restart %s: %w", m.name, err)
	}
	if c.closed {
		e.Close()
		return nil
	}
	m.etcd = e
	c.applyCutsLocked()
	return nil
}

// Partition cuts member i off from every other member: raft messages in
// both directions are dropped, as in a network partition between i and the
// rest. Clients can still reach member i, which then has no leader (or
// steps down as leader), so its requests fail or time out — the minority
// side of a partition. The cut survives restarts until Heal.
func (c *Cluster) Partition(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.member(i).partitioned = true
	c.applyCutsLocked()
}

// Heal undoes Partition(i).
func (c *Cluster) Heal(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.member(i).partitioned = false
	c.applyCutsLocked()
}

// applyCutsLocked makes the raft transport of every running member match
// the partitioned flags: a link is cut when either end is partitioned.
func (c *Cluster) applyCutsLocked() {
	for _, a := range c.members {
		if a.etcd == nil {
			continue
		}
		for _, b := range c.members {
			if a == b || b.etcd == nil {
				continue
			}
			if a.partitioned || b.partitioned {
				a.etcd.Server.CutPeer(b.etcd.Server.MemberID())
			} else {
				a.etcd.Server.MendPeer(b.etcd.Server.MemberID())
			}
		}
	}
}

// WaitHealthy waits until every running member answers a linearizable
// read, which needs a leader with a quorum behind it.
func (c *Cluster) WaitHealthy(ctx context.Context) error {
	c.mu.Lock()
	var eps []string
	for _, m := range c.members {
		if m.etcd != nil {
			eps = append(eps, m.clientURL.String())
		}
	}
	c.mu.Unlock()
	for _, ep := range eps {
		cli, err := clientv3.New(ClientConfig([]string{ep}))
		if err != nil {
			return fmt.Errorf("etcdtest: wait healthy: %w", err)
		}
		for {
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			_, err = cli.Get(rctx, "etcdtest-health")
			cancel()
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				cli.Close()
				return fmt.Errorf("etcdtest: wait healthy %s: %w (last error: %v)", ep, ctx.Err(), err)
			case <-time.After(50 * time.Millisecond):
			}
		}
		cli.Close()
	}
	return nil
}

// close stops all members concurrently and waits for members killed
// earlier to finish stopping; it runs in test cleanup.
func (c *Cluster) close() {
	c.mu.Lock()
	c.closed = true
	var es []*embed.Etcd
	var pending []chan struct{}
	for _, m := range c.members {
		if m.etcd != nil {
			es = append(es, m.etcd)
			m.etcd = nil
		}
		if m.stopped != nil {
			pending = append(pending, m.stopped)
		}
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, e := range es {
		wg.Go(func() {
			// HardStop first: a graceful Close of the leader would try to
			// hand leadership to peers that are closing too.
			e.Server.HardStop()
			e.Close()
		})
	}
	wg.Wait()
	for _, p := range pending {
		<-p
	}
}
