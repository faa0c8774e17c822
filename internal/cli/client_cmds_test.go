package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/flotilla/flotilla/api/v1"
)

const testApp = "e96281a6-d1af-4bde-9a0a-97b76e56dc57"

// seen is one request the fake API received.
type seen struct {
	method, path string
	query        map[string][]string
	auth         string
	body         []byte
}

// fakeAPI is a loopback stand-in for the REST API: canned answers by
// "METHOD /path" (unescaped), an error envelope for anything else.
type fakeAPI struct {
	srv     *httptest.Server
	mu      sync.Mutex
	reqs    []seen
	answers map[string]func(r *http.Request) (int, any)
}

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{answers: map[string]func(*http.Request) (int, any){}}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, seen{r.Method, r.URL.Path, r.URL.Query(), r.Header.Get("Authorization"), b})
		h := f.answers[r.Method+" "+r.URL.Path]
		f.mu.Unlock()
		status, body := http.StatusNotFound, any(v1.Error{Kind: v1.KindNotFound, Message: "no such thing: " + r.URL.Path})
		if h != nil {
			status, body = h(r)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		if body != nil {
			_ = json.NewEncoder(w).Encode(body)
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) answer(route string, status int, body any) {
	f.handle(route, func(*http.Request) (int, any) { return status, body })
}

func (f *fakeAPI) handle(route string, h func(*http.Request) (int, any)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[route] = h
}

func (f *fakeAPI) requests() []seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seen(nil), f.reqs...)
}

// run executes the CLI in-process against the fake API.
func (f *fakeAPI) run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	t.Setenv("FLOTILLA_TOKEN", "")
	var out, errb bytes.Buffer
	full := append([]string{"--server", f.srv.URL, "--token", "t0ken"}, args...)
	code = Run(context.Background(), full, strings.NewReader(""), &out, &errb, nil)
	return code, out.String(), errb.String()
}

func instancesPath() string { return "/api/v1/apps/" + testApp + "/instances" }

func sampleInstances(now time.Time) v1.InstanceList {
	return v1.InstanceList{
		Instances: []v1.Instance{
			{AppID: testApp, MachineID: "0a1b2c3d", Alias: "web-1", Group: "production", Version: "3815.2.0",
				Status: "complete", LastCheck: now.Add(-3 * time.Minute)},
			{AppID: testApp, MachineID: "ffee0011", Group: "production", Version: "3760.2.0",
				Status: "error", LastCheck: now.Add(-2 * time.Hour)},
		},
		Total:      5,
		NextCursor: "CUR2",
	}
}

func TestInstanceListTable(t *testing.T) {
	f := newFakeAPI(t)
	f.answer("GET "+instancesPath(), 200, sampleInstances(time.Now()))

	code, out, errOut := f.run(t, "instance", "list", "--app", testApp, "--group", "production", "--status", "error", "--limit", "2")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("want header + 2 rows, got:\n%s", out)
	}
	header := regexp.MustCompile(`\s{3,}`).Split(lines[0], -1)
	want := []string{"MACHINE ID", "ALIAS", "GROUP", "VERSION", "STATUS", "LAST CHECK"}
	if strings.Join(header, "|") != strings.Join(want, "|") {
		t.Errorf("header = %q, want %q", header, want)
	}
	for _, frag := range []string{"0a1b2c3d", "web-1", "complete", "3m ago"} {
		if !strings.Contains(lines[1], frag) {
			t.Errorf("row 1 %q lacks %q", lines[1], frag)
		}
	}
	if !strings.Contains(lines[2], "2h ago") || !strings.Contains(lines[2], "error") {
		t.Errorf("row 2 = %q", lines[2])
	}
	// Columns line up: every row has LAST CHECK where the header has it.
	col := strings.Index(lines[0], "LAST CHECK")
	for _, l := range lines[1:] {
		if len(l) < col || l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("row %q not aligned at column %d", l, col)
		}
	}
	if !strings.Contains(errOut, "more: --cursor CUR2") {
		t.Errorf("stderr %q lacks the cursor hint", errOut)
	}

	reqs := f.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.auth != "Bearer t0ken" {
		t.Errorf("Authorization = %q", r.auth)
	}
	for k, v := range map[string]string{"group": "production", "status": "error", "limit": "2", "sort": "machine_id"} {
		if got := r.query[k]; len(got) != 1 || got[0] != v {
			t.Errorf("query %s = %q, want %q", k, got, v)
		}
	}
}

func TestInstanceListJSON(t *testing.T) {
	f := newFakeAPI(t)
	f.answer("GET "+instancesPath(), 200, sampleInstances(time.Now()))

	code, out, errOut := f.run(t, "instance", "list", "--app", testApp, "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	var got v1.InstanceList
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("stdout is not an InstanceList: %v\n%s", err, out)
	}
	if len(got.Instances) != 2 || got.Total != 5 || got.NextCursor != "CUR2" || got.Instances[0].Alias != "web-1" {
		t.Errorf("decoded %+v", got)
	}
	for _, key := range []string{`"machine_id"`, `"last_check"`, `"next_cursor"`} {
		if !strings.Contains(out, key) {
			t.Errorf("JSON lacks %s", key)
		}
	}
	if !strings.Contains(out, "\n  \"instances\"") {
		t.Error("JSON is not indented")
	}
}

func TestInstanceListAllFollowsCursors(t *testing.T) {
	f := newFakeAPI(t)
	now := time.Now()
	f.handle("GET "+instancesPath(), func(r *http.Request) (int, any) {
		page := sampleInstances(now)
		if r.URL.Query().Get("cursor") == "CUR2" {
			page.Instances = []v1.Instance{{MachineID: "last", Status: "idle", LastCheck: now}}
			page.NextCursor = ""
		}
		return 200, page
	})
	code, out, errOut := f.run(t, "instance", "list", "--app", testApp, "--all", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	var got v1.InstanceList
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Instances) != 3 || got.NextCursor != "" || got.Instances[2].MachineID != "last" {
		t.Errorf("got %+v", got)
	}
	if strings.Contains(errOut, "more:") {
		t.Errorf("--all printed a paging hint: %q", errOut)
	}
	if n := len(f.requests()); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"missing app", []string{"instance", "list"}, "--app"},
		{"bad output", []string{"instance", "list", "--app", testApp, "-o", "yaml"}, `"yaml"`},
		{"bad output app list", []string{"app", "list", "-o", "wide"}, `"wide"`},
		{"bad status", []string{"instance", "list", "--app", testApp, "--status", "broken"}, "rolled-back"},
		{"bad sort", []string{"instance", "list", "--app", testApp, "--sort", "alias"}, "--sort"},
		{"bad seen-before", []string{"instance", "list", "--app", testApp, "--seen-before", "yesterday"}, "--seen-before"},
		{"unknown flag", []string{"instance", "list", "--app", testApp, "--colour"}, "colour"},
		{"missing several", []string{"group", "create", "--app", testApp}, "--name, --channel"},
		{"missing package flags", []string{"package", "create", "--app", testApp, "--version", "1"}, "--url"},
		{"bad sha256", []string{"package", "create", "--app", testApp, "--version", "1", "--url", "u", "--file", "f", "--size", "1", "--sha256", "nope"}, "--sha256"},
		{"machine id missing", []string{"instance", "show", "--app", testApp}, "MACHINE_ID"},
		{"unknown subcommand", []string{"group", "frobnicate"}, "frobnicate"},
		{"set-policy nothing", []string{"group", "set-policy", "--app", testApp, "--name", "prod"}, "nothing to change"},
		{"rate and max-updates", []string{"group", "set-policy", "--app", testApp, "--name", "prod", "--rate", "5/1h", "--max-updates", "3"}, "--rate"},
		{"bad rate", []string{"group", "set-policy", "--app", testApp, "--name", "prod", "--rate", "fast"}, "--rate"},
		{"percent range", []string{"group", "set-policy", "--app", testApp, "--name", "prod", "--percent", "120"}, "--percent"},
		{"bad duration", []string{"group", "set-policy", "--app", testApp, "--name", "prod", "--ramp", "soon"}, "ramp"},
		{"window and clear", []string{"group", "set-policy", "--app", testApp, "--name", "prod", "--window", "Mon 01:00-02:00", "--clear-windows"}, "--clear-windows"},
		{"bad error code", []string{"errorcode", "ten"}, "ten"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(t)
			code, _, errOut := f.run(t, tc.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2; stderr %q", code, errOut)
			}
			if !strings.Contains(errOut, tc.want) {
				t.Errorf("stderr %q lacks %q", errOut, tc.want)
			}
			if n := len(f.requests()); n != 0 {
				t.Errorf("usage error still sent %d request(s)", n)
			}
		})
	}
}

func TestAPIErrorExitsOne(t *testing.T) {
	f := newFakeAPI(t)
	f.answer("GET /api/v1/apps/"+testApp+"/groups/nope", 404, v1.Error{Kind: v1.KindNotFound, Message: "group nope not found"})
	code, out, errOut := f.run(t, "group", "show", "--app", testApp, "--name", "nope")
	if code != 1 || out != "" {
		t.Errorf("exit %d, stdout %q", code, out)
	}
	if !strings.Contains(errOut, "group nope not found") || strings.Contains(errOut, "--help") {
		t.Errorf("stderr = %q", errOut)
	}
}

func TestSetPolicySendsOnlyChangedFields(t *testing.T) {
	route := "PATCH /api/v1/apps/" + testApp + "/groups/prod/policy"
	tests := []struct {
		name string
		args []string
		want string // exact JSON body
	}{
		{"rate percent bypass", []string{"--rate", "20/1h", "--percent", "12.5", "--on-demand-bypass=false"},
			`{"max_updates_per_period":20,"period":"1h0m0s","rollout_percent":12.5,"on_demand_bypasses_limits":false}`},
		{"windows", []string{"--window", "Mon-Fri 09:00-17:00", "--window", "Sat 10:00-12:00", "--timezone", "Europe/Berlin"},
			`{"windows":["Mon-Fri 09:00-17:00","Sat 10:00-12:00"],"time_zone":"Europe/Berlin"}`},
		{"clear windows", []string{"--clear-windows"}, `{"windows":[]}`},
		{"zeroes are sent", []string{"--max-in-progress", "0", "--ramp", "0", "--auto-pause-failures", "0"},
			`{"max_in_progress":0,"ramp_duration":"0s","auto_pause_failures":0}`},
		{"period and timeout", []string{"--max-updates", "5", "--period", "30m", "--timeout", "2h"},
			`{"max_updates_per_period":5,"period":"30m0s","update_timeout":"2h0m0s"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(t)
			f.answer(route, 200, v1.Group{AppID: testApp, Name: "prod", Policy: v1.Policy{Period: "1h0m0s"}})
			args := append([]string{"group", "set-policy", "--app", testApp, "--name", "prod"}, tc.args...)
			code, _, errOut := f.run(t, args...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			reqs := f.requests()
			if len(reqs) != 1 || reqs[0].method+" "+reqs[0].path != route {
				t.Fatalf("requests = %+v", reqs)
			}
			if got := compactJSON(t, reqs[0].body); got != tc.want {
				t.Errorf("body = %s\nwant   %s", got, tc.want)
			}
		})
	}
}

func compactJSON(t *testing.T, b []byte) string {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatalf("body %q: %v", b, err)
	}
	return buf.String()
}

func TestGroupCreateMergesPolicyFlagsIntoDefaults(t *testing.T) {
	f := newFakeAPI(t)
	route := "POST /api/v1/apps/" + testApp + "/groups"
	f.answer(route, 201, v1.Group{Name: "prod", Track: "prod", Channel: "stable"})

	code, out, errOut := f.run(t, "group", "create", "--app", testApp, "--name", "prod", "--channel", "stable", "--rate", "5/1h")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if !strings.Contains(out, "group prod created") {
		t.Errorf("stdout = %q", out)
	}
	var body v1.CreateGroup
	if err := json.Unmarshal(f.requests()[0].body, &body); err != nil {
		t.Fatal(err)
	}
	want := defaultPolicy()
	want.MaxUpdatesPerPeriod, want.Period = 5, "1h0m0s"
	if body.Name != "prod" || body.Channel != "stable" || body.Track != "" || body.Policy == nil {
		t.Fatalf("body = %+v", body)
	}
	gotP, _ := json.Marshal(body.Policy)
	wantP, _ := json.Marshal(want)
	if string(gotP) != string(wantP) {
		t.Errorf("policy = %s\nwant     %s", gotP, wantP)
	}

	// Without policy flags the server's defaults apply: no policy is sent.
	code, _, errOut = f.run(t, "group", "create", "--app", testApp, "--name", "prod", "--channel", "stable")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	reqs := f.requests()
	if strings.Contains(string(reqs[len(reqs)-1].body), "policy") {
		t.Errorf("policy sent without policy flags: %s", reqs[len(reqs)-1].body)
	}
}

func TestGroupStatusAllGroups(t *testing.T) {
	f := newFakeAPI(t)
	base := "/api/v1/apps/" + testApp + "/groups"
	f.answer("GET "+base, 200, []v1.Group{{Name: "canary"}, {Name: "prod"}})
	f.answer("GET "+base+"/canary/status", 200, v1.GroupStatus{Group: "canary", Channel: "stable", TargetVersion: "2.0",
		CurrentPercent: 100, Total: 3, OnTarget: 2, ByStatus: map[string]int{"complete": 2, "rolled-back": 1}})
	f.answer("GET "+base+"/prod/status", 200, v1.GroupStatus{Group: "prod", Channel: "stable", TargetVersion: "2.0",
		Paused: true, CurrentPercent: 12.5, Total: 10, ByStatus: map[string]int{"idle": 9, "granted": 1}})

	code, out, errOut := f.run(t, "group", "status", "--app", testApp)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("output:\n%s", out)
	}
	header := strings.Fields(lines[0])
	want := "GROUP CHANNEL TARGET PAUSED PERCENT TOTAL ON-TARGET IDLE GRANTED COMPLETE ROLLED-BACK"
	if strings.Join(header, " ") != want {
		t.Errorf("header = %q\nwant     %q", strings.Join(header, " "), want)
	}
	if got := strings.Join(strings.Fields(lines[2]), " "); got != "prod stable 2.0 yes 12.5% 10 0 9 1 0 0" {
		t.Errorf("prod row = %q", got)
	}

	code, out, _ = f.run(t, "group", "status", "--app", testApp, "-o", "json")
	var all []v1.GroupStatus
	if code != 0 || json.Unmarshal([]byte(out), &all) != nil || len(all) != 2 || all[0].Group != "canary" {
		t.Errorf("json: exit %d, %s", code, out)
	}
}

func TestGroupStatusOneGroup(t *testing.T) {
	f := newFakeAPI(t)
	f.answer("GET /api/v1/apps/"+testApp+"/groups/prod/status", 200, v1.GroupStatus{Group: "prod", Channel: "stable",
		TargetVersion: "2.0", Paused: true, PausedReason: "auto-paused: 1 failure", Total: 4, OnTarget: 1,
		ByVersion: map[string]int{"1.0": 3, "2.0": 1}, ByStatus: map[string]int{"idle": 3, "complete": 1}})
	code, out, errOut := f.run(t, "group", "status", "--app", testApp, "--name", "prod")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	for _, frag := range []string{"auto-paused: 1 failure", "VERSION", "2.0 (target)", "STATUS", "complete", "1 (25%)"} {
		if !strings.Contains(out, frag) {
			t.Errorf("output lacks %q:\n%s", frag, out)
		}
	}
}

func TestTokenFromDataDir(t *testing.T) {
	f := newFakeAPI(t)
	f.answer("GET /api/v1/apps", 200, []v1.App{})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "admin.token"), []byte("filetoken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FLOTILLA_TOKEN", "")
	var out, errb bytes.Buffer
	code := Run(context.Background(), []string{"--server", f.srv.URL, "--data-dir", dir, "app", "list", "-o", "json"},
		strings.NewReader(""), &out, &errb, nil)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if got := f.requests()[0].auth; got != "Bearer filetoken" {
		t.Errorf("Authorization = %q", got)
	}
	if strings.TrimSpace(out.String()) != "[]" {
		t.Errorf("stdout = %q, want []", out.String())
	}
}

func TestPackageCreateBody(t *testing.T) {
	f := newFakeAPI(t)
	route := "POST /api/v1/apps/" + testApp + "/packages"
	f.answer(route, 201, v1.Package{Version: "1.2.3", Arch: "arm64"})
	hexSum := strings.Repeat("ab", 32)
	code, out, errOut := f.run(t, "package", "create", "--app", testApp, "--version", "1.2.3", "--arch", "arm64",
		"--url", "https://example.com/1.2.3", "--file", "update.gz", "--size", "1000", "--sha256", hexSum,
		"--extra-file", "oem.raw:42::"+hexSum)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if !strings.Contains(out, "package 1.2.3 (arm64) created") {
		t.Errorf("stdout = %q", out)
	}
	var p v1.Package
	if err := json.Unmarshal(f.requests()[0].body, &p); err != nil {
		t.Fatal(err)
	}
	b64 := "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s="
	if p.SHA256 != b64 || p.Size != 1000 || p.File != "update.gz" || p.Arch != "arm64" {
		t.Errorf("package = %+v", p)
	}
	if len(p.ExtraFiles) != 1 || p.ExtraFiles[0] != (v1.PackageFile{Name: "oem.raw", Size: 42, SHA256: b64}) {
		t.Errorf("extra files = %+v", p.ExtraFiles)
	}
}

func TestConnectionErrorNamesServer(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	t.Setenv("FLOTILLA_TOKEN", "")
	var out, errb bytes.Buffer
	code := Run(context.Background(), []string{"--server", url, "--token", "x", "app", "list"},
		strings.NewReader(""), &out, &errb, nil)
	if code != 1 || !strings.Contains(errb.String(), url) || !strings.Contains(errb.String(), "flotilla server") {
		t.Errorf("exit %d, stderr %q", code, errb.String())
	}
}

func TestHelpers(t *testing.T) {
	if got := humanDuration("1h0m0s"); got != "1h" {
		t.Errorf("humanDuration(1h0m0s) = %q", got)
	}
	if got := humanDuration("1h30m0s"); got != "1h30m" {
		t.Errorf("humanDuration(1h30m0s) = %q", got)
	}
	if n, d, err := parseRate("100/d"); err != nil || n != 100 || d != 24*time.Hour {
		t.Errorf("parseRate(100/d) = %d, %v, %v", n, d, err)
	}
	now := time.Date(2024, 5, 8, 12, 0, 0, 0, time.UTC)
	if got, err := parseTimeArg("since", "7d", now); err != nil || !got.Equal(now.AddDate(0, 0, -7)) {
		t.Errorf("parseTimeArg(7d) = %v, %v", got, err)
	}
	if got, err := parseTimeArg("since", "2024-05-01T00:00:00Z", now); err != nil || got.Day() != 1 {
		t.Errorf("parseTimeArg(RFC 3339) = %v, %v", got, err)
	}
	if got := ago(time.Time{}); got != "never" {
		t.Errorf("ago(zero) = %q", got)
	}
}

func TestInstanceShow(t *testing.T) {
	f := newFakeAPI(t)
	base := instancesPath() + "/ffee0011"
	ec := &v1.ErrorCode{Raw: 2147483658, Code: 10, Name: "PayloadHashMismatch", Flags: []string{"DevMode"},
		Description: "hash mismatch", Hint: "check the sha256"}
	now := time.Now()
	f.answer("GET "+base, 200, v1.Instance{AppID: testApp, MachineID: "ffee0011", Group: "production",
		Version: "3760.2.0", Status: "error", LastError: ec, LastCheck: now.Add(-time.Minute)})
	f.answer("GET "+base+"/history", 200, v1.InstanceHistory{
		Statuses: []v1.StatusChange{{Status: "error", Version: "3815.2.0", Error: ec, At: now, Group: "production"}},
		Events:   []v1.Event{{Type: 3, Result: 0, Description: "update failed", Error: ec, At: now}},
	})
	code, out, errOut := f.run(t, "instance", "show", "--app", testApp, "ffee0011", "--history", "5")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	for _, frag := range []string{"ffee0011", "PayloadHashMismatch (code 10, raw 2147483658) [DevMode]",
		"Hint:", "check the sha256", "Status history", "update failed", "1m ago"} {
		if !strings.Contains(out, frag) {
			t.Errorf("output lacks %q:\n%s", frag, out)
		}
	}
	reqs := f.requests()
	if len(reqs) != 2 || reqs[1].query["limit"][0] != "5" {
		t.Errorf("requests = %+v", reqs)
	}

	code, out, _ = f.run(t, "instance", "show", "--app", testApp, "ffee0011", "-o", "json")
	var d struct {
		v1.Instance
		History v1.InstanceHistory `json:"history"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &d) != nil || d.MachineID != "ffee0011" || d.LastError == nil || d.LastError.Hint != "check the sha256" || len(d.History.Events) != 1 {
		t.Errorf("json: exit %d\n%s", code, out)
	}
}
