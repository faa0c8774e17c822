package dashboard_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flotilla/flotilla/internal/dashboard"
	"github.com/flotilla/flotilla/internal/restapi"
	"github.com/flotilla/flotilla/internal/server"
	"github.com/flotilla/flotilla/internal/servertest"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/omaha"
)

// env is a real flotilla server on a loopback port.
type env struct {
	srv  *server.Server
	base string
}

func startServer(t *testing.T) *env {
	t.Helper()
	r := servertest.Start(t)
	return &env{srv: r.Server, base: r.URL()}
}

var noRedirect = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       30 * time.Second,
}

type response struct {
	code   int
	body   string
	header http.Header
}

func (e *env) do(t *testing.T, method, path string, cookie *http.Cookie, form url.Values) response {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, e.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if cookie != nil {
		req.AddCookie(cookie)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, string(b), resp.Header}
}

func sessionCookie(h http.Header) *http.Cookie {
	for _, c := range (&http.Response{Header: h}).Cookies() {
		if c.Name == "flotilla_session" {
			return c
		}
	}
	return nil
}

// login signs in with secret and returns the session cookie.
func (e *env) login(t *testing.T, secret string) *http.Cookie {
	t.Helper()
	r := e.do(t, "POST", "/login", nil, url.Values{"token": {secret}, "next": {"/"}})
	if r.code != http.StatusSeeOther {
		t.Fatalf("POST /login: %d, want 303\n%s", r.code, r.body)
	}
	c := sessionCookie(r.header)
	if c == nil || c.Value == "" {
		t.Fatal("POST /login set no session cookie")
	}
	return &http.Cookie{Name: c.Name, Value: c.Value}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

func csrfOf(t *testing.T, body string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatal("page has no CSRF field")
	}
	return m[1]
}

func (e *env) newToken(t *testing.T, role string) (store.Token, string) {
	t.Helper()
	tok, secret := restapi.NewToken("test-"+role, role, time.Now())
	if err := e.srv.Store().CreateToken(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	return tok, secret
}

func (e *env) paused(t *testing.T, group string) bool {
	t.Helper()
	g, err := e.srv.Store().GetGroup(context.Background(), omaha.FlatcarAppID, group)
	if err != nil {
		t.Fatal(err)
	}
	return g.Policy.Paused
}

var stablePath = "/apps/" + omaha.FlatcarAppID + "/groups/stable"

func TestSignIn(t *testing.T) {
	e := startServer(t)

	r := e.do(t, "GET", "/", nil, nil)
	if r.code != http.StatusSeeOther || !strings.HasPrefix(r.header.Get("Location"), "/login") {
		t.Fatalf("GET / without session: %d Location %q, want 303 to /login", r.code, r.header.Get("Location"))
	}
	r = e.do(t, "GET", stablePath, nil, nil)
	if loc := r.header.Get("Location"); r.code != http.StatusSeeOther || loc != "/login?next="+url.QueryEscape(stablePath) {
		t.Fatalf("GET group without session: %d Location %q", r.code, loc)
	}
	if r := e.do(t, "GET", "/login", nil, nil); r.code != http.StatusOK || !strings.Contains(r.body, `name="token"`) {
		t.Fatalf("GET /login: %d\n%s", r.code, r.body)
	}

	r = e.do(t, "POST", "/login", nil, url.Values{"token": {"not-a-token"}})
	if r.code != http.StatusUnauthorized || !strings.Contains(r.body, "not valid") {
		t.Fatalf("POST /login with a wrong token: %d\n%s", r.code, r.body)
	}
	if c := sessionCookie(r.header); c != nil {
		t.Fatalf("a wrong token got a cookie: %v", c)
	}

	r = e.do(t, "POST", "/login", nil, url.Values{"token": {e.srv.AdminToken}, "next": {stablePath}})
	if r.code != http.StatusSeeOther || r.header.Get("Location") != stablePath {
		t.Fatalf("POST /login: %d Location %q", r.code, r.header.Get("Location"))
	}
	raw := r.header.Get("Set-Cookie")
	for _, attr := range []string{"HttpOnly", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(raw, attr) {
			t.Errorf("session cookie %q lacks %s", raw, attr)
		}
	}
	if strings.Contains(raw, "Secure") {
		t.Errorf("session cookie over plain HTTP is Secure: %q", raw)
	}
	c := sessionCookie(r.header)
	r = e.do(t, "GET", "/", c, nil)
	if r.code != http.StatusOK || !strings.Contains(r.body, "Flatcar Container Linux") || !strings.Contains(r.body, "stable") {
		t.Fatalf("GET / signed in: %d\n%s", r.code, r.body)
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}

	// An open redirect through next is refused.
	r = e.do(t, "POST", "/login", nil, url.Values{"token": {e.srv.AdminToken}, "next": {"//evil.example/"}})
	if loc := r.header.Get("Location"); loc != "/" {
		t.Errorf("next=//evil.example/ redirected to %q, want /", loc)
	}

	// Other handlers keep their routes.
	if r := e.do(t, "GET", "/api/v1/nothing", nil, nil); r.code != http.StatusUnauthorized {
		t.Errorf("GET /api/v1/nothing: %d, want the API's 401", r.code)
	}
	if r := e.do(t, "GET", "/healthz", nil, nil); r.code != http.StatusOK {
		t.Errorf("GET /healthz: %d", r.code)
	}
	if r := e.do(t, "GET", "/nothing-here", c, nil); r.code != http.StatusNotFound {
		t.Errorf("GET /nothing-here signed in: %d, want 404", r.code)
	}
	if r := e.do(t, "GET", "/static/style.css", nil, nil); r.code != http.StatusOK || !strings.Contains(r.header.Get("Content-Type"), "text/css") {
		t.Errorf("GET /static/style.css: %d %s", r.code, r.header.Get("Content-Type"))
	}
}

func TestPauseNeedsCSRF(t *testing.T) {
	e := startServer(t)
	c := e.login(t, e.srv.AdminToken)
	page := e.do(t, "GET", stablePath, c, nil)
	if page.code != http.StatusOK {
		t.Fatalf("GET group: %d\n%s", page.code, page.body)
	}
	csrf := csrfOf(t, page.body)

	for name, form := range map[string]url.Values{
		"no token":    {"reason": {"x"}},
		"wrong token": {"csrf": {strings.Repeat("0", len(csrf))}},
	} {
		if r := e.do(t, "POST", stablePath+"/pause", c, form); r.code != http.StatusForbidden {
			t.Errorf("pause with %s: %d, want 403", name, r.code)
		}
		if e.paused(t, "stable") {
			t.Fatalf("pause with %s paused the group", name)
		}
	}
	if r := e.do(t, "POST", stablePath+"/pause", nil, url.Values{"csrf": {csrf}}); r.code != http.StatusForbidden {
		t.Errorf("pause without a session: %d, want 403", r.code)
	}
	if e.paused(t, "stable") {
		t.Fatal("pause without a session paused the group")
	}

	r := e.do(t, "POST", stablePath+"/pause", c, url.Values{"csrf": {csrf}, "reason": {"canary broke"}})
	if r.code != http.StatusSeeOther {
		t.Fatalf("pause: %d\n%s", r.code, r.body)
	}
	if !e.paused(t, "stable") {
		t.Fatal("pause with a CSRF token did not pause the group")
	}
	page = e.do(t, "GET", r.header.Get("Location"), c, nil)
	if !strings.Contains(page.body, "canary broke") || !strings.Contains(page.body, `id="resume"`) {
		t.Errorf("group page after pausing lacks the reason or the resume button")
	}
	ov := e.do(t, "GET", "/", c, nil)
	if !strings.Contains(ov.body, "Group stable of Flatcar Container Linux is paused: canary broke") {
		t.Errorf("overview lacks the paused alert")
	}

	if r := e.do(t, "POST", stablePath+"/resume", c, url.Values{"csrf": {csrf}}); r.code != http.StatusSeeOther {
		t.Fatalf("resume: %d", r.code)
	}
	if e.paused(t, "stable") {
		t.Fatal("resume did not resume the group")
	}
}

func TestViewerIsReadOnly(t *testing.T) {
	e := startServer(t)
	_, secret := e.newToken(t, restapi.RoleViewer)
	c := e.login(t, secret)
	page := e.do(t, "GET", stablePath, c, nil)
	if page.code != http.StatusOK {
		t.Fatalf("viewer GET group: %d", page.code)
	}
	for _, form := range []string{"/pause", "/resume", "/policy"} {
		if strings.Contains(page.body, stablePath+form) {
			t.Errorf("viewer's group page has a %s form", form)
		}
	}
	if !strings.Contains(page.body, "auto-pause") && !strings.Contains(page.body, "Auto-pause") {
		t.Errorf("viewer's group page does not show the policy")
	}
	csrf := csrfOf(t, page.body) // the logout form
	if r := e.do(t, "POST", stablePath+"/pause", c, url.Values{"csrf": {csrf}}); r.code != http.StatusForbidden {
		t.Errorf("viewer pause: %d, want 403", r.code)
	}
	if r := e.do(t, "POST", stablePath+"/policy", c, url.Values{"csrf": {csrf}, "rollout_percent": {"5"}}); r.code != http.StatusForbidden {
		t.Errorf("viewer policy: %d, want 403", r.code)
	}
	if e.paused(t, "stable") {
		t.Fatal("viewer paused the group")
	}
}

func TestLogoutAndTampering(t *testing.T) {
	e := startServer(t)
	c := e.login(t, e.srv.AdminToken)
	page := e.do(t, "GET", "/", c, nil)
	csrf := csrfOf(t, page.body)

	// A changed payload (role or expiry) breaks the signature.
	payload, sig, _ := strings.Cut(c.Value, ".")
	p, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		t.Fatal(err)
	}
	forged := strings.Replace(string(p), "|admin|", "|viewer|", 1)
	forged = forged[:strings.LastIndex(forged, "|")+1] + "99999999999"
	for name, v := range map[string]string{
		"changed payload": base64.RawURLEncoding.EncodeToString([]byte(forged)) + "." + sig,
		"changed sig":     payload + "." + base64.RawURLEncoding.EncodeToString(make([]byte, 32)),
		"garbage":         "x",
	} {
		r := e.do(t, "GET", "/", &http.Cookie{Name: c.Name, Value: v}, nil)
		if r.code != http.StatusSeeOther {
			t.Errorf("%s cookie: %d, want a redirect to /login", name, r.code)
		}
	}

	if r := e.do(t, "POST", "/logout", c, url.Values{}); r.code != http.StatusForbidden {
		t.Errorf("logout without CSRF: %d, want 403", r.code)
	}
	r := e.do(t, "POST", "/logout", c, url.Values{"csrf": {csrf}})
	if r.code != http.StatusSeeOther || r.header.Get("Location") != "/login" {
		t.Fatalf("logout: %d Location %q", r.code, r.header.Get("Location"))
	}
	if cl := sessionCookie(r.header); cl == nil || cl.MaxAge >= 0 {
		t.Errorf("logout did not clear the cookie: %v", cl)
	}
	if r := e.do(t, "GET", "/", c, nil); r.code != http.StatusSeeOther {
		t.Errorf("old cookie after logout: %d, want a redirect to /login", r.code)
	}
}

func TestDeletedTokenEndsSession(t *testing.T) {
	e := startServer(t)
	tok, secret := e.newToken(t, restapi.RoleAdmin)
	c := e.login(t, secret)
	if r := e.do(t, "GET", "/", c, nil); r.code != http.StatusOK {
		t.Fatalf("GET /: %d", r.code)
	}
	if err := e.srv.Store().DeleteToken(context.Background(), tok.ID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := e.do(t, "GET", "/", c, nil)
		if r.code == http.StatusSeeOther {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("session of a deleted token still works: %d", r.code)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestPolicyForm(t *testing.T) {
	e := startServer(t)
	c := e.login(t, e.srv.AdminToken)
	csrf := csrfOf(t, e.do(t, "GET", stablePath, c, nil).body)
	before, _ := e.srv.Store().GetGroup(context.Background(), omaha.FlatcarAppID, "stable")

	bad := url.Values{"csrf": {csrf}, "max_updates_per_period": {"5"}, "period": {"soon"}, "rollout_percent": {"150"},
		"windows": {"Mon-Fri 09:00-17:00\nsomeday"}, "time_zone": {"Mars/Olympus"}, "max_in_progress": {"-1"}}
	r := e.do(t, "POST", stablePath+"/policy", c, bad)
	if r.code != http.StatusUnprocessableEntity {
		t.Fatalf("bad policy: %d, want 422", r.code)
	}
	if !strings.Contains(r.body, "is not a duration") || !strings.Contains(r.body, `value="soon"`) {
		t.Errorf("bad policy page lacks the period error or the typed value")
	}
	// With the parse error fixed, the API's validation rules report the rest.
	bad.Set("period", "1h")
	r = e.do(t, "POST", stablePath+"/policy", c, bad)
	if r.code != http.StatusUnprocessableEntity {
		t.Fatalf("invalid policy: %d, want 422", r.code)
	}
	for _, want := range []string{"must be between 0 and 100", "line 2:", "must not be negative", "Mars/Olympus"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("invalid policy page lacks %q", want)
		}
	}
	after, _ := e.srv.Store().GetGroup(context.Background(), omaha.FlatcarAppID, "stable")
	if fmt.Sprint(after.Policy) != fmt.Sprint(before.Policy) {
		t.Fatalf("rejected form changed the policy: %+v", after.Policy)
	}

	good := url.Values{"csrf": {csrf}, "max_updates_per_period": {"10"}, "period": {"30m"}, "max_in_progress": {"3"},
		"rollout_percent": {"25"}, "ramp_duration": {"48h"}, "update_timeout": {"6h"}, "auto_pause_failures": {"2"},
		"windows": {"Mon-Fri 09:00-17:00\r\nSat 10:00-12:00\r\n"}, "time_zone": {"Europe/Berlin"}}
	r = e.do(t, "POST", stablePath+"/policy", c, good)
	if r.code != http.StatusSeeOther {
		t.Fatalf("good policy: %d\n%s", r.code, r.body)
	}
	g, _ := e.srv.Store().GetGroup(context.Background(), omaha.FlatcarAppID, "stable")
	p := g.Policy
	if p.MaxUpdatesPerPeriod != 10 || p.Period != 30*time.Minute || p.MaxInProgress != 3 || p.RolloutPercent != 25 ||
		p.RampDuration != 48*time.Hour || p.UpdateTimeout != 6*time.Hour || p.AutoPauseFailures != 2 ||
		len(p.Windows) != 2 || p.Windows[1] != "Sat 10:00-12:00" || p.TimeZone != "Europe/Berlin" || p.OnDemandBypassesLimits {
		t.Fatalf("saved policy = %+v", p)
	}
	page := e.do(t, "GET", r.header.Get("Location"), c, nil)
	if !strings.Contains(page.body, "The policy is saved") || !strings.Contains(page.body, `value="48h"`) {
		t.Errorf("group page after saving lacks the notice or the new values")
	}
}

const (
	xss1 = `<script>alert(1)</script>`
	xss2 = `"'><img src=x onerror=alert(1)>`
)

// addInstance stores an instance with a failed update in its history.
func addInstance(t *testing.T, st store.Store, id, alias string, status store.Status) {
	t.Helper()
	ctx := context.Background()
	now := time.Now().UTC()
	in := store.Instance{AppID: omaha.FlatcarAppID, MachineID: id, Alias: alias, IP: "10.0.0.7", OEM: "qemu" + xss2,
		OEMVersion: xss1, Board: "amd64-usr", Group: "stable", Version: "4081.2.0" + xss1, Status: status,
		GrantedVersion: "4152.2.0" + xss2, LastErrorCode: 268435490, LastCheck: now, StatusChanged: now, CreatedAt: now}
	if err := st.PutInstance(ctx, in); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddStatusChange(ctx, store.StatusChange{AppID: in.AppID, MachineID: id, Group: "stable", Status: store.StatusError,
		Version: in.GrantedVersion, ErrorCode: 268435490, At: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddEvent(ctx, store.Event{AppID: in.AppID, MachineID: id, Group: "stable", Type: 3, Result: 0,
		ErrorCode: 268435490, Version: in.Version, PreviousVersion: xss2, At: now}); err != nil {
		t.Fatal(err)
	}
}

func TestEscaping(t *testing.T) {
	e := startServer(t)
	const id = "0123456789abcdef0123456789abcdef"
	addInstance(t, e.srv.Store(), id, xss1+xss2, store.StatusError)
	if err := e.srv.Service().RecordActivity(context.Background(), store.Activity{AppID: omaha.FlatcarAppID, Group: "stable",
		Kind: store.ActivityInstanceFailed, Severity: store.SeverityError, Message: "machine " + xss1 + xss2 + " failed", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	// A sample puts the hostile version into the chart's legend and titles.
	if _, err := e.srv.Service().SampleVersions(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := e.login(t, e.srv.AdminToken)
	pages := []string{
		"/",
		stablePath,
		stablePath + "?q=" + url.QueryEscape(xss1) + "&version=" + url.QueryEscape(xss2) + "&status=" + url.QueryEscape(xss2),
		stablePath + "?chart=" + url.QueryEscape(xss1),
		"/apps/" + omaha.FlatcarAppID + "/instances/" + id,
	}
	for _, p := range pages {
		r := e.do(t, "GET", p, c, nil)
		if r.code != http.StatusOK {
			t.Fatalf("GET %s: %d", p, r.code)
		}
		for _, raw := range []string{xss1, xss2, "<img", "<script>"} {
			if strings.Contains(r.body, raw) {
				t.Errorf("GET %s: raw %q in the page", p, raw)
			}
		}
	}
	inst := e.do(t, "GET", pages[4], c, nil).body
	for _, want := range []string{"&lt;script&gt;alert(1)&lt;/script&gt;", "OmahaResponseInvalid (34)", "TestOmahaUrl", "What to do:"} {
		if !strings.Contains(inst, want) {
			t.Errorf("instance page lacks %q", want)
		}
	}
	if r := e.do(t, "GET", "/apps/"+omaha.FlatcarAppID+"/instances/nope", c, nil); r.code != http.StatusNotFound {
		t.Errorf("unknown instance: %d, want 404", r.code)
	}
}

func TestInstancePaging(t *testing.T) {
	e := startServer(t)
	for i := range 120 {
		alias := ""
		if i < 7 {
			alias = fmt.Sprintf("web-%d", i)
		}
		st := store.StatusComplete
		if i%10 == 0 {
			st = store.StatusOnHold
		}
		addInstance(t, e.srv.Store(), fmt.Sprintf("%032x", i), alias, st)
	}
	c := e.login(t, e.srv.AdminToken)
	rowRE := regexp.MustCompile(`/instances/([0-9a-f]{32})"`)
	nextRE := regexp.MustCompile(`href="([^"]+)" rel="next"`)
	path := stablePath
	seen := map[string]bool{}
	for pages := 0; ; pages++ {
		r := e.do(t, "GET", path, c, nil)
		if r.code != http.StatusOK {
			t.Fatalf("GET %s: %d", path, r.code)
		}
		rows := rowRE.FindAllStringSubmatch(r.body, -1)
		want := 50
		if pages == 2 {
			want = 20
		}
		if len(rows) != want {
			t.Fatalf("page %d has %d rows, want %d", pages+1, len(rows), want)
		}
		for _, m := range rows {
			if seen[m[1]] {
				t.Fatalf("instance %s on two pages", m[1])
			}
			seen[m[1]] = true
		}
		m := nextRE.FindStringSubmatch(r.body)
		if m == nil {
			if pages != 2 {
				t.Fatalf("no next link on page %d", pages+1)
			}
			break
		}
		path = strings.ReplaceAll(m[1], "&amp;", "&")
	}
	r := e.do(t, "GET", stablePath+"?q=web-&status=complete", c, nil)
	if rows := rowRE.FindAllStringSubmatch(r.body, -1); len(rows) != 6 { // web-0 is on hold
		t.Errorf("search web- complete: %d rows, want 6", len(rows))
	}
	r = e.do(t, "GET", stablePath+"?q="+fmt.Sprintf("%032x", 5)[:31], c, nil)
	if rows := rowRE.FindAllStringSubmatch(r.body, -1); len(rows) != 16 {
		t.Errorf("id prefix search: %d rows, want 16", len(rows))
	}
	ov := e.do(t, "GET", "/", c, nil).body
	if !strings.Contains(ov, "108 complete") || !strings.Contains(ov, "12 on hold") {
		t.Errorf("overview bar summary lacks the counts")
	}
}

func TestLoadKey(t *testing.T) {
	dir := t.TempDir()
	k1, err := dashboard.LoadKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := dashboard.LoadKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(k1) != dashboard.KeySize || string(k1) != string(k2) {
		t.Fatal("LoadKey did not return the same key twice")
	}
	fi, err := os.Stat(filepath.Join(dir, "dashboard.key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("dashboard.key mode %v, want 0600", fi.Mode().Perm())
	}
	if err := os.WriteFile(filepath.Join(dir, "dashboard.key"), []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := dashboard.LoadKey(dir); err == nil {
		t.Error("LoadKey accepted a short key")
	}
}

// TestInstanceSortAndSeen: the last-seen filter and the "most recently
// seen first" order use the store's indexed queries and keep paging.
func TestInstanceSortAndSeen(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	now := time.Now().UTC()
	err := e.srv.Store().Update(ctx, func(q store.TxQueries) error {
		for i := range 60 {
			err := q.PutInstance(ctx, store.Instance{
				AppID: omaha.FlatcarAppID, MachineID: fmt.Sprintf("%032x", i), Alias: fmt.Sprintf("n%02d", i),
				Group: "stable", Version: "1.0.0", Status: store.StatusIdle,
				// n00 was seen 0 h ago, n01 1 h ago, … n59 59 h ago.
				LastCheck: now.Add(-time.Duration(i) * time.Hour), StatusChanged: now, CreatedAt: now,
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c := e.login(t, e.srv.AdminToken)
	base := "/apps/" + omaha.FlatcarAppID + "/groups/stable"
	r := e.do(t, "GET", base+"?seen=stale-24h", c, nil)
	// n24 was seen 24 h before the test's clock, which is a little more
	// than 24 h before the request.
	if !strings.Contains(r.body, "(36 matching)") || strings.Contains(r.body, ">n23<") || !strings.Contains(r.body, ">n30<") {
		t.Fatalf("not seen for 24 h: want n24…n59 only\n%s", r.body)
	}
	r = e.do(t, "GET", base+"?seen=24h&sort=last-seen", c, nil)
	if !strings.Contains(r.body, "(24 matching)") {
		t.Fatalf("seen in 24 h: want 24\n%s", r.body)
	}
	if i0, i1 := strings.Index(r.body, ">n00<"), strings.Index(r.body, ">n01<"); i0 < 0 || i1 < 0 || i0 > i1 {
		t.Fatal("most recently seen first: n00 should come before n01")
	}
	r = e.do(t, "GET", base+"?sort=last-seen", c, nil)
	if strings.Contains(r.body, ">n55<") || !strings.Contains(r.body, ">n49<") {
		t.Fatal("last-seen order, first page of 50: want n00…n49")
	}
	r = e.do(t, "GET", base+"?seen=bogus&sort=bogus", c, nil)
	if r.code != 200 || !strings.Contains(r.body, "ignored") {
		t.Fatalf("unknown filter values: %d", r.code)
	}
}

// TestVersionChart: the group page charts the version samples the service
// records, with the live breakdown as the last point.
func TestVersionChart(t *testing.T) {
	e := startServer(t)
	ctx := context.Background()
	st := e.srv.Store()
	now := time.Now().UTC()
	put := func(id, version string) {
		t.Helper()
		if err := st.PutInstance(ctx, store.Instance{AppID: omaha.FlatcarAppID, MachineID: id, Group: "stable", Version: version,
			Status: store.StatusIdle, LastCheck: now, StatusChanged: now, CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	put("m1", "4081.2.0")
	put("m2", "4081.2.0")
	if _, err := st.SampleVersions(ctx, now.Add(-30*time.Minute)); err != nil {
		t.Fatal(err)
	}
	put("m2", "4152.2.0")
	c := e.login(t, e.srv.AdminToken)

	page := e.do(t, "GET", stablePath+"?chart=1h", c, nil)
	if page.code != http.StatusOK {
		t.Fatalf("group page: %d", page.code)
	}
	for _, want := range []string{`<svg class="chart"`, "Versions over time", "<strong>1 hour</strong>",
		"4081.2.0: 1 now, at most 2", "4152.2.0: 1 now, at most 1"} {
		if !strings.Contains(page.body, want) {
			t.Errorf("group page lacks %q", want)
		}
	}
	if n := strings.Count(page.body, `<path class="band"`); n != 2 {
		t.Errorf("%d bands drawn, want 2", n)
	}
	page = e.do(t, "GET", stablePath+"?chart=5y", c, nil)
	if !strings.Contains(page.body, "Unknown chart range") || !strings.Contains(page.body, "<strong>24 hours</strong>") {
		t.Errorf("an unknown range does not fall back to 24 hours with a notice")
	}
	// An empty group says so instead of drawing an empty chart.
	page = e.do(t, "GET", "/apps/"+omaha.FlatcarAppID+"/groups/beta", c, nil)
	if page.code != http.StatusOK || !strings.Contains(page.body, "No machines in this group") {
		t.Errorf("empty group: %d, no empty-chart message", page.code)
	}
}
