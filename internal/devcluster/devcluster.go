// Package devcluster is `flotilla dev`: a whole cluster rolling out an
// update in one process. It starts a real flotilla server on embedded
// defaults (SQLite and an embedded etcd member in a data dir) and N
// simulated machines, each running the real agent against its own disk
// image file and data dir, with a simulated reboot (gptprio boot selection
// on the disk, a new boot id, the agent started again). It then builds and
// signs a demo payload, publishes it and rolls it out under a demo policy,
// printing what happens until the rollout completes or the group pauses
// itself after a failure.
//
// The only things simulated are the ones at the OS boundary: the reboot
// itself, the disks (image files) and the health of the demo application
// (a systemd unit state). Everything between — Omaha, the rollout policy,
// payload signatures, A/B slots, FleetLock over HTTP, the reboot semaphore
// in etcd, the store — is the production code.
package devcluster

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"github.com/flotilla/flotilla/internal/payload"
	"github.com/flotilla/flotilla/internal/rollout"
	"github.com/flotilla/flotilla/internal/server"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/updatesvc"
	"github.com/flotilla/flotilla/omaha"
)

const (
	demoGroup     = "stable"
	demoLockGroup = "default"
	imageSize     = 1 << 20
)

// Options configure a dev cluster. Zero fields take Defaults' values.
type Options struct {
	// DataDir holds the server's data (server/), the payloads, the
	// machines' disks and data dirs (machines/) and the logs.
	DataDir string
	// Listen is the server's HTTP address.
	Listen string
	// Machines is how many machines to simulate.
	Machines int
	// MaxReboots is how many machines may reboot at once (the reboot
	// group's limit).
	MaxReboots int
	// Fail is how many machines fail their health gate on the new version.
	Fail int
	// FromVersion is what the machines run; ToVersion is rolled out.
	FromVersion, ToVersion string
	// Ramp is how long the rollout takes to go from RampStart percent of
	// the machines to all of them.
	Ramp      time.Duration
	RampStart float64
	// CheckInterval is the agents' update-check interval (±1/9 jitter).
	CheckInterval time.Duration
	// MinUptime and HealthTimeout are the agents' health gate.
	MinUptime, HealthTimeout time.Duration
	// RebootTime is how long a simulated reboot keeps a machine down.
	RebootTime time.Duration
	// Timeout bounds how long Run waits for the outcome when ExitWhenDone.
	Timeout      time.Duration
	ExitWhenDone bool
	// Out receives the human-readable progress.
	Out io.Writer
	// Log receives the server's and agents' logs.
	Log io.Writer
}

// Defaults make the demo finish in about a minute on a laptop.
func Defaults() Options {
	return Options{
		Listen:        "127.0.0.1:8080",
		Machines:      10,
		MaxReboots:    2,
		FromVersion:   "1.0.0",
		ToVersion:     "1.0.1",
		Ramp:          40 * time.Second,
		RampStart:     10,
		CheckInterval: 4 * time.Second,
		MinUptime:     2 * time.Second,
		HealthTimeout: 8 * time.Second,
		RebootTime:    time.Second,
		Timeout:       5 * time.Minute,
		Out:           io.Discard,
		Log:           io.Discard,
	}
}

func (o Options) withDefaults() Options {
	d := Defaults()
	if o.Listen == "" {
		o.Listen = d.Listen
	}
	if o.FromVersion == "" {
		o.FromVersion = d.FromVersion
	}
	if o.ToVersion == "" {
		o.ToVersion = d.ToVersion
	}
	for _, f := range []struct{ v, d *time.Duration }{
		{&o.Ramp, &d.Ramp}, {&o.CheckInterval, &d.CheckInterval}, {&o.MinUptime, &d.MinUptime},
		{&o.HealthTimeout, &d.HealthTimeout}, {&o.RebootTime, &d.RebootTime}, {&o.Timeout, &d.Timeout},
	} {
		if *f.v <= 0 {
			*f.v = *f.d
		}
	}
	if o.RampStart <= 0 {
		o.RampStart = d.RampStart
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return o
}

// Validate reports options that cannot work.
func (o Options) Validate() error {
	switch {
	case o.DataDir == "":
		return errors.New("no data directory")
	case o.Machines < 1 || o.Machines > 5000:
		return fmt.Errorf("--machines %d: want 1 to 5000", o.Machines)
	case o.MaxReboots < 1:
		return fmt.Errorf("--max-reboots %d: want at least 1", o.MaxReboots)
	case o.Fail < 0 || o.Fail > o.Machines:
		return fmt.Errorf("--fail %d: want 0 to the number of machines (%d)", o.Fail, o.Machines)
	case updatesvc.CompareVersions(o.ToVersion, o.FromVersion) <= 0:
		return fmt.Errorf("version %s is not newer than %s", o.ToVersion, o.FromVersion)
	}
	return nil
}

// Result is how a dev run ended.
type Result struct {
	Outcome Outcome
	Elapsed time.Duration // from the start of the rollout
	Report  Report
}

// cluster is one running dev cluster.
type cluster struct {
	opts       Options
	srv        *server.Server
	url        string
	keyDir     string
	payloadDir string
	oldImage   []byte
	http       *http.Client
	lockHTTP   *http.Client
	agentLog   *slog.Logger
	machines   []*machine

	outMu sync.Mutex
	start time.Time
}

// Run starts the cluster, rolls the new version out and reports progress
// on o.Out. With ExitWhenDone it returns once the outcome is known (or
// o.Timeout passed); otherwise it keeps everything running until ctx ends,
// so the dashboard can be explored.
func Run(ctx context.Context, o Options) (Result, error) {
	o = o.withDefaults()
	if err := o.Validate(); err != nil {
		return Result{}, fmt.Errorf("dev: %w", err)
	}
	c := &cluster{opts: o, keyDir: filepath.Join(o.DataDir, "keys")}
	c.http, c.lockHTTP = sharedClients()
	logger := slog.New(slog.NewTextHandler(o.Log, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c.agentLog = logger.With("component", "agent")

	cfg := server.DefaultConfig()
	cfg.DataDir = filepath.Join(o.DataDir, "server")
	cfg.Listen = o.Listen
	// The demo's data are thrown away; a crash of the process loses
	// nothing with NORMAL either.
	cfg.SQLiteSync = "NORMAL"
	cfg.PayloadDir = filepath.Join(o.DataDir, "payloads")
	c.payloadDir = cfg.PayloadDir
	// Free ports, so the demo runs beside a real server on 2379/2380.
	cfg.Etcd.ClientURL, cfg.Etcd.PeerURL = "http://127.0.0.1:0", "http://127.0.0.1:0"
	cfg.Update.SweepInterval = 2 * time.Second
	cfg.Update.SampleInterval = 2 * time.Second
	for _, d := range []string{cfg.PayloadDir, c.keyDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return Result{}, fmt.Errorf("dev: %w", err)
		}
	}
	srv, err := server.New(ctx, cfg, logger.With("component", "server"))
	if err != nil {
		return Result{}, fmt.Errorf("dev: start server: %w", err)
	}
	c.srv, c.url = srv, "http://"+srv.Addr()

	sctx, stopServer := context.WithCancel(context.WithoutCancel(ctx))
	serverDone := make(chan error, 1)
	go func() { serverDone <- srv.Run(sctx) }()
	defer func() {
		stopServer()
		<-serverDone
	}()

	c.printf("flotilla dev: a server and %d simulated machines in %s\n", o.Machines, o.DataDir)
	c.printf("  dashboard  %s/   (sign in with the token below)\n", c.url)
	if srv.AdminToken != "" {
		c.printf("  token      %s\n", srv.AdminToken)
	} else {
		c.printf("  token      in %s\n", filepath.Join(cfg.DataDir, "admin.token"))
	}
	c.printf("  CLI        export FLOTILLA_SERVER=%s FLOTILLA_DATA_DIR=%s\n", c.url, cfg.DataDir)
	c.printf("\n")

	pkg, err := c.preparePayload(ctx)
	if err != nil {
		return Result{}, err
	}
	if err := c.preparePolicy(ctx); err != nil {
		return Result{}, err
	}
	if err := c.createMachines(); err != nil {
		return Result{}, err
	}

	mctx, stopMachines := context.WithCancel(context.WithoutCancel(ctx))
	var machines errgroup.Group
	for _, m := range c.machines {
		// Spread the first checks over one interval, as machines booted at
		// different times would.
		delay := time.Duration(rand.Int64N(int64(o.CheckInterval)))
		machines.Go(func() error { return m.run(mctx, delay) })
	}
	defer func() {
		stopMachines()
		if err := machines.Wait(); err != nil {
			c.printf("machine error: %v\n", err)
		}
	}()

	res, err := c.rollOut(ctx, pkg)
	if err != nil || !o.ExitWhenDone || ctx.Err() != nil {
		if err == nil && !o.ExitWhenDone && ctx.Err() == nil {
			c.printf("\nThe cluster keeps running; open the dashboard, or press Ctrl-C to stop.\n")
			<-ctx.Done()
		}
		return res, err
	}
	return res, nil
}

func (c *cluster) printf(format string, a ...any) {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	fmt.Fprintf(c.opts.Out, format, a...)
}

// event prints one line about one machine.
func (c *cluster) event(m *machine, kind, msg string) {
	c.printf("%s  %-8s %-7s %s\n", c.clock(), m.alias, kind, msg)
}

func (c *cluster) clock() string {
	if c.start.IsZero() {
		return "  --   "
	}
	d := time.Since(c.start).Truncate(100 * time.Millisecond)
	return fmt.Sprintf("%6.1fs", d.Seconds())
}

// image returns deterministic content for a version: each release has its
// own bytes, so a slot's content tells which version it holds.
func image(version string) []byte {
	r := rand.New(rand.NewPCG(0xf107, uint64(len(version))))
	for _, ch := range version {
		r = rand.New(rand.NewPCG(r.Uint64(), uint64(ch)))
	}
	b := make([]byte, imageSize)
	for i := 0; i < len(b); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// preparePayload makes a signing key, builds and signs the payload of the
// new version into the server's payload dir, and registers the package.
func (c *cluster) preparePayload(ctx context.Context) (store.Package, error) {
	o := c.opts
	pub, priv, err := payload.GenerateKey()
	if err != nil {
		return store.Package{}, fmt.Errorf("dev: %w", err)
	}
	pem, err := payload.EncodePublicKey(pub)
	if err != nil {
		return store.Package{}, fmt.Errorf("dev: %w", err)
	}
	if err := os.WriteFile(filepath.Join(c.keyDir, "dev.pub"), pem, 0o644); err != nil {
		return store.Package{}, fmt.Errorf("dev: %w", err)
	}
	c.oldImage = image(o.FromVersion)
	imgPath := filepath.Join(o.DataDir, "usr-"+o.ToVersion+".img")
	if err := os.WriteFile(imgPath, image(o.ToVersion), 0o644); err != nil {
		return store.Package{}, fmt.Errorf("dev: %w", err)
	}
	name := "flotilla-usr-" + o.ToVersion + ".payload"
	out := filepath.Join(c.payloadDir, name)
	if _, err := payload.Build(ctx, out, imgPath, payload.BuildOptions{Version: o.ToVersion, Board: "amd64-usr"}); err != nil {
		return store.Package{}, fmt.Errorf("dev: build payload: %w", err)
	}
	if err := payload.Sign(ctx, out, ed25519.PrivateKey(priv)); err != nil {
		return store.Package{}, fmt.Errorf("dev: sign payload: %w", err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return store.Package{}, fmt.Errorf("dev: %w", err)
	}
	sum := sha256.Sum256(b)
	pkg := store.Package{
		AppID: omaha.FlatcarAppID, Version: o.ToVersion, Arch: "amd64", BaseURL: c.url + "/payloads",
		FileName: name, Size: int64(len(b)), SHA256: base64.StdEncoding.EncodeToString(sum[:]),
		ReleaseNotes: "flotilla dev demo release", CreatedAt: time.Now().UTC(),
	}
	if err := c.srv.Service().CreatePackage(ctx, pkg); err != nil && !errors.Is(err, store.ErrConflict) {
		return store.Package{}, fmt.Errorf("dev: create package: %w", err)
	}
	c.printf("built and signed %s (%d bytes, key %s)\n", name, len(b), payload.KeyID(pub))
	return pkg, nil
}

// preparePolicy sets the demo policy on the group and the reboot limit.
func (c *cluster) preparePolicy(ctx context.Context) error {
	o := c.opts
	p := store.DefaultPolicy()
	p.Paused = false
	p.RolloutPercent, p.RampDuration = o.RampStart, o.Ramp
	p.MaxUpdatesPerPeriod, p.MaxInProgress = 0, 0
	p.UpdateTimeout = 10 * time.Minute
	p.AutoPauseFailures = 1
	if err := rollout.ValidatePolicy(p); err != nil {
		return fmt.Errorf("dev: demo policy: %w", err)
	}
	if _, err := c.srv.Service().UpdateGroup(ctx, omaha.FlatcarAppID, demoGroup, updatesvc.GroupChange{Policy: &p, Actor: "flotilla dev"}); err != nil {
		return fmt.Errorf("dev: set policy: %w", err)
	}
	if err := c.srv.Locks().SetMax(ctx, demoLockGroup, o.MaxReboots); err != nil {
		return fmt.Errorf("dev: set reboot limit: %w", err)
	}
	c.printf("policy: group %q ramps from %s%% to 100%% over %s, pauses itself after 1 failure; at most %d machine(s) reboot at once\n",
		demoGroup, fmt.Sprint(o.RampStart), o.Ramp, o.MaxReboots)
	return nil
}

// createMachines makes the machines. The failing ones are those that the
// percentage ramp reaches first, so that the safety net shows early.
func (c *cluster) createMachines() error {
	o := c.opts
	ids := make([]string, o.Machines)
	for i := range ids {
		ids[i] = uuid.NewString()
		ids[i] = ids[i][:8] + ids[i][9:13] + ids[i][14:18] + ids[i][19:23] + ids[i][24:]
	}
	byBucket := slices.Clone(ids)
	slices.SortFunc(byBucket, func(a, b string) int {
		ba, bb := rollout.Bucket(a, o.ToVersion), rollout.Bucket(b, o.ToVersion)
		switch {
		case ba < bb:
			return -1
		case ba > bb:
			return 1
		}
		return 0
	})
	failing := map[string]bool{}
	for _, id := range byBucket[:o.Fail] {
		failing[id] = true
	}
	for i, id := range ids {
		m, err := newMachine(c, i, id, failing[id])
		if err != nil {
			return fmt.Errorf("dev: %w", err)
		}
		c.machines = append(c.machines, m)
	}
	return nil
}
