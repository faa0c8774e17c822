package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	v1 "github.com/flotilla/flotilla/api/v1"
	"github.com/flotilla/flotilla/internal/gpt"
)

const e2eImageSize = 6<<20 + 4321

// fleetEnv is a flotilla server process, a payload file server, a release
// key made with `flotilla payload keygen`, and the images per version.
type fleetEnv struct {
	t       testing.TB
	srv     *serverProc
	files   *httptest.Server
	fileDir string
	keyDir  string
	privKey string
	ranges  atomic.Int64
}

func newFleetEnv(t testing.TB) *fleetEnv {
	t.Helper()
	e := &fleetEnv{t: t, srv: startServer(t, t.TempDir()), fileDir: t.TempDir(), keyDir: t.TempDir()}
	fs := http.FileServer(http.Dir(e.fileDir))
	e.files = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") != "" {
			e.ranges.Add(1)
		}
		fs.ServeHTTP(w, r)
	}))
	t.Cleanup(e.files.Close)
	e.privKey = filepath.Join(t.TempDir(), "release.key")
	run(t, "payload", "keygen", "--private", e.privKey, "--public", filepath.Join(e.keyDir, "release.pem"))
	return e
}

// run executes the flotilla binary and returns its stdout.
func run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := runErr(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// runErr is run without failing the test (usable from goroutines).
func runErr(t testing.TB, args ...string) (string, error) {
	out, err := exec.Command(flotillaBinary(t), args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), fmt.Errorf("flotilla %s: %v\n%s", strings.Join(args, " "), err, ee.Stderr)
		}
		return string(out), fmt.Errorf("flotilla %s: %v", strings.Join(args, " "), err)
	}
	return string(out), nil
}

func e2eImage(version string) []byte {
	r := rand.New(rand.NewPCG(7, uint64(len(version))*31+uint64(version[len(version)-1])))
	b := make([]byte, e2eImageSize)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// publish builds and signs a payload with the CLI, and rolls it out to
// the stable group.
func (e *fleetEnv) publish(version string) {
	t := e.t
	t.Helper()
	img := filepath.Join(t.TempDir(), "usr.img")
	if err := os.WriteFile(img, e2eImage(version), 0o644); err != nil {
		t.Fatal(err)
	}
	name := "update-" + version + ".payload"
	out := filepath.Join(e.fileDir, name)
	run(t, "payload", "build", "--image", img, "--version", version, "--out", out)
	run(t, "payload", "sign", "--key", e.privKey, out)
	run(t, "payload", "verify", "--keys", e.keyDir, out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	e.srv.cli(t, "package", "create", "--app", appID, "--version", version, "--url", e.files.URL+"/",
		"--file", name, "--size", fmt.Sprint(len(b)), "--sha256", hex.EncodeToString(sum[:]))
	e.srv.cli(t, "channel", "set-package", "--app", appID, "--name", "stable", "--package", version)
}

// host is a machine simulated with processes: a disk image made by
// `flotilla disk init`, and `flotilla agent` restarted on every simulated
// reboot after `flotilla boot select` chose the slot.
type host struct {
	e      *fleetEnv
	id     string
	dir    string
	disk   string
	bootID string
	booted string
	cmd    *exec.Cmd
	log    *syncBuffer
	done   chan error
	// extra agent flags (reboot strategy, lock endpoints…)
	extra []string
}

func newHost(t testing.TB, e *fleetEnv) *host {
	t.Helper()
	dir := t.TempDir()
	h := &host{e: e, id: strings.ReplaceAll(uuid.NewString(), "-", ""), dir: dir, disk: filepath.Join(dir, "disk.img"), bootID: uuid.NewString()}
	run(t, "disk", "init", h.disk, "--size", "160MiB", "--usr-size", "8MiB", "--esp-size", "4MiB", "--oem-size", "4MiB")
	d, err := gpt.Open(h.disk)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := d.Table()
	if err != nil {
		t.Fatal(err)
	}
	a, err := gpt.FindSlot(tb, gpt.LabelUSRA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.PartitionWriter(a).WriteAt(e2eImage("1.0.0"), 0); err != nil {
		t.Fatal(err)
	}
	d.Close()
	h.booted = gpt.USRAGUID.String()
	conf := fmt.Sprintf("SERVER=%s/v1/update/\nGROUP=stable\n", e.srv.url)
	if err := os.WriteFile(filepath.Join(dir, "update.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.kill()
		if t.Failed() && h.log != nil {
			t.Logf("agent log of %s:\n%s", h.id, h.log.String())
		}
	})
	return h
}

func (h *host) socket() string { return filepath.Join(h.dir, "agent.sock") }

func (h *host) start(t testing.TB, env ...string) {
	t.Helper()
	cmd := exec.Command(flotillaBinary(t), "agent",
		"--data-dir", filepath.Join(h.dir, "agent"), "--socket", h.socket(),
		"--update-conf", filepath.Join(h.dir, "update.conf"),
		"--machine-id", h.id, "--boot-id", h.bootID, "--booted-partuuid", h.booted, "--os-version", "1.0.0",
		"--disk", h.disk, "--payload-keys", h.e.keyDir,
		"--initial-delay", "0s", "--health-min-uptime", "0s", "--health-interval", "100ms",
		"--reboot-command", "touch "+filepath.Join(h.dir, "reboot-requested"),
		"--reboot-required-file", filepath.Join(h.dir, "reboot-required"), "--log-level", "debug")
	cmd.Args = append(cmd.Args, h.extra...)
	cmd.Env = append(os.Environ(), env...)
	if h.log == nil {
		h.log = &syncBuffer{}
	}
	cmd.Stdout, cmd.Stderr = h.log, h.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h.cmd, h.done = cmd, make(chan error, 1)
	go func() { h.done <- cmd.Wait() }()
}

func (h *host) kill() {
	if h.cmd == nil {
		return
	}
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
		_ = h.cmd.Process.Kill()
		<-h.done
	}
	h.cmd = nil
}

// waitExit waits for the agent process to end on its own and returns how.
func (h *host) waitExit(t testing.TB) *os.ProcessState {
	t.Helper()
	select {
	case <-h.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("agent did not exit; log:\n%s", h.log.String())
	}
	st := h.cmd.ProcessState
	h.cmd = nil
	return st
}

// waitRebootRequest waits until the agent ran its reboot command.
func (h *host) waitRebootRequest(t testing.TB) {
	t.Helper()
	marker := filepath.Join(h.dir, "reboot-requested")
	if err := pollFor(60*time.Second, func() bool { _, err := os.Stat(marker); return err == nil }); err != nil {
		t.Fatalf("host %s never asked to reboot; log:\n%s", h.id, h.log.String())
	}
	os.Remove(marker)
}

// reboot stops the agent, lets `flotilla boot select` pick and count down
// the slot, and starts the agent in the new boot.
func (h *host) reboot(t testing.TB) string {
	t.Helper()
	h.kill()
	f := strings.Fields(run(t, "boot", "select", "--disk", h.disk))
	if len(f) != 2 {
		t.Fatalf("boot select printed %q", f)
	}
	h.booted, h.bootID = f[1], uuid.NewString()
	h.start(t)
	return f[0]
}

// bootableVerified is what the bootloader would pick now (without
// changing the disk), checked to hold a complete image of a version.
func (h *host) bootableVerified(t testing.TB, versions map[string]string) string {
	t.Helper()
	d, err := gpt.OpenReadOnly(h.disk)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tb, err := d.Table()
	if err != nil {
		t.Fatal(err)
	}
	p, ok := gpt.SelectBoot(tb.Partitions)
	if !ok {
		t.Fatal("no bootable slot")
	}
	want := e2eImage(versions[p.Name])
	got := make([]byte, len(want))
	if _, err := d.PartitionReader(p).ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("the bootable slot %s does not hold the %s image", p.Name, versions[p.Name])
	}
	return p.Name
}

func pollFor(limit time.Duration, ok func() bool) error {
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// TestAgentCrashAtEveryStep kills the agent (SIGKILL, at a reproducible
// point) during the download, during the slot write, just before and just
// after the GPT commit. After each kill the bootloader's choice is a
// bootable slot holding a complete, verified image, and a restarted agent
// finishes the update.
func TestAgentCrashAtEveryStep(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test builds and runs the binary; skipped with -short")
	}
	e := newFleetEnv(t)
	e.publish("1.1.0")
	for _, tc := range []struct {
		point     string
		bootAfter string // slot the bootloader picks right after the crash
	}{
		{"download", gpt.LabelUSRA},
		{"write", gpt.LabelUSRA},
		{"before-commit", gpt.LabelUSRA},
		{"after-commit", gpt.LabelUSRB},
	} {
		t.Run(tc.point, func(t *testing.T) {
			h := newHost(t, e)
			rangesBefore := e.ranges.Load()
			h.start(t, "FLOTILLA_AGENT_CRASH_POINT="+tc.point)
			st := h.waitExit(t)
			if ws, ok := st.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("agent ended with %v, want killed at %s; log:\n%s", st, tc.point, h.log.String())
			}
			versions := map[string]string{gpt.LabelUSRA: "1.0.0", gpt.LabelUSRB: "1.1.0"}
			if got := h.bootableVerified(t, versions); got != tc.bootAfter {
				t.Fatalf("after a crash at %s the bootloader would pick %s, want %s", tc.point, got, tc.bootAfter)
			}
			h.start(t)
			h.waitRebootRequest(t)
			if tc.point == "download" && e.ranges.Load() == rangesBefore {
				t.Fatal("the restarted agent downloaded from scratch instead of resuming with a Range request")
			}
			out := run(t, "agent", "status", "--socket", h.socket())
			if !strings.Contains(out, "CURRENT_OP=UPDATE_STATUS_UPDATED_NEED_REBOOT\n") || !strings.Contains(out, "NEW_VERSION=1.1.0\n") {
				t.Fatalf("agent status after recovery:\n%s", out)
			}
			if got := h.bootableVerified(t, versions); got != gpt.LabelUSRB {
				t.Fatalf("after recovery the bootloader would pick %s", got)
			}
			if slot := h.reboot(t); slot != gpt.LabelUSRB {
				t.Fatalf("boot select chose %s", slot)
			}
			waitInstanceStatus(t, e.srv, h.id, "complete", "1.1.0")
		})
	}
}

// waitInstanceStatus polls the server's record of a machine.
func waitInstanceStatus(t testing.TB, p *serverProc, machineID, status, version string) {
	t.Helper()
	var in v1.Instance
	err := pollFor(60*time.Second, func() bool {
		out, err := p.cliErr("instance", "show", "--app", appID, machineID, "-o", "json")
		if err != nil {
			return false
		}
		in = v1.Instance{}
		return json.Unmarshal([]byte(out), &in) == nil && in.Status == status && in.Version == version
	})
	if err != nil {
		t.Fatalf("server never showed %s %s for %s; last %+v", status, version, machineID, in)
	}
}

// TestFleetUpdatesWithAgentProcesses: a server and five agent processes,
// each with its own disk image and data dir, update 1.0.0 → 1.1.0 with
// simulated reboots; the server shows all five complete.
func TestFleetUpdatesWithAgentProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test builds and runs the binary; skipped with -short")
	}
	e := newFleetEnv(t)
	hosts := make([]*host, 5)
	for i := range hosts {
		hosts[i] = newHost(t, e)
		hosts[i].start(t)
	}
	for _, h := range hosts {
		waitInstanceStatus(t, e.srv, h.id, "idle", "1.0.0")
	}
	e.publish("1.1.0")
	// Each operator-triggered check (update_engine_client -check_for_update)
	// starts the update at once instead of after the 45-minute interval.
	for _, h := range hosts {
		h.check(t)
	}
	for i, h := range hosts {
		h.waitRebootRequest(t)
		if s := h.reboot(t); s != gpt.LabelUSRB {
			t.Fatalf("host %d booted %s", i, s)
		}
	}
	var st v1.GroupStatus
	if err := pollFor(60*time.Second, func() bool {
		st = v1.GroupStatus{}
		out, err := e.srv.cliErr("group", "status", "--app", appID, "--name", "stable", "-o", "json")
		return err == nil && json.Unmarshal([]byte(out), &st) == nil && st.ByStatus["complete"] == 5
	}); err != nil {
		t.Fatalf("group status: %+v", st)
	}
	if st.ByVersion["1.1.0"] != 5 || st.Total != 5 {
		t.Fatalf("group status: %+v", st)
	}
	for _, h := range hosts {
		out := run(t, "agent", "status", "--socket", h.socket(), "-o", "json")
		if !strings.Contains(out, `"boot_healthy": true`) || !strings.Contains(out, `"current_version": "1.1.0"`) {
			t.Fatalf("agent status of %s:\n%s", h.id, out)
		}
	}
}

// check runs `flotilla agent check` until the agent takes it: a check
// starts only while the agent is idle, and the server may have recorded
// the previous check before the agent finished handling its answer.
func (h *host) check(t testing.TB) {
	t.Helper()
	var out string
	if err := pollFor(30*time.Second, func() bool {
		out, _ = runErr(t, "agent", "check", "--socket", h.socket())
		return strings.Contains(out, "update check started")
	}); err != nil {
		t.Fatalf("agent check never started: %s", out)
	}
}
