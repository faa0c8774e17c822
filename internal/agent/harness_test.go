package agent_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla/flotilla/internal/agent"
	"github.com/flotilla/flotilla/internal/gpt"
	"github.com/flotilla/flotilla/internal/payload"
	"github.com/flotilla/flotilla/internal/server"
	"github.com/flotilla/flotilla/internal/servertest"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/omaha"
)

const (
	slotSize  = 8 << 20
	imageSize = 3<<20 + 12345 // not a multiple of the sector size, on purpose
)

// env is a real flotilla server on loopback (SQLite in a temp dir), a real
// file server for payloads, and a signing key whose public half the
// machines trust.
type env struct {
	t        *testing.T
	srv      *server.Server
	omahaURL string
	files    *httptest.Server
	fileDir  string
	keyDir   string
	priv     ed25519.PrivateKey
	// hits counts payload requests and Range requests (resumes).
	mu          sync.Mutex
	rangeHits   int
	payloadHits int
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, fileDir: t.TempDir(), keyDir: t.TempDir()}
	srv := servertest.Start(t).Server
	e.srv = srv
	e.omahaURL = "http://" + srv.Addr() + "/v1/update/"
	fs := http.FileServer(http.Dir(e.fileDir))
	e.files = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.payloadHits++
		if r.Header.Get("Range") != "" {
			e.rangeHits++
		}
		e.mu.Unlock()
		fs.ServeHTTP(w, r)
	}))
	t.Cleanup(e.files.Close)
	pub, priv, err := payload.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	e.priv = priv
	pem, err := payload.EncodePublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.keyDir, "release.pem"), pem, 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// testImage is deterministic content for a version: a /usr image stand-in.
func testImage(version string) []byte {
	r := rand.New(rand.NewPCG(uint64(len(version)), uint64(version[len(version)-1])))
	b := make([]byte, imageSize)
	for i := 0; i < len(b); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	// Compressible stretches, like a real file system.
	copy(b[100_000:], bytes.Repeat([]byte(version), 50_000))
	return b
}

type published struct {
	version string
	file    string
	size    int64
	sha256  []byte
	image   []byte
}

// buildPayload builds (and, with a key, signs) a payload for version.
func (e *env) buildPayload(version string, priv ed25519.PrivateKey) published {
	e.t.Helper()
	img := testImage(version)
	imgPath := filepath.Join(e.t.TempDir(), "usr.img")
	if err := os.WriteFile(imgPath, img, 0o644); err != nil {
		e.t.Fatal(err)
	}
	name := "flotilla_update_" + version + ".payload"
	out := filepath.Join(e.fileDir, name)
	if _, err := payload.Build(context.Background(), out, imgPath, payload.BuildOptions{Version: version, Compression: "zstd"}); err != nil {
		e.t.Fatal(err)
	}
	if priv != nil {
		if err := payload.Sign(context.Background(), out, priv); err != nil {
			e.t.Fatal(err)
		}
	}
	b, err := os.ReadFile(out)
	if err != nil {
		e.t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return published{version: version, file: name, size: int64(len(b)), sha256: sum[:], image: img}
}

// announce registers the package with the server and points the stable
// channel at it, which starts the rollout.
func (e *env) announce(p published) {
	e.t.Helper()
	ctx := context.Background()
	svc := e.srv.Service()
	if err := svc.CreatePackage(ctx, store.Package{
		AppID: omaha.FlatcarAppID, Version: p.version, Arch: "amd64", BaseURL: e.files.URL + "/",
		FileName: p.file, Size: p.size, SHA256: base64.StdEncoding.EncodeToString(p.sha256),
	}); err != nil {
		e.t.Fatal(err)
	}
	if err := svc.SetChannelPackage(ctx, omaha.FlatcarAppID, "stable", p.version); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) publish(version string) published {
	p := e.buildPayload(version, e.priv)
	e.announce(p)
	return p
}

func (e *env) instance(machineID string) store.Instance {
	e.t.Helper()
	in, err := e.srv.Store().GetInstance(context.Background(), omaha.FlatcarAppID, machineID)
	if err != nil {
		e.t.Fatalf("instance %s: %v", machineID, err)
	}
	return in
}

// waitInstance polls the server until the machine's record satisfies ok.
func (e *env) waitInstance(machineID string, what string, ok func(store.Instance) bool) store.Instance {
	e.t.Helper()
	var last store.Instance
	err := poll(30*time.Second, func() bool {
		in, err := e.srv.Store().GetInstance(context.Background(), omaha.FlatcarAppID, machineID)
		last = in
		return err == nil && ok(in)
	})
	if err != nil {
		e.t.Fatalf("server never showed %s for %s; last: %+v", what, machineID, last)
	}
	return last
}

// machine is one simulated host: a disk image file with the CoreOS
// layout, a data dir, and the real agent. A reboot is simulated: stop the
// agent, run the bootloader's choice on the disk, new boot id, start again.
type machine struct {
	t       *testing.T
	e       *env
	id      string
	dir     string
	disk    string
	bootID  string
	booted  string
	tweak   func(*agent.Config)
	a       *agent.Agent
	cancel  context.CancelFunc
	done    chan error
	log     *syncBuf
	reboots chan string
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newMachine(t *testing.T, e *env, tweak func(*agent.Config)) *machine {
	t.Helper()
	dir := t.TempDir()
	m := &machine{
		t: t, e: e, id: fmt.Sprintf("%032x", rand.Uint64()), dir: dir, disk: filepath.Join(dir, "disk.img"),
		bootID: uuid.NewString(), tweak: tweak, log: &syncBuf{}, reboots: make(chan string, 4),
	}
	if err := gpt.CreateImage(m.disk, gpt.ImageOptions{Size: 128 << 20, USRSize: slotSize, ESPSize: 4 << 20, OEMSize: 4 << 20}); err != nil {
		t.Fatal(err)
	}
	// USR-A holds the image of the version the machine runs.
	m.writeSlot(gpt.LabelUSRA, testImage("1.0.0"))
	m.booted = gpt.USRAGUID.String()
	conf := "SERVER=" + e.omahaURL + "\nGROUP=stable\nMACHINE_ALIAS=\"" + m.id[:6] + "\"\n"
	if err := os.WriteFile(filepath.Join(dir, "update.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.stop()
		if t.Failed() {
			t.Logf("agent log of %s:\n%s", m.id, m.log.String())
		}
	})
	return m
}

// openDisk opens the machine's disk image and reads its GPT.
func (m *machine) openDisk(readOnly bool) (*gpt.Disk, *gpt.Table) {
	m.t.Helper()
	open := gpt.Open
	if readOnly {
		open = gpt.OpenReadOnly
	}
	d, err := open(m.disk)
	if err != nil {
		m.t.Fatal(err)
	}
	tb, err := d.Table()
	if err != nil {
		d.Close()
		m.t.Fatal(err)
	}
	return d, tb
}

func (m *machine) writeSlot(label string, img []byte) {
	m.t.Helper()
	d, tb := m.openDisk(false)
	defer d.Close()
	p, err := gpt.FindSlot(tb, label)
	if err != nil {
		m.t.Fatal(err)
	}
	if _, err := d.PartitionWriter(p).WriteAt(img, 0); err != nil {
		m.t.Fatal(err)
	}
}

func (m *machine) config() agent.Config {
	cfg := agent.DefaultConfig()
	cfg.DataDir = filepath.Join(m.dir, "agent")
	cfg.UpdateConfPaths = []string{filepath.Join(m.dir, "update.conf")}
	cfg.MachineID = m.id
	cfg.BootID = m.bootID
	cfg.BootedPartUUID = m.booted
	cfg.OSVersion = "1.0.0"
	cfg.Disk = m.disk
	cfg.PayloadKeyPaths = []string{m.e.keyDir}
	cfg.InitialDelay = 0
	cfg.CheckInterval = time.Hour
	start := time.Now()
	cfg.Health = agent.HealthConfig{MinUptime: 0, Timeout: time.Hour, Interval: 20 * time.Millisecond,
		Uptime: func() time.Duration { return time.Since(start) }}
	cfg.RebootRequiredFile = filepath.Join(m.dir, "reboot-required")
	cfg.Rebooter = rebootFunc(func(reason string) {
		select {
		case m.reboots <- reason:
		default:
		}
	})
	cfg.Rand = func() float64 { return 0.5 }
	if m.tweak != nil {
		m.tweak(&cfg)
	}
	return cfg
}

type rebootFunc func(reason string)

func (f rebootFunc) Reboot(_ context.Context, reason string) error { f(reason); return nil }

func (m *machine) start() {
	m.t.Helper()
	a, err := agent.New(m.config(), slog.New(slog.NewTextHandler(m.log, &slog.HandlerOptions{Level: slog.LevelDebug})), prometheus.NewRegistry())
	if err != nil {
		m.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.a, m.cancel, m.done = a, cancel, make(chan error, 1)
	go func() { m.done <- a.Run(ctx) }()
}

func (m *machine) stop() {
	if m.cancel == nil {
		return
	}
	m.cancel()
	if err := <-m.done; err != nil {
		m.t.Errorf("agent run: %v", err)
	}
	m.cancel = nil
}

// reboot simulates a reboot: the bootloader's gptprio choice on the disk
// (which decrements tries and writes the GPT), a new boot id, a new agent.
func (m *machine) reboot() gpt.Partition {
	m.t.Helper()
	m.stop()
	d, tb := m.openDisk(false)
	p, changed, err := gpt.BootNext(tb)
	if err != nil {
		m.t.Fatal(err)
	}
	if changed {
		if err := d.Commit(tb); err != nil {
			m.t.Fatal(err)
		}
	}
	d.Close()
	m.booted = p.GUID.String()
	m.bootID = uuid.NewString()
	m.start()
	return p
}

// waitReboot waits until the agent asks for a reboot.
func (m *machine) waitReboot() string {
	m.t.Helper()
	select {
	case r := <-m.reboots:
		return r
	case <-time.After(30 * time.Second):
		m.t.Fatalf("agent never asked to reboot; status %+v", m.a.Status())
		return ""
	}
}

func (m *machine) waitStatus(what string, ok func(agent.StatusReport) bool) agent.StatusReport {
	m.t.Helper()
	var last agent.StatusReport
	if err := poll(30*time.Second, func() bool { last = m.a.Status(); return ok(last) }); err != nil {
		m.t.Fatalf("agent never reached %s; last status %+v", what, last)
	}
	return last
}

func (m *machine) slots() (a, b gpt.Partition) {
	m.t.Helper()
	d, tb := m.openDisk(true)
	defer d.Close()
	a, b, err := gpt.FindUSR(tb)
	if err != nil {
		m.t.Fatal(err)
	}
	return a, b
}

// slotContent returns the first n bytes of a slot.
func (m *machine) slotContent(label string, n int) []byte {
	m.t.Helper()
	d, tb := m.openDisk(true)
	defer d.Close()
	p, err := gpt.FindSlot(tb, label)
	if err != nil {
		m.t.Fatal(err)
	}
	b := make([]byte, n)
	if _, err := d.PartitionReader(p).ReadAt(b, 0); err != nil {
		m.t.Fatal(err)
	}
	return b
}

// gptBytes returns both GPT copies (first and last 34 sectors) raw, to
// prove a failed update changed nothing.
func (m *machine) gptBytes() []byte {
	m.t.Helper()
	f, err := os.Open(m.disk)
	if err != nil {
		m.t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		m.t.Fatal(err)
	}
	head, tail := make([]byte, 34*512), make([]byte, 33*512)
	if _, err := f.ReadAt(head, 0); err != nil {
		m.t.Fatal(err)
	}
	if _, err := f.ReadAt(tail, fi.Size()-int64(len(tail))); err != nil {
		m.t.Fatal(err)
	}
	return append(head, tail...)
}

func attrs(p gpt.Partition) string {
	return fmt.Sprintf("prio=%d tries=%d succ=%t", p.Attributes.Priority(), p.Attributes.Tries(), p.Attributes.Successful())
}

// poll calls ok until it returns true or the deadline passes.
func poll(limit time.Duration, ok func() bool) error {
	deadline := time.Now().Add(limit)
	for {
		if ok() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("condition not met within %s", limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func fileSHA256(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return s[:]
}

func mustKey(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := payload.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

// trigger asks for an on-demand check, waiting until the agent is idle
// (like update_engine's AttemptUpdate, a check starts only then: the
// server may have answered the previous one before the agent finished
// handling it).
func (m *machine) trigger() {
	m.t.Helper()
	if err := poll(30*time.Second, m.a.TriggerCheck); err != nil {
		m.t.Fatalf("the agent never became idle to take an on-demand check; status %+v", m.a.Status())
	}
}
