package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla/flotilla/internal/etcdserver"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/omaha"
)

// testConfig is the default configuration on free loopback ports (HTTP
// and etcd) over a fresh data directory.
func testConfig(t *testing.T) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.SQLiteSync = "NORMAL"
	cfg.Etcd.ClientURL = "http://127.0.0.1:0"
	cfg.Etcd.PeerURL = "http://127.0.0.1:0"
	return cfg
}

// startTestServer runs a real server on a loopback port over a fresh data
// directory and returns its base URL.
func startTestServer(t *testing.T) (*Server, string) {
	t.Helper()
	return startServerWith(t, testConfig(t))
}

// startServerWith runs a server with cfg until the test ends.
func startServerWith(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server run: %v", err)
		}
	})
	return srv, "http://" + srv.Addr()
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "text/xml", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestOmahaCompatibility feeds real update_engine request bodies, one of
// each kind, through the HTTP endpoint of a freshly seeded server, in the
// order a machine sends them, and checks the answer and the stored status
// after each.
func TestOmahaCompatibility(t *testing.T) {
	srv, base := startTestServer(t)
	ctx := context.Background()
	svc := srv.Service()
	const machine = "8f14e45fceea167a5a36dedd4bea2543"
	if err := svc.CreatePackage(ctx, store.Package{AppID: omaha.FlatcarAppID, Version: "4081.2.0", Arch: "amd64",
		BaseURL: "https://updates.example.net/amd64-usr/4081.2.0/", FileName: "flatcar_production_update.gz", Size: 465881871,
		SHA1: "bh+HmSJWrofZCGq9+Zwr00Id9cE=", SHA256: "3twpmKMOhUE4jamEnUBDF37BM70/RU3ZA6de281oiNs="}); err != nil {
		t.Fatal(err)
	}
	if err := svc.SetChannelPackage(ctx, omaha.FlatcarAppID, "stable", "4081.2.0"); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		file       string
		wantUC     string // updatecheck status, "" = no updatecheck in the answer
		wantStatus store.Status
		wantGroup  string
	}{
		{"request-update-check.xml", "ok", store.StatusGranted, "stable"},
		{"request-event-download-started.xml", "", store.StatusDownloading, "stable"},
		{"request-event-download-finished.xml", "", store.StatusDownloaded, "stable"},
		{"request-event-installed.xml", "", store.StatusInstalled, "stable"},
		{"request-ping-only.xml", "", store.StatusInstalled, "stable"},
		{"request-on-demand.xml", "ok", store.StatusInstalled, "stable"},
		{"request-event-error.xml", "", store.StatusError, "stable"},
		{"request-rollback.xml", "noupdate", store.StatusRolledBack, "stable"},
		{"request-legacy-group.xml", "noupdate", store.StatusRolledBack, "stable"},
		{"request-go-omaha.xml", "noupdate", store.StatusRolledBack, "beta"},
	}
	for _, s := range steps {
		body, err := os.ReadFile(filepath.Join("..", "..", "omaha", "testdata", s.file))
		if err != nil {
			t.Fatal(err)
		}
		code, out := post(t, base+"/v1/update/", string(body))
		if code != http.StatusOK {
			t.Fatalf("%s: HTTP %d: %s", s.file, code, out)
		}
		resp, err := omaha.ParseResponse(strings.NewReader(out))
		if err != nil {
			t.Fatalf("%s: answer does not parse: %v\n%s", s.file, err, out)
		}
		if len(resp.Apps) != 1 || resp.Apps[0].Status != "ok" {
			t.Fatalf("%s: answer %s", s.file, out)
		}
		uc := resp.Apps[0].UpdateCheck
		switch {
		case s.wantUC == "" && uc != nil:
			t.Fatalf("%s: unexpected updatecheck in %s", s.file, out)
		case s.wantUC != "" && (uc == nil || uc.Status != s.wantUC):
			t.Fatalf("%s: want updatecheck %s, got %s", s.file, s.wantUC, out)
		case s.wantUC == "ok":
			if err := uc.Validate(); err != nil {
				t.Fatalf("%s: update answer fails update_engine's checks: %v", s.file, err)
			}
		}
		in, err := srv.Store().GetInstance(ctx, omaha.FlatcarAppID, machine)
		if err != nil {
			t.Fatalf("%s: %v", s.file, err)
		}
		if in.Status != s.wantStatus || in.Group != s.wantGroup {
			t.Fatalf("%s: instance %s in %s, want %s in %s", s.file, in.Status, in.Group, s.wantStatus, s.wantGroup)
		}
	}
	in, _ := srv.Store().GetInstance(ctx, omaha.FlatcarAppID, machine)
	if in.LastErrorCode != 268435500 || in.BlockedVersion != "4081.2.0" {
		t.Fatalf("after the rollback report: code %d blocked %q", in.LastErrorCode, in.BlockedVersion)
	}
	evs, err := srv.Store().ListEvents(ctx, omaha.FlatcarAppID, machine, 100)
	if err != nil {
		t.Fatal(err)
	}
	// Stored: 3/2 with a real previous version, 13/1, 14/1, 3/1, 3/0 and
	// 3/0/44. The routine 3/2 (previousversion 0.0.0.0) that rides on every
	// check is not stored.
	var kinds []string
	for i := len(evs) - 1; i >= 0; i-- {
		kinds = append(kinds, fmt.Sprintf("%d.%d", evs[i].Type, evs[i].Result))
	}
	if got, want := strings.Join(kinds, " "), "3.2 13.1 14.1 3.1 3.0 3.0"; got != want {
		t.Fatalf("stored events %s, want %s", got, want)
	}
}

// TestChromeOSFixtures checks that the historical update_engine bodies in
// ../shared/fixtures parse and get a clear Omaha error for their unknown
// application, with nothing stored.
func TestChromeOSFixtures(t *testing.T) {
	dir := filepath.Join("..", "..", "..", "shared", "fixtures", "omaha", "chromeos-update-engine")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("shared fixtures not found at %s: %v", dir, err)
	}
	srv, base := startTestServer(t)
	for _, f := range []string{"update/request.xml", "no-update/request.xml"} {
		body, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		code, out := post(t, base+"/v1/update/", string(body))
		if code != http.StatusOK {
			t.Fatalf("%s: HTTP %d %s", f, code, out)
		}
		resp, err := omaha.ParseResponse(strings.NewReader(out))
		if err != nil || len(resp.Apps) != 1 || resp.Apps[0].Status != "error-unknownApplication" {
			t.Fatalf("%s: answer %s (%v)", f, out, err)
		}
	}
	page, err := srv.Store().ListInstances(context.Background(), store.InstanceFilter{AppID: "87efface-864d-49a5-9bb3-4b050a7c227a"})
	if err != nil || page.Total != 0 {
		t.Fatalf("instances stored for an unknown app: %d (%v)", page.Total, err)
	}
}

func TestHTTPSurface(t *testing.T) {
	srv, base := startTestServer(t)
	get := func(path string, hdr ...string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if len(hdr) == 2 {
			req.Header.Set(hdr[0], hdr[1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if code, body := get("/readyz"); code != 200 || body != "store: ok\netcd: ok\n" {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	// One Omaha request so the counters have a sample.
	post(t, base+"/v1/update", `<request protocol="3.0"><app appid="{`+omaha.FlatcarAppID+`}" machineid="abc" track="stable" version="1.0.0"><ping active="1"/></app></request>`)
	code, body := get("/metrics")
	for _, name := range []string{"flotilla_omaha_requests_total", "flotilla_http_requests_total", "flotilla_build_info", "go_goroutines", "flotilla_etcd_up 1", `flotilla_group_instances{app="e96281a6-d1af-4bde-9a0a-97b76e56dc57",group="stable",status="idle"} 1`, `flotilla_group_paused{app="e96281a6-d1af-4bde-9a0a-97b76e56dc57",group="stable"} 0`} {
		if code != 200 || !strings.Contains(body, name) {
			t.Fatalf("/metrics lacks %s (HTTP %d)", name, code)
		}
	}
	if code, _ := get("/v1/update/"); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /v1/update/: %d, want 405", code)
	}
	if code, body := get("/api/v1/apps"); code != http.StatusUnauthorized || !strings.Contains(body, `"kind": "unauthorized"`) {
		t.Fatalf("API without token: %d %s", code, body)
	}
	if code, body := get("/api/v1/apps", "Authorization", "Bearer wrong"); code != http.StatusUnauthorized {
		t.Fatalf("API with a wrong token: %d %s", code, body)
	}
	if code, body := get("/api/v1/apps", "Authorization", "Bearer "+srv.AdminToken); code != 200 || !strings.Contains(body, omaha.FlatcarAppID) {
		t.Fatalf("API with the admin token: %d %s", code, body)
	}
}

func TestAPIRouteErrors(t *testing.T) {
	srv, base := startTestServer(t)
	do := func(method, path string) (int, string) {
		req, _ := http.NewRequest(method, base+path, nil)
		req.Header.Set("Authorization", "Bearer "+srv.AdminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := do(http.MethodPut, "/api/v1/apps"); code != http.StatusMethodNotAllowed || !strings.Contains(body, `"method_not_allowed"`) || !strings.Contains(body, "GET, POST") {
		t.Fatalf("PUT /api/v1/apps: %d %s", code, body)
	}
	if code, body := do(http.MethodGet, "/api/v1/nothing"); code != http.StatusNotFound || !strings.Contains(body, `"not_found"`) {
		t.Fatalf("GET /api/v1/nothing: %d %s", code, body)
	}
	if code, body := do(http.MethodGet, "/api/v1/apps/not-a-uuid/groups"); code != http.StatusBadRequest || !strings.Contains(body, "not a UUID") {
		t.Fatalf("bad app id: %d %s", code, body)
	}
	if code, body := do(http.MethodGet, "/api/v1/apps/{"+strings.ToUpper(omaha.FlatcarAppID)+"}/groups/stable"); code != http.StatusOK || !strings.Contains(body, `"track": "stable"`) {
		t.Fatalf("braced upper-case app id: %d %s", code, body)
	}
	if code, body := do(http.MethodGet, "/api/v1/apps/"+omaha.FlatcarAppID+"/instances?colour=red"); code != http.StatusBadRequest || !strings.Contains(body, "colour") {
		t.Fatalf("unknown query parameter: %d %s", code, body)
	}
}

// TestPayloadDir serves files with Range support and no directory listing.
func TestPayloadDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "update.payload"), []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.PayloadDir = dir
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	base := "http://" + srv.Addr() + "/payloads/"
	req, _ := http.NewRequest(http.MethodGet, base+"update.payload", nil)
	req.Header.Set("Range", "bytes=4-")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || string(b) != "456789" {
		t.Fatalf("range request: %d %q", resp.StatusCode, b)
	}
	for _, p := range []string{"", "missing.payload"} {
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET /payloads/%s: %d, want 404", p, resp.StatusCode)
		}
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestReadyzReportsEtcd runs a server against an external etcd member and
// stops that member: /readyz turns 503 naming etcd, and the store line
// stays ok.
func TestReadyzReportsEtcd(t *testing.T) {
	ecfg := etcdserver.DefaultConfig()
	ecfg.DataDir = filepath.Join(t.TempDir(), "etcd")
	ecfg.ClientURL, ecfg.PeerURL = "http://127.0.0.1:0", "http://127.0.0.1:0"
	member, err := etcdserver.Start(t.Context(), ecfg, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()

	cfg := testConfig(t)
	cfg.Etcd = etcdserver.DefaultConfig()
	cfg.Etcd.Endpoints = []string{member.ClientURL()}
	srv, base := startServerWith(t, cfg)
	if srv.Etcd().Embedded() {
		t.Fatal("server with etcd endpoints embeds a member")
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "etcd")); !os.IsNotExist(err) {
		t.Fatalf("external mode created <data-dir>/etcd: %v", err)
	}
	if code, body := httpGet(t, base+"/readyz"); code != 200 || body != "store: ok\netcd: ok\n" {
		t.Fatalf("/readyz: %d %q", code, body)
	}

	member.Close()
	code, body := httpGet(t, base+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "store: ok\netcd: ") || strings.Contains(body, "etcd: ok") {
		t.Fatalf("/readyz with etcd down: %d %q", code, body)
	}
	if _, body := httpGet(t, base+"/metrics"); !strings.Contains(body, "flotilla_etcd_up 0") {
		t.Fatal("flotilla_etcd_up is not 0 after a failed check")
	}
	if code, _ := httpGet(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz with etcd down: %d (liveness must not depend on etcd)", code)
	}
}

// TestShutdownClosesEtcd checks that the embedded member stops with the
// server: its data directory can be opened again, with the data in it.
func TestShutdownClosesEtcd(t *testing.T) {
	cfg := testConfig(t)
	srv, err := New(t.Context(), cfg, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	e := srv.Etcd()
	if !e.Embedded() || e.MemberName() != etcdserver.DefaultName {
		t.Fatalf("Embedded %v, MemberName %q", e.Embedded(), e.MemberName())
	}
	pctx, pcancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer pcancel()
	if _, err := e.Client().Put(pctx, "/test/k", "v"); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}

	ecfg := cfg.Etcd
	ecfg.DataDir = filepath.Join(cfg.DataDir, "etcd")
	again, err := etcdserver.Start(t.Context(), ecfg, discardLogger())
	if err != nil {
		t.Fatalf("etcd data dir still held after the server stopped: %v", err)
	}
	defer again.Close()
	resp, err := again.Client().Get(pctx, "/test/k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("after restart: %v, %v", resp, err)
	}
}

// TestStartupFailureReleasesEverything: a failure after etcd started (the
// HTTP port is taken) closes etcd and unlocks the data directory, and a
// refused etcd configuration fails New without holding anything.
func TestStartupFailureReleasesEverything(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := testConfig(t)
	cfg.Listen = busy.Addr().String()
	if _, err := New(t.Context(), cfg, discardLogger()); err == nil || !strings.Contains(err.Error(), "listen on") {
		t.Fatalf("New on a busy port: %v", err)
	}
	bad := cfg
	bad.Listen = "127.0.0.1:0"
	bad.Etcd.ClusterState = "bogus"
	if _, err := New(t.Context(), bad, discardLogger()); err == nil || !strings.Contains(err.Error(), `"bogus"`) {
		t.Fatalf("New with a bad etcd cluster state: %v", err)
	}
	cfg.Listen = "127.0.0.1:0"
	startServerWith(t, cfg)
}

// TestSecondServerOnSameDataDir fails fast on the server's own lock, before
// etcd is touched.
func TestSecondServerOnSameDataDir(t *testing.T) {
	cfg := testConfig(t)
	startServerWith(t, cfg)
	start := time.Now()
	if _, err := New(t.Context(), cfg, discardLogger()); err == nil || !strings.Contains(err.Error(), "in use by another flotilla server") {
		t.Fatalf("second server on the same data dir: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("second server took %s to fail", d)
	}
}
