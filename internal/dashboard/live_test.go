package dashboard_test

import (
	"bufio"
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/flotilla/flotilla/internal/servertest"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/updatesvc"
	"github.com/flotilla/flotilla/omaha"
)

var packagesPath = "/apps/" + omaha.FlatcarAppID + "/packages"

const testSHA256Hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func packageForm(csrf, version string) url.Values {
	return url.Values{"csrf": {csrf}, "version": {version}, "arch": {"amd64"}, "url": {"https://example.com/p/" + version},
		"file": {"update.gz"}, "size": {"1234"}, "sha256": {testSHA256Hex}}
}

func TestPackagesPage(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	st := e.srv.Store()
	_, vsecret := e.newToken(t, "viewer") // before any request caches the token list
	c := e.login(t, e.srv.AdminToken)

	if r := e.do(t, "GET", "/packages", c, nil); r.code != http.StatusSeeOther || r.header.Get("Location") != packagesPath {
		t.Fatalf("GET /packages: %d → %q, want 303 to the only app's page", r.code, r.header.Get("Location"))
	}
	page := e.do(t, "GET", packagesPath, c, nil)
	if page.code != http.StatusOK || !strings.Contains(page.body, "Packages and channels") || !strings.Contains(page.body, `id="create-package"`) {
		t.Fatalf("GET packages: %d\n%s", page.code, page.body)
	}
	csrf := csrfOf(t, page.body)

	// Refused without CSRF or session; nothing is created.
	noCSRF := packageForm("", "1.0.0")
	noCSRF.Del("csrf")
	if r := e.do(t, "POST", packagesPath, c, noCSRF); r.code != http.StatusForbidden {
		t.Errorf("create without CSRF: %d, want 403", r.code)
	}
	if r := e.do(t, "POST", packagesPath, nil, packageForm(csrf, "1.0.0")); r.code != http.StatusForbidden {
		t.Errorf("create without session: %d, want 403", r.code)
	}
	if pk, _ := st.ListPackages(ctx, omaha.FlatcarAppID); len(pk) != 0 {
		t.Fatalf("refused creates made packages: %+v", pk)
	}

	// Invalid input: 422, errors next to their fields, input kept.
	bad := packageForm(csrf, "1.0.0")
	bad.Set("size", "0")
	bad.Set("sha256", "abc")
	bad.Set("url", "ftp://x")
	r := e.do(t, "POST", packagesPath, c, bad)
	if r.code != http.StatusUnprocessableEntity {
		t.Fatalf("invalid create: %d", r.code)
	}
	for _, want := range []string{"update_engine rejects 0", "64 hex digits", "must start with http:// or https://", `value="ftp://x"`} {
		if !strings.Contains(r.body, want) {
			t.Errorf("invalid create page lacks %q", want)
		}
	}

	// Create with a hex digest: stored as base64 like the CLI does.
	r = e.do(t, "POST", packagesPath, c, packageForm(csrf, "1.0.0"))
	if r.code != http.StatusSeeOther {
		t.Fatalf("create: %d\n%s", r.code, r.body)
	}
	p, err := st.GetPackage(ctx, omaha.FlatcarAppID, "1.0.0", "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if p.SHA256 != "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=" || p.Size != 1234 || p.BaseURL != "https://example.com/p/1.0.0" {
		t.Errorf("stored package %+v", p)
	}
	if r := e.do(t, "POST", packagesPath, c, packageForm(csrf, "1.0.0")); r.code != http.StatusUnprocessableEntity || !strings.Contains(r.body, "already exists") {
		t.Errorf("duplicate create: %d", r.code)
	}
	page = e.do(t, "GET", packagesPath+"?done=created", c, nil)
	if !strings.Contains(page.body, "9f86d081884c") || !strings.Contains(page.body, "The package is created") {
		t.Errorf("packages page lacks the new package or the flash")
	}

	// Promote: CSRF required, unknown version shown inline, then success.
	promote := "/apps/" + omaha.FlatcarAppID + "/channels/stable/promote"
	if r := e.do(t, "POST", promote, c, url.Values{"version": {"1.0.0"}}); r.code != http.StatusForbidden {
		t.Errorf("promote without CSRF: %d, want 403", r.code)
	}
	r = e.do(t, "POST", promote, c, url.Values{"csrf": {csrf}, "version": {"9.9.9"}})
	if r.code != http.StatusUnprocessableEntity || !strings.Contains(r.body, "No package has version &#34;9.9.9&#34;") {
		t.Errorf("promote unknown version: %d", r.code)
	}
	if r := e.do(t, "POST", "/apps/"+omaha.FlatcarAppID+"/channels/nope/promote", c, url.Values{"csrf": {csrf}, "version": {"1.0.0"}}); r.code != http.StatusNotFound {
		t.Errorf("promote unknown channel: %d, want 404", r.code)
	}
	r = e.do(t, "POST", promote, c, url.Values{"csrf": {csrf}, "version": {"1.0.0"}})
	if r.code != http.StatusSeeOther {
		t.Fatalf("promote: %d\n%s", r.code, r.body)
	}
	ch, err := st.GetChannel(ctx, omaha.FlatcarAppID, "stable")
	if err != nil || ch.PackageVersion != "1.0.0" {
		t.Fatalf("channel after promote: %+v, %v", ch, err)
	}
	g, _ := st.GetGroup(ctx, omaha.FlatcarAppID, "stable")
	if g.RolloutVersion != "1.0.0" {
		t.Errorf("group stable rolls out %q after promote, want 1.0.0", g.RolloutVersion)
	}

	// Viewer: sees the page, no forms, POSTs refused.
	vc := e.login(t, vsecret)
	vp := e.do(t, "GET", packagesPath, vc, nil)
	if vp.code != http.StatusOK || strings.Contains(vp.body, `id="create-package"`) || strings.Contains(vp.body, "/promote") {
		t.Errorf("viewer page: %d, forms shown: %v", vp.code, strings.Contains(vp.body, "/promote"))
	}
	vcsrf := csrfOf(t, vp.body) // the logout form's
	if r := e.do(t, "POST", packagesPath, vc, packageForm(vcsrf, "2.0.0")); r.code != http.StatusForbidden {
		t.Errorf("viewer create: %d, want 403", r.code)
	}
	if r := e.do(t, "POST", promote, vc, url.Values{"csrf": {vcsrf}, "version": {"1.0.0"}}); r.code != http.StatusForbidden {
		t.Errorf("viewer promote: %d, want 403", r.code)
	}

	// Escaping: markup in a version and URL (the API accepts any version).
	if err := e.srv.Service().CreatePackage(ctx, store.Package{AppID: omaha.FlatcarAppID, Version: xss2, Arch: "amd64",
		BaseURL: "https://x/" + xss1, FileName: "f", Size: 1, SHA256: p.SHA256}); err != nil {
		t.Fatal(err)
	}
	page = e.do(t, "GET", packagesPath, c, nil)
	for _, raw := range []string{xss1, xss2, "<img", "<script>"} {
		if strings.Contains(page.body, raw) {
			t.Errorf("packages page contains unescaped %q", raw)
		}
	}
	bad = packageForm(csrf, xss2)
	bad.Set("size", xss1)
	r = e.do(t, "POST", packagesPath, c, bad)
	for _, raw := range []string{xss1, xss2, "<img", "<script>"} {
		if strings.Contains(r.body, raw) {
			t.Errorf("rejected form contains unescaped %q", raw)
		}
	}
}

// sse reads one event stream.
type sse struct {
	events chan [2]string // event name, data
	cancel context.CancelFunc
}

func (e *env) openEvents(t *testing.T, path string, c *http.Cookie) *sse {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", e.base+path, nil)
	req.AddCookie(c)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &sse{events: make(chan [2]string, 16), cancel: cancel}
	go func() {
		defer resp.Body.Close()
		defer close(s.events)
		sc := bufio.NewScanner(resp.Body)
		var name, data string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if name != "" {
					s.events <- [2]string{name, data}
				}
				name, data = "", ""
			case strings.HasPrefix(line, "event: "):
				name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return s
}

// statusIntervalForTest is longer than the stream's coalescing interval
// for status changes (500 ms): a change would have been sent within it.
const statusIntervalForTest = time.Second

// none checks that no event other than a heartbeat arrives within d: an
// absence can only be checked over a window.
func (s *sse) none(t *testing.T, d time.Duration) {
	t.Helper()
	window := time.After(d)
	for {
		select {
		case ev, ok := <-s.events:
			if ok {
				t.Errorf("unexpected %q event %s", ev[0], ev[1])
			}
			return
		case <-window:
			return
		}
	}
}

// next waits (up to 10 s) for an event named name, skipping others.
func (s *sse) next(t *testing.T, name string) string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				t.Fatalf("stream ended before a %q event", name)
			}
			if ev[0] == name {
				return ev[1]
			}
		case <-deadline:
			t.Fatalf("no %q event within 10 s", name)
		}
	}
}

func TestEvents(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	st := e.srv.Store()
	app := omaha.FlatcarAppID

	if r := e.do(t, "GET", "/events", nil, nil); r.code != http.StatusUnauthorized {
		t.Errorf("GET /events without a session: %d, want 401", r.code)
	}
	c := e.login(t, e.srv.AdminToken)
	if r := e.do(t, "GET", "/events?group=stable", c, nil); r.code != http.StatusBadRequest {
		t.Errorf("GET /events?group= without app: %d, want 400", r.code)
	}
	page := e.do(t, "GET", stablePath, c, nil)
	if !strings.Contains(page.body, `data-events="/events?app=`+app+`&amp;group=stable"`) || !strings.Contains(page.body, `src="/static/live.js"`) {
		t.Errorf("group page does not name its event stream or script")
	}
	if r := e.do(t, "GET", "/static/live.js", nil, nil); r.code != http.StatusOK || !strings.Contains(r.body, "EventSource") {
		t.Errorf("GET /static/live.js: %d", r.code)
	}
	if csp := page.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("CSP %q does not allow the script and its stream", csp)
	}

	// A pause is an activity entry: pushed at once to the group's stream
	// and the overview's.
	group := e.openEvents(t, "/events?app="+app+"&group=stable", c)
	overview := e.openEvents(t, "/events", c)
	group.next(t, "ready")
	overview.next(t, "ready")
	pause := true
	if _, err := e.srv.Service().UpdateGroup(ctx, app, "stable", updatesvc.GroupChange{Pause: &pause, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if d := group.next(t, "change"); !strings.Contains(d, "activity") {
		t.Errorf("group change event %s", d)
	}
	if d := overview.next(t, "change"); !strings.Contains(d, "activity") {
		t.Errorf("overview change event %s", d)
	}

	// Status changes are pushed by the update service's status hook: a
	// machine reporting a failed install moves its instance page and its group's.
	m := &machine{c: &omaha.Client{URL: e.base + omaha.DefaultPath}, id: "0123456789abcdef0123456789abcdef", track: "stable", version: "1.0.0"}
	if _, err := m.send(ctx, omaha.App{Ping: &omaha.Ping{Active: 1}, UpdateCheck: &omaha.UpdateCheck{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetInstance(ctx, app, m.id); err != nil {
		t.Fatal(err)
	}
	inst := e.openEvents(t, "/events?app="+app+"&instance="+m.id, c)
	inst.next(t, "ready")
	other := e.openEvents(t, "/events?app="+app+"&instance=ffffffffffffffffffffffffffffffff", c)
	other.next(t, "ready")
	if _, err := m.send(ctx, omaha.App{Events: []omaha.Event{{Type: 3, Result: 0, ErrorCode: 12}}}); err != nil {
		t.Fatal(err)
	}
	if d := inst.next(t, "change"); !strings.Contains(d, "status") {
		t.Errorf("instance change event %s", d)
	}
	if d := group.next(t, "change"); !strings.Contains(d, "status") { // its rollout counts changed
		t.Errorf("group change event %s", d)
	}
	// Another machine's page hears nothing of it; a store write that did
	// not go through the service is not pushed either (there is nothing
	// polling any more).
	in, err := st.GetInstance(ctx, app, m.id)
	if err != nil {
		t.Fatal(err)
	}
	in.Status = store.StatusDownloaded
	if err := st.PutInstance(ctx, in); err != nil {
		t.Fatal(err)
	}
	other.none(t, 2*statusIntervalForTest)

	// Signing out ends the stream within a session check.
	page = e.do(t, "GET", "/", c, nil)
	if r := e.do(t, "POST", "/logout", c, url.Values{"csrf": {csrfOf(t, page.body)}}); r.code != http.StatusSeeOther {
		t.Fatalf("logout: %d", r.code)
	}
	deadline := time.After(10 * time.Second)
	for ended := false; !ended; {
		select {
		case _, ok := <-inst.events:
			ended = !ok
		case <-deadline:
			t.Fatal("the stream outlived its session")
		}
	}
}

// TestEventsEndOnShutdown: an open stream does not hold up shutdown.
func TestEventsEndOnShutdown(t *testing.T) {
	r := servertest.Start(t)
	srv := r.Server
	e := &env{srv: srv, base: r.URL()}
	s := e.openEvents(t, "/events", e.login(t, srv.AdminToken))
	s.next(t, "ready")
	stopped := make(chan error, 1)
	go func() { stopped <- r.Stop() }()
	// The server's own shutdown timeout is 15 s: a stream that held it up
	// would show here as a deadline miss.
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown waited for the event stream")
	}
	for range s.events { // drains once the stream has ended
	}
}
