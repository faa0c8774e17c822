package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/flotilla/flotilla/api/v1"
	"github.com/flotilla/flotilla/omaha"
)

const appID = omaha.FlatcarAppID

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// flotillaBinary builds cmd/flotilla once per test process.
func flotillaBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "flotilla-e2e-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "flotilla")
		cmd := exec.Command("go", "build", "-o", binPath, "../../cmd/flotilla")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// serverProc is a running `flotilla server` process.
type serverProc struct {
	cmd     *exec.Cmd
	url     string
	dataDir string
	stdout  *syncBuffer
	done    chan error
	log     func() string

	addr chan string

	mu      sync.Mutex
	etcdURL string // client URL of its embedded etcd, from its log
}

func (p *serverProc) setEtcdURL(u string) {
	p.mu.Lock()
	p.etcdURL = u
	p.mu.Unlock()
}

// EtcdURL is the client URL of the server's embedded etcd.
func (p *serverProc) EtcdURL() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.etcdURL
}

// syncBuffer is a bytes.Buffer safe for the exec copier goroutine and the
// test reading it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var (
	listenRE = regexp.MustCompile(`addr=http://(127\.0\.0\.1:\d+)`)
	etcdRE   = regexp.MustCompile(`etcd listening.*client_url=(http://127\.0\.0\.1:\d+)`)
)

func startServer(t testing.TB, dataDir string, extra ...string) *serverProc {
	t.Helper()
	p := launchServer(t, dataDir, extra...)
	p.waitListening(t)
	return p
}

// launchServer starts a server process without waiting for it to listen
// (members of a new etcd cluster wait for each other before they do).
func launchServer(t testing.TB, dataDir string, extra ...string) *serverProc {
	t.Helper()
	bin := flotillaBinary(t)
	args := []string{"server", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--sqlite-sync", "NORMAL"}
	// The embedded member's flags are refused with an external etcd.
	if !slices.Contains(extra, "--etcd-endpoints") {
		args = append(args, "--etcd-client-url", "http://127.0.0.1:0", "--etcd-peer-url", "http://127.0.0.1:0")
	}
	args = append(args, extra...)
	cmd := exec.Command(bin, args...)
	stdout := &syncBuffer{}
	cmd.Stdout = stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serverProc{cmd: cmd, dataDir: dataDir, stdout: stdout, done: make(chan error, 1)}
	addr := make(chan string, 1)
	var logMu sync.Mutex
	var logBuf strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			logMu.Lock()
			logBuf.WriteString(line + "\n")
			logMu.Unlock()
			if m := etcdRE.FindStringSubmatch(line); m != nil {
				p.setEtcdURL(m[1])
			}
			if m := listenRE.FindStringSubmatch(line); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		p.done <- cmd.Wait()
	}()
	p.log = func() string {
		logMu.Lock()
		defer logMu.Unlock()
		return logBuf.String()
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			logMu.Lock()
			t.Logf("server log:\n%s", logBuf.String())
			logMu.Unlock()
		}
	})
	p.addr = addr
	return p
}

// waitListening waits until the server reports its HTTP address.
func (p *serverProc) waitListening(t testing.TB) {
	t.Helper()
	select {
	case a := <-p.addr:
		p.url = "http://" + a
	case err := <-p.done:
		t.Fatalf("server exited before listening: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("server did not report its address within 60s")
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *serverProc) stop(t testing.TB) {
	t.Helper()
	defer func(start time.Time) {
		if d := time.Since(start); d > time.Second {
			t.Logf("stop took %s (now %s); log:\n%s", d, time.Now().UTC().Format("15:04:05.000"), p.log())
		}
	}(time.Now())
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("server exited with %v after SIGTERM, want 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server did not stop within 30s of SIGTERM")
	}
}

// cli runs a flotilla client command against p and returns its stdout.
func (p *serverProc) cli(t testing.TB, args ...string) string {
	t.Helper()
	out, err := p.cliErr(args...)
	if err != nil {
		t.Fatalf("flotilla %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func (p *serverProc) cliErr(args ...string) (string, error) {
	cmd := exec.Command(binPath, append([]string{"--server", p.url, "--data-dir", p.dataDir}, args...)...)
	cmd.Env = append(os.Environ(), "FLOTILLA_TOKEN=")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%v: %s", err, errb.String())
	}
	return out.String(), nil
}

func (p *serverProc) cliJSON(t testing.TB, v any, args ...string) {
	t.Helper()
	out := p.cli(t, append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("flotilla %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// sim is a simulated update_engine machine.
type sim struct {
	c       *omaha.Client
	id      string
	track   string
	version string
	prev    string
}

func (m *sim) send(ctx context.Context, a omaha.App, source string) (omaha.ResponseApp, error) {
	a.AppID = "{" + appID + "}"
	a.Version, a.Track, a.MachineID, a.Board = m.version, m.track, m.id, "amd64-usr"
	a.BootID = "{5d0c1a9e-3f7b-4e2a-9c61-0b8f2a4d7e13}"
	req := &omaha.Request{Protocol: "3.0", Version: "update_engine-0.4.10", UpdaterVersion: "update_engine-0.4.10",
		InstallSource: source, IsMachine: 1, OS: &omaha.OS{Version: "Chateau", Platform: "CoreOS", ServicePack: m.version + "_x86_64"},
		Apps: []omaha.App{a}}
	resp, err := m.c.Send(ctx, req)
	if err != nil {
		return omaha.ResponseApp{}, err
	}
	if len(resp.Apps) != 1 {
		return omaha.ResponseApp{}, fmt.Errorf("%d apps in response", len(resp.Apps))
	}
	return resp.Apps[0], nil
}

// check sends an update check and returns the updatecheck status.
func (m *sim) check(ctx context.Context) (string, *omaha.UpdateCheckResponse, error) {
	prev := m.prev
	if prev == "" {
		prev = "0.0.0.0"
	}
	r, err := m.send(ctx, omaha.App{Ping: &omaha.Ping{Active: 1}, UpdateCheck: &omaha.UpdateCheck{},
		Events: []omaha.Event{{Type: 3, Result: 2, PreviousVersion: prev}}}, omaha.InstallSourceScheduler)
	if err != nil {
		return "", nil, err
	}
	m.prev = ""
	if r.Status != "ok" || r.UpdateCheck == nil {
		return "", nil, fmt.Errorf("app status %q, updatecheck %+v", r.Status, r.UpdateCheck)
	}
	return r.UpdateCheck.Status, r.UpdateCheck, nil
}

func (m *sim) event(ctx context.Context, ev omaha.Event) error {
	r, err := m.send(ctx, omaha.App{Events: []omaha.Event{ev}}, omaha.InstallSourceScheduler)
	if err == nil && (r.Status != "ok" || len(r.Events) != 1) {
		err = fmt.Errorf("event answer %+v", r)
	}
	return err
}

// update runs update_engine's whole sequence: check, download, install,
// reboot into the new version, check again.
func (m *sim) update(ctx context.Context) (bool, error) {
	st, uc, err := m.check(ctx)
	if err != nil || st != "ok" {
		return false, err
	}
	if err := uc.Validate(); err != nil {
		return false, fmt.Errorf("update response: %w", err)
	}
	for _, ev := range []omaha.Event{{Type: 13, Result: 1}, {Type: 14, Result: 1}, {Type: 3, Result: 1}} {
		if err := m.event(ctx, ev); err != nil {
			return false, err
		}
	}
	if _, err := m.send(ctx, omaha.App{Ping: &omaha.Ping{Active: 1}}, omaha.InstallSourceScheduler); err != nil {
		return false, err
	}
	m.prev, m.version = m.version, uc.Manifest.Version
	st, _, err = m.check(ctx)
	if err != nil {
		return false, err
	}
	if st != "noupdate" {
		return false, fmt.Errorf("check after reboot answered %s", st)
	}
	return true, nil
}

func newSims(p *serverProc, prefix, track, version string, n int) []*sim {
	c := &omaha.Client{URL: p.url + "/v1/update/"}
	out := make([]*sim, n)
	for i := range out {
		out[i] = &sim{c: c, id: fmt.Sprintf("%s%0*x", prefix, 32-len(prefix), i+1), track: track, version: version}
	}
	return out
}

// parallel runs fn for every machine on 16 workers.
func parallel(t testing.TB, ms []*sim, fn func(*sim) error) {
	t.Helper()
	ch := make(chan *sim)
	errs := make(chan error, len(ms))
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range ch {
				if err := fn(m); err != nil {
					errs <- fmt.Errorf("machine %s: %w", m.id, err)
				}
			}
		}()
	}
	for _, m := range ms {
		ch <- m
	}
	close(ch)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func setupGroup(t testing.TB, p *serverProc, name string, policy ...string) {
	t.Helper()
	p.cli(t, "channel", "create", "--app", appID, "--name", name+"-ch", "--package", "1.0.0")
	p.cli(t, append([]string{"group", "create", "--app", appID, "--name", name, "--channel", name + "-ch"}, policy...)...)
}

func TestServerEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test builds and runs the binary; skipped with -short")
	}
	ctx := context.Background()
	dataDir := t.TempDir()
	p := startServer(t, dataDir)

	// First start prints the admin token once and saves it 0600.
	tok, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dataDir, "admin.token")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin.token mode %v, want 0600", fi.Mode().Perm())
	}
	// stdout is copied by another goroutine than the log line we waited
	// for: poll it with a deadline.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.stdout.String(), strings.TrimSpace(string(tok))) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !strings.Contains(p.stdout.String(), strings.TrimSpace(string(tok))) {
		t.Fatalf("first start did not print the admin token; stdout: %q", p.stdout.String())
	}

	// The Flatcar app exists from the first start; creating it again is a
	// clear "already exists".
	if _, err := p.cliErr("app", "create", "--id", "{E96281A6-D1AF-4BDE-9A0A-97B76E56DC57}", "--name", "again"); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("re-creating the Flatcar app: %v, want an 'already exists' error", err)
	}
	for _, v := range []string{"1.0.0", "2.0.0"} {
		p.cli(t, "package", "create", "--app", appID, "--version", v, "--url", "http://127.0.0.1:1/pkgs/"+v+"/",
			"--file", "flatcar_production_update.gz", "--size", "1048576",
			"--sha256", "3twpmKMOhUE4jamEnUBDF37BM70/RU3ZA6de281oiNs=", "--sha1", "bh+HmSJWrofZCGq9+Zwr00Id9cE=")
	}

	t.Run("Rollout200", func(t *testing.T) {
		setupGroup(t, p, "fleet")
		ms := newSims(p, "a1", "fleet", "1.0.0", 200)
		parallel(t, ms, func(m *sim) error {
			st, _, err := m.check(ctx)
			if err == nil && st != "noupdate" {
				err = fmt.Errorf("before the rollout: %s", st)
			}
			return err
		})
		p.cli(t, "channel", "set-package", "--app", appID, "--name", "fleet-ch", "--package", "2.0.0")
		parallel(t, ms, func(m *sim) error {
			ok, err := m.update(ctx)
			if err == nil && !ok {
				err = fmt.Errorf("was not offered the update")
			}
			return err
		})
		var st v1.GroupStatus
		p.cliJSON(t, &st, "group", "status", "--app", appID, "--name", "fleet")
		if st.Total != 200 || st.ByVersion["2.0.0"] != 200 || st.ByStatus["complete"] != 200 || st.OnTarget != 200 {
			t.Fatalf("group status after rollout: %+v", st)
		}
		var acts v1.ActivityList
		p.cliJSON(t, &acts, "activity", "--app", appID, "--group", "fleet")
		if !hasKind(acts, "rollout-finished") || !hasKind(acts, "rollout-started") {
			t.Fatalf("activity lacks rollout-started/finished: %+v", acts)
		}
		var list v1.InstanceList
		p.cliJSON(t, &list, "instance", "list", "--app", appID, "--group", "fleet", "--status", "complete", "--limit", "1000")
		if list.Total != 200 || len(list.Instances) != 200 || list.Instances[0].MachineID == "" || list.Instances[0].Version != "2.0.0" {
			t.Fatalf("instance list: total %d, %d rows", list.Total, len(list.Instances))
		}
	})

	t.Run("PausedGroupAnswersNoUpdate", func(t *testing.T) {
		setupGroup(t, p, "paused")
		p.cli(t, "group", "pause", "--app", appID, "--name", "paused", "--reason", "e2e")
		p.cli(t, "channel", "set-package", "--app", appID, "--name", "paused-ch", "--package", "2.0.0")
		ms := newSims(p, "b2", "paused", "1.0.0", 50)
		parallel(t, ms, func(m *sim) error {
			st, _, err := m.check(ctx)
			if err == nil && st != "noupdate" {
				err = fmt.Errorf("paused group answered %s", st)
			}
			return err
		})
		var st v1.GroupStatus
		p.cliJSON(t, &st, "group", "status", "--app", appID, "--name", "paused")
		if !st.Paused || st.ByStatus["on-hold"] != 50 {
			t.Fatalf("paused group status: %+v", st)
		}
	})

	t.Run("RateLimitGrantsExactly10", func(t *testing.T) {
		setupGroup(t, p, "rated", "--max-updates", "10", "--period", "1h")
		p.cli(t, "channel", "set-package", "--app", appID, "--name", "rated-ch", "--package", "2.0.0")
		ms := newSims(p, "c3", "rated", "1.0.0", 60)
		var mu sync.Mutex
		granted := 0
		parallel(t, ms, func(m *sim) error {
			st, _, err := m.check(ctx)
			if st == "ok" {
				mu.Lock()
				granted++
				mu.Unlock()
			}
			return err
		})
		if granted != 10 {
			t.Fatalf("granted %d updates with a limit of 10 per hour, want exactly 10", granted)
		}
	})

	t.Run("RollbackAutoPauses", func(t *testing.T) {
		setupGroup(t, p, "canary")
		p.cli(t, "channel", "set-package", "--app", appID, "--name", "canary-ch", "--package", "2.0.0")
		m := newSims(p, "d4", "canary", "1.0.0", 1)[0]
		if st, _, err := m.check(ctx); err != nil || st != "ok" {
			t.Fatalf("canary check: %s %v", st, err)
		}
		for _, ev := range []omaha.Event{{Type: 13, Result: 1}, {Type: 14, Result: 1}, {Type: 3, Result: 1}} {
			if err := m.event(ctx, ev); err != nil {
				t.Fatal(err)
			}
		}
		// Booted back into 1.0.0: update_engine reports 3/0/44 with the
		// TestOmahaUrl flag on its next check.
		if _, err := m.send(ctx, omaha.App{Ping: &omaha.Ping{Active: 1}, UpdateCheck: &omaha.UpdateCheck{},
			Events: []omaha.Event{{Type: 3, Result: 0, ErrorCode: 268435500}}}, omaha.InstallSourceScheduler); err != nil {
			t.Fatal(err)
		}
		var g v1.GroupStatus
		p.cliJSON(t, &g, "group", "status", "--app", appID, "--name", "canary")
		if !g.Paused || !strings.Contains(g.PausedReason, m.id) || g.ByStatus["rolled-back"] != 1 {
			t.Fatalf("group after rollback: %+v", g)
		}
		var in v1.Instance
		p.cliJSON(t, &in, "instance", "show", "--app", appID, m.id)
		if in.Status != "rolled-back" || in.LastError == nil || in.LastError.Name != "RollbackError" || len(in.LastError.Flags) != 1 {
			t.Fatalf("instance after rollback: %+v", in)
		}
	})

	t.Run("BadOmahaInput", func(t *testing.T) {
		for name, body := range map[string]string{
			"malformed": "<request protocol=\"3.0\"><app",
			"oversized": "<request protocol=\"3.0\">" + strings.Repeat("<!-- padding -->", 5000) + "</request>",
		} {
			resp, err := postXML(p.url+"/v1/update/", body)
			if err != nil {
				t.Fatal(err)
			}
			if resp != 400 {
				t.Errorf("%s body: HTTP %d, want 400", name, resp)
			}
		}
	})

	// Graceful shutdown, restart on the same data, and the data-dir lock.
	p.stop(t)
	p2 := startServer(t, dataDir)
	if tok2, err := os.ReadFile(filepath.Join(dataDir, "admin.token")); err != nil || string(tok2) != string(tok) {
		t.Fatalf("restart changed admin.token (err %v)", err)
	}
	if strings.Contains(p2.stdout.String(), "Created admin API token") {
		t.Fatal("restart created a new admin token")
	}
	var st v1.GroupStatus
	p2.cliJSON(t, &st, "group", "status", "--app", appID, "--name", "fleet")
	if st.ByVersion["2.0.0"] != 200 {
		t.Fatalf("after restart: %+v", st)
	}
	cmd := exec.Command(binPath, "server", "--data-dir", dataDir, "--listen", "127.0.0.1:0")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use by another flotilla server") {
		t.Fatalf("second server on the same data dir: err=%v out=%s", err, out)
	}
	p2.stop(t)
}

func hasKind(l v1.ActivityList, kind string) bool {
	for _, a := range l.Activity {
		if a.Kind == kind {
			return true
		}
	}
	return false
}

func postXML(url, body string) (int, error) {
	resp, err := http.Post(url, "text/xml", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func TestTokens(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test builds and runs the binary; skipped with -short")
	}
	dataDir := t.TempDir()
	p := startServer(t, dataDir)
	var viewer v1.CreatedToken
	p.cliJSON(t, &viewer, "token", "create", "--name", "dashboard", "--role", "viewer")
	if viewer.Secret == "" || viewer.Role != "viewer" {
		t.Fatalf("created token: %+v", viewer)
	}
	asViewer := func(args ...string) error {
		_, err := p.cliErr(append([]string{"--token", viewer.Secret}, args...)...)
		return err
	}
	if err := asViewer("group", "list", "--app", appID); err != nil {
		t.Fatalf("viewer cannot read: %v", err)
	}
	if err := asViewer("group", "pause", "--app", appID, "--name", "stable"); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("viewer changed a group: %v", err)
	}
	if err := asViewer("token", "list"); err == nil {
		t.Fatal("viewer listed tokens")
	}
	p.cli(t, "token", "delete", viewer.ID)
	if err := asViewer("group", "list", "--app", appID); err == nil || !strings.Contains(err.Error(), "unknown API token") {
		t.Fatalf("deleted token still works: %v", err)
	}

	// A lost admin token can be replaced from the data directory.
	old, _ := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	p.stop(t)
	os.Remove(filepath.Join(dataDir, "admin.token"))
	p2 := startServer(t, dataDir, "--reset-admin-token")
	fresh, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil || len(strings.TrimSpace(string(fresh))) != 64 || string(fresh) == string(old) {
		t.Fatalf("reset admin token: %q (%v)", fresh, err)
	}
	p2.cli(t, "app", "list")
	p2.stop(t)
}
