package etcdserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
)

// testLogger logs etcd's warnings and errors to the test log until the
// test ends (etcd and gRPC goroutines may still log briefly after Close).
func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// singleConfig is a one-member configuration on free ports in dir.
func singleConfig(dir string) Config {
	cfg := DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "etcd")
	cfg.ClientURL = "http://127.0.0.1:0"
	cfg.PeerURL = "http://127.0.0.1:0"
	return cfg
}

func mustStart(t *testing.T, cfg Config) *Etcd {
	t.Helper()
	e, err := Start(t.Context(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		<-tick.C
	}
}

func put(ctx context.Context, e *Etcd, k, v string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err := e.Client().Put(ctx, k, v)
	return err
}

func get(ctx context.Context, e *Etcd, k string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := e.Client().Get(ctx, k)
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) == 0 {
		return "", fmt.Errorf("%s not found", k)
	}
	return string(resp.Kvs[0].Value), nil
}

func TestSingleMemberRestartKeepsData(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	e := mustStart(t, singleConfig(dir))
	if !e.Embedded() || e.MemberName() != DefaultName {
		t.Fatalf("Embedded %v, MemberName %q", e.Embedded(), e.MemberName())
	}
	if u, _ := url.Parse(e.ClientURL()); u.Port() == "0" || u.Port() == "" {
		t.Fatalf("client URL %s: port 0 not resolved", e.ClientURL())
	}
	if err := e.Health(ctx); err != nil {
		t.Fatal(err)
	}
	if err := put(ctx, e, "/test/k", "v1"); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	e2 := mustStart(t, singleConfig(dir))
	if got, err := get(ctx, e2, "/test/k"); err != nil || got != "v1" {
		t.Fatalf("after restart: %q, %v", got, err)
	}
	members, err := e2.ClusterHealth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 1 || !members[0].Healthy || !members[0].Leader || members[0].Name != DefaultName {
		t.Fatalf("ClusterHealth = %+v", members)
	}
}

func TestSecondStartOnSameDirFailsFast(t *testing.T) {
	dir := t.TempDir()
	mustStart(t, singleConfig(dir))
	start := time.Now()
	e, err := Start(t.Context(), singleConfig(dir), testLogger(t))
	if err == nil {
		e.Close()
		t.Fatal("second Start on the same data dir succeeded")
	}
	if !strings.Contains(err.Error(), "in use by another flotilla etcd member") || !strings.Contains(err.Error(), dir) {
		t.Fatalf("error %q does not say the dir is in use", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("second Start took %s to fail", d)
	}
}

// cluster3 returns the configurations of a three-member cluster on free
// loopback ports.
func cluster3(t *testing.T) []Config {
	t.Helper()
	names := []string{"m0", "m1", "m2"}
	var cfgs []Config
	var initial []string
	for _, n := range names {
		cfg := DefaultConfig()
		cfg.Name = n
		cfg.DataDir = filepath.Join(t.TempDir(), n)
		cfg.ClientURL = fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
		cfg.PeerURL = fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
		cfg.ClusterToken = "test-" + t.Name()
		cfg.StartTimeout = 30 * time.Second
		cfgs = append(cfgs, cfg)
		initial = append(initial, n+"="+cfg.PeerURL)
	}
	for i := range cfgs {
		cfgs[i].InitialCluster = strings.Join(initial, ",")
	}
	return cfgs
}

// startAll starts the members concurrently: each waits for a quorum.
func startAll(t *testing.T, cfgs []Config) []*Etcd {
	t.Helper()
	es := make([]*Etcd, len(cfgs))
	errs := make([]error, len(cfgs))
	var wg sync.WaitGroup
	for i, cfg := range cfgs {
		wg.Go(func() { es[i], errs[i] = Start(t.Context(), cfg, testLogger(t)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
		t.Cleanup(func() { es[i].Close() })
	}
	return es
}

func TestThreeMemberCluster(t *testing.T) {
	ctx := t.Context()
	cfgs := cluster3(t)
	es := startAll(t, cfgs)

	list, err := es[0].Client().MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Members) != 3 {
		t.Fatalf("MemberList: %d members", len(list.Members))
	}
	if err := put(ctx, es[0], "/test/k", "from-m0"); err != nil {
		t.Fatal(err)
	}
	if got, err := get(ctx, es[2], "/test/k"); err != nil || got != "from-m0" {
		t.Fatalf("read on m2: %q, %v", got, err)
	}

	health := func(from *Etcd) (map[string]MemberHealth, error) {
		ms, err := from.ClusterHealth(ctx)
		if err != nil {
			return nil, err
		}
		out := map[string]MemberHealth{}
		for _, m := range ms {
			out[m.Name] = m
		}
		return out, nil
	}
	allHealthy := func(from *Etcd) error {
		hs, err := health(from)
		if err != nil {
			return err
		}
		leaders := 0
		for _, n := range []string{"m0", "m1", "m2"} {
			m, ok := hs[n]
			if !ok || !m.Healthy {
				return fmt.Errorf("member %s: %+v", n, m)
			}
			if m.Leader {
				leaders++
			}
		}
		if len(hs) != 3 || leaders != 1 {
			return fmt.Errorf("%d members, %d leaders: %+v", len(hs), leaders, hs)
		}
		return nil
	}
	waitFor(t, 10*time.Second, "3 healthy members", func() error { return allHealthy(es[0]) })

	// Stop the leader: the others elect a new one and keep taking writes.
	hs, err := health(es[0])
	if err != nil {
		t.Fatal(err)
	}
	down := -1
	for i, cfg := range cfgs {
		if hs[cfg.Name].Leader {
			down = i
		}
	}
	if err := es[down].Close(); err != nil {
		t.Fatal(err)
	}
	up := (down + 1) % 3
	waitFor(t, 10*time.Second, "stopped member shown unhealthy", func() error {
		hs, err := health(es[up])
		if err != nil {
			return err
		}
		if m := hs[cfgs[down].Name]; m.Healthy || m.Err == nil {
			return fmt.Errorf("stopped member %s: %+v", m.Name, m)
		}
		for i, cfg := range cfgs {
			if i != down && !hs[cfg.Name].Healthy {
				return fmt.Errorf("member %s: %+v", cfg.Name, hs[cfg.Name])
			}
		}
		return nil
	})
	waitFor(t, 10*time.Second, "write with one member down", func() error { return put(ctx, es[up], "/test/k", "two-of-three") })
	if err := es[up].Health(ctx); err != nil {
		t.Fatalf("Health with a quorum: %v", err)
	}

	// Restart it from its data dir: it rejoins and catches up.
	es[down] = mustStart(t, cfgs[down])
	waitFor(t, 15*time.Second, "restarted member healthy", func() error { return allHealthy(es[up]) })
	if got, err := get(ctx, es[down], "/test/k"); err != nil || got != "two-of-three" {
		t.Fatalf("read on the restarted member: %q, %v", got, err)
	}
}

func TestStartTimesOutWithoutQuorum(t *testing.T) {
	cfgs := cluster3(t)
	cfg := cfgs[0]
	cfg.StartTimeout = 2 * time.Second
	start := time.Now()
	e, err := Start(t.Context(), cfg, testLogger(t))
	if err == nil {
		e.Close()
		t.Fatal("one member of three became ready alone")
	}
	for _, want := range []string{"not ready after 2s", cfg.ClientURL, cfg.PeerURL, cfgs[1].PeerURL, "quorum"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Start took %s to give up", d)
	}
	// The failed start released the directory.
	if f, err := os.OpenFile(filepath.Join(cfg.DataDir, "etcd.lock"), os.O_RDWR, 0); err != nil {
		t.Fatal(err)
	} else {
		f.Close()
	}
	e, err = Start(t.Context(), singleConfig(t.TempDir()), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
}

func TestExternal(t *testing.T) {
	ctx := t.Context()
	member := mustStart(t, singleConfig(t.TempDir()))
	cfg := DefaultConfig()
	cfg.Endpoints = []string{member.ClientURL()}
	ext := mustStart(t, cfg)
	if ext.Embedded() || ext.MemberName() != "" {
		t.Fatalf("external: Embedded %v, MemberName %q", ext.Embedded(), ext.MemberName())
	}
	if err := put(ctx, member, "/test/k", "v"); err != nil {
		t.Fatal(err)
	}
	if got, err := get(ctx, ext, "/test/k"); err != nil || got != "v" {
		t.Fatalf("external read: %q, %v", got, err)
	}
	if err := ext.Health(ctx); err != nil {
		t.Fatal(err)
	}
	ms, err := ext.ClusterHealth(ctx)
	if err != nil || len(ms) != 1 || !ms[0].Healthy {
		t.Fatalf("ClusterHealth = %+v, %v", ms, err)
	}
	member.Close()
	if err := ext.Health(ctx); err == nil {
		t.Fatal("Health passed with the external member closed")
	}
}

// TestExternalServerTLS connects to an etcd that has a server certificate
// with only the CA given (locksmith needed a client certificate too:
// flatcar/Flatcar#948).
func TestExternalServerTLS(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	caFile, certFile, keyFile := writeTestCerts(t, dir)

	ecfg := embed.NewConfig()
	ecfg.Name = "tls"
	ecfg.Dir = filepath.Join(dir, "etcd")
	cu, _ := url.Parse(fmt.Sprintf("https://127.0.0.1:%d", freePort(t)))
	pu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", freePort(t)))
	ecfg.ListenClientUrls, ecfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	ecfg.ListenPeerUrls, ecfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	ecfg.InitialCluster = "tls=" + pu.String()
	ecfg.ClientTLSInfo = transport.TLSInfo{CertFile: certFile, KeyFile: keyFile}
	ecfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(newZapLogger(testLogger(t), false))
	srv, err := embed.StartEtcd(ecfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	select {
	case <-srv.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("TLS etcd not ready")
	}

	cfg := DefaultConfig()
	cfg.Endpoints = []string{cu.String()}
	cfg.CAFile = caFile
	ext := mustStart(t, cfg)
	if err := put(ctx, ext, "/test/tls", "ok"); err != nil {
		t.Fatal(err)
	}
	if err := ext.Health(ctx); err != nil {
		t.Fatal(err)
	}
	ms, err := ext.ClusterHealth(ctx)
	if err != nil || len(ms) != 1 || !ms[0].Healthy {
		t.Fatalf("ClusterHealth over TLS = %+v, %v", ms, err)
	}

	// Without the CA the self-signed server certificate is refused.
	cfg.CAFile = ""
	bad := mustStart(t, cfg)
	if err := bad.Health(ctx); err == nil {
		t.Fatal("Health passed without the CA")
	}
}

// writeTestCerts writes a CA and a server certificate for 127.0.0.1 signed
// by it.
func writeTestCerts(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "etcd"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	caCert, _ := x509.ParseCertificate(caDER)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", der), write("server-key.pem", "EC PRIVATE KEY", keyDER)
}

func TestClientTLSCAOnly(t *testing.T) {
	caFile, _, _ := writeTestCerts(t, t.TempDir())
	tc, err := ClientTLS(caFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if tc == nil || tc.RootCAs == nil || len(tc.Certificates) != 0 || tc.MinVersion != tls.VersionTLS12 {
		t.Fatalf("CA-only TLS config: %+v", tc)
	}
	if tc, err := ClientTLS("", "", ""); tc != nil || err != nil {
		t.Fatalf("no TLS files: %v, %v", tc, err)
	}
	if _, err := ClientTLS("", "cert.pem", ""); err == nil {
		t.Fatal("a certificate without a key was accepted")
	}
}

func TestValidate(t *testing.T) {
	base := DefaultConfig()
	base.DataDir = "/tmp/x"
	three := "a=http://127.0.0.1:2380,b=http://127.0.0.1:12380,c=http://127.0.0.1:22380"
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string // "" = valid
	}{
		{"default", func(*Config) {}, ""},
		{"port0", func(c *Config) { c.ClientURL, c.PeerURL = "http://127.0.0.1:0", "http://127.0.0.1:0" }, ""},
		{"cluster", func(c *Config) { c.Name, c.InitialCluster = "a", three }, ""},
		{"existing", func(c *Config) { c.Name, c.InitialCluster, c.ClusterState = "a", three, "existing" }, ""},
		{"external", func(c *Config) { c.Endpoints = []string{"http://10.0.0.1:2379"} }, ""},
		{"external CA only", func(c *Config) { c.Endpoints, c.CAFile = []string{"https://e:2379"}, "ca.pem" }, ""},
		{"external cert only", func(c *Config) { c.Endpoints, c.CertFile, c.KeyFile = []string{"https://e:2379"}, "c.pem", "k.pem" }, ""},
		{"bad state", func(c *Config) { c.ClusterState = "joining" }, `initial cluster state "joining"`},
		{"name not in cluster", func(c *Config) { c.Name, c.InitialCluster = "d", three }, `does not contain this member's name "d"`},
		{"peer URL mismatch", func(c *Config) { c.Name, c.InitialCluster = "b", three }, "but its peer URL is"},
		{"existing alone", func(c *Config) { c.ClusterState = "existing" }, "needs the initial cluster"},
		{"port0 cluster", func(c *Config) { c.Name, c.InitialCluster, c.PeerURL = "a", three, "http://127.0.0.1:0" }, "port 0 only works for a single member"},
		{"endpoints and cluster", func(c *Config) { c.Endpoints, c.InitialCluster = []string{"http://e:2379"}, three }, "both given"},
		{"cert without key", func(c *Config) { c.Endpoints, c.CertFile = []string{"https://e:2379"}, "c.pem" }, "give both or neither"},
		{"TLS over http", func(c *Config) { c.Endpoints, c.CAFile = []string{"http://e:2379"}, "ca.pem" }, "use https://"},
		{"bad endpoint", func(c *Config) { c.Endpoints = []string{"e:2379"} }, "want http://HOST:PORT"},
		{"TLS embedded", func(c *Config) { c.CAFile = "ca.pem" }, "for an external etcd"},
		{"hostname", func(c *Config) { c.PeerURL = "http://node1:2380" }, "must be an IP address"},
		{"unspecified", func(c *Config) { c.ClientURL = "http://0.0.0.0:2379" }, "not 0.0.0.0"},
		{"https member", func(c *Config) { c.ClientURL = "https://127.0.0.1:2379" }, "only http://"},
		{"same URL", func(c *Config) { c.PeerURL = c.ClientURL }, "must differ"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "data dir not set"},
		{"negative retention", func(c *Config) { c.AutoCompactionRetention = -time.Hour }, "must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.mod(&cfg)
			err := cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestStartRefusesBadConfigBeforeTouchingDisk(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etcd")
	cfg := singleConfig(dir)
	cfg.ClusterState = "bogus"
	if _, err := Start(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Fatal("Start accepted a bad cluster state")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("data dir created for a refused config: %v", err)
	}
}
