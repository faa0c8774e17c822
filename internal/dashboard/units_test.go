package dashboard_test

import (
	"context"
	"fmt"
	"html"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flotilla/flotilla/internal/dashboard"
	"github.com/flotilla/flotilla/internal/fleet"
	"github.com/flotilla/flotilla/internal/fleet/unitfile"
	"github.com/flotilla/flotilla/internal/restapi"
	"github.com/flotilla/flotilla/internal/server"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/omaha"
)

// memDriver is a unit driver that runs nothing: a started unit is active
// until stopped. It lets real unit agents report states.
type memDriver struct {
	mu    sync.Mutex
	units map[string]string // name -> hash
}

func (d *memDriver) Start(_ context.Context, f *unitfile.File) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.units == nil {
		d.units = map[string]string{}
	}
	d.units[f.Name.Full] = f.Hash
	return nil
}

func (d *memDriver) Stop(_ context.Context, name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.units, name)
	return nil
}

func (d *memDriver) State(_ context.Context, name string) (fleet.DriverState, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if h, ok := d.units[name]; ok {
		return fleet.DriverState{Load: "loaded", Active: "active", Sub: "running", Hash: h, Starts: 1}, nil
	}
	return fleet.DriverState{Load: "not-found", Active: "inactive", Sub: "dead"}, nil
}

// waitRegistry waits until cond holds for the server's unit registry,
// re-reading it whenever a key under the registry's prefix changes.
func waitRegistry(t *testing.T, srv *server.Server, what string, cond func(fleet.Snapshot) bool) fleet.Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reg := srv.Units()
	for {
		s, err := reg.Snapshot(ctx)
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if cond(s) {
			return s
		}
		wctx, wcancel := context.WithCancel(ctx)
		wch := srv.Etcd().Client().Watch(wctx, reg.Prefix(), clientv3.WithPrefix(), clientv3.WithRev(s.Revision+1))
		select {
		case <-wch:
		case <-ctx.Done():
		}
		wcancel()
		if ctx.Err() != nil {
			t.Fatalf("timed out waiting for %s; registry: %+v", what, s)
		}
	}
}

// Machine ids of seedUnits.
const (
	machineA = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
	machineB = "b2c3d4e5f60718293a4b5c6d7e8f90a1"
	machineC = "c3d4e5f60718293a4b5c6d7e8f90a1b2"
)

// seedUnits registers two machines with real unit agents (machineB then
// drains), one machine that went away (unknown), and submits units in
// every state: placed and running, Global, loaded, inactive, a template
// and one no machine matches. extra is appended to machine A's metadata
// value and address (for the escaping test). It returns when the engine
// has placed the units and the agents have reported them.
func seedUnits(t *testing.T, srv *server.Server, extra string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	cli := srv.Etcd().Client()
	reg := srv.Units()

	// Machine C registers and leaves before any unit exists.
	cctx, ccancel := context.WithCancel(ctx)
	cdone := make(chan error, 1)
	go func() {
		cdone <- reg.Register(cctx, fleet.Machine{ID: machineC, Address: "10.0.0.13", Version: "4081.2.0", Metadata: map[string]string{"region": "us-east"}})
	}()
	waitRegistry(t, srv, "machine C alive", func(s fleet.Snapshot) bool { return machineState(s, machineC) == fleet.MachineAlive })
	ccancel()
	if err := <-cdone; err != nil {
		t.Fatal(err)
	}

	for _, m := range []fleet.Machine{
		{ID: machineA, Address: "10.0.0.11" + extra, Version: "4152.2.0", Metadata: map[string]string{"region": "eu-west" + extra, "disk": "ssd"}},
		{ID: machineB, Address: "10.0.0.12", Version: "4152.2.0", Metadata: map[string]string{"region": "eu-west"}},
	} {
		cfg := fleet.DefaultAgentConfig()
		cfg.Machine = m
		cfg.Prefix = reg.Prefix()
		cfg.StateInterval = 100 * time.Millisecond
		a, err := fleet.NewUnitAgent(cli, cfg, &memDriver{}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if err := a.Run(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("agent %s: %v", m.ID, err)
			}
		})
	}
	waitRegistry(t, srv, "agents alive, machine C unknown", func(s fleet.Snapshot) bool {
		return machineState(s, machineA) == fleet.MachineAlive && machineState(s, machineB) == fleet.MachineAlive &&
			machineState(s, machineC) == fleet.MachineUnknown
	})

	units := []struct {
		name, body string
		desired    fleet.DesiredState
	}{
		{"web@.service", "[Service]\nExecStart=/usr/bin/web %i\n", fleet.Inactive},
		{"web@1.service", "", fleet.Launched},
		{"node-exporter.service", "[Service]\nExecStart=/usr/bin/node_exporter\n\n[X-Fleet]\nGlobal=true\n", fleet.Launched},
		{"cache.service", "[Service]\nExecStart=/usr/bin/memcached\n", fleet.Loaded},
		{"backup.service", "[Service]\nExecStart=/usr/bin/backup\n", fleet.Inactive},
		{"gpu-train.service", "[Service]\nExecStart=/usr/bin/train\n\n[X-Fleet]\nMachineMetadata=gpu=true\n", fleet.Launched},
	}
	for _, u := range units {
		if _, err := reg.SubmitUnit(ctx, u.name, u.body, false); err != nil {
			t.Fatal(err)
		}
		if u.desired != fleet.Inactive {
			if err := reg.SetDesiredState(ctx, u.name, u.desired); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitRegistry(t, srv, "units placed and reported", func(s fleet.Snapshot) bool {
		st := map[string]fleet.UnitStatus{}
		for _, u := range s.UnitStatuses() {
			st[u.Name] = u
		}
		return st["web@1.service"].Current == fleet.Launched && len(st["node-exporter.service"].Machines) == 2 &&
			st["node-exporter.service"].Current == fleet.Launched && st["cache.service"].Current == fleet.Loaded &&
			st["gpu-train.service"].Reason != "" && len(s.States) >= 4
	})
	if err := reg.SetDraining(ctx, machineB, true); err != nil {
		t.Fatal(err)
	}
}

func machineState(s fleet.Snapshot, id string) fleet.MachineState {
	for _, m := range s.Machines {
		if m.ID == id {
			return m.State
		}
	}
	return ""
}

func TestUnitsPage(t *testing.T) {
	e := startServer(t)
	_, secret := e.newToken(t, restapi.RoleViewer)
	c := e.login(t, secret)

	// Empty registry.
	r := e.do(t, "GET", "/units", c, nil)
	if r.code != http.StatusOK {
		t.Fatalf("GET /units: %d\n%s", r.code, r.body)
	}
	for _, want := range []string{"No units submitted", "No machines have registered", `href="/units" aria-current="page"`} {
		if !strings.Contains(r.body, want) {
			t.Errorf("empty units page lacks %q", want)
		}
	}

	seedUnits(t, e.srv, "")
	r = e.do(t, "GET", "/units", c, nil)
	if r.code != http.StatusOK {
		t.Fatalf("GET /units: %d\n%s", r.code, r.body)
	}
	row := func(id string) string {
		t.Helper()
		i := strings.Index(r.body, `<tr id="`+id+`">`)
		if i < 0 {
			t.Fatalf("units page has no row %s:\n%s", id, r.body)
		}
		j := strings.Index(r.body[i:], "</tr>")
		return r.body[i : i+j]
	}
	for id, wants := range map[string][]string{
		"unit-web@1.service":         {"▶</span> launched", "running", "#machine-"},
		"unit-node-exporter.service": {"◎ global", `title="` + machineA + `"`, `title="` + machineB + `"`},
		"unit-cache.service":         {"◐</span> loaded"},
		"unit-backup.service":        {"○</span> inactive", "—"},
		"unit-gpu-train.service":     {"✗ unschedulable", "no eligible machine", "(converging)"},
		"machine-" + machineA:        {"a1b2c3d4e5f6…", "10.0.0.11", "region=eu-west", "disk=ssd", "●</span> alive", "4152.2.0"},
		"machine-" + machineB:        {"●</span> alive", "⇣ draining"},
		"machine-" + machineC:        {"?</span> unknown", "region=us-east", "10.0.0.13"},
	} {
		got := row(id)
		for _, w := range wants {
			if !strings.Contains(got, w) {
				t.Errorf("row %s lacks %q:\n%s", id, w, got)
			}
		}
	}
	if strings.Contains(r.body, `id="unit-web@.service"`) {
		t.Error("the template is listed as a unit")
	}
	if !strings.Contains(r.body, "5 unit(s) and 1 template(s) · 3 machine(s), 2 alive · <strong>1 unschedulable</strong>") {
		t.Errorf("units page summary missing:\n%s", r.body)
	}
	// Units per machine: A runs node-exporter and maybe web@1 and cache.
	s, err := e.srv.Units().Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range s.Assignments {
		if a.Machine == machineA {
			n++
		}
	}
	if got := row("machine-" + machineA); n == 0 || !strings.Contains(got, fmt.Sprintf("<td>%d</td>", n)) {
		t.Errorf("machine A runs %d units; row:\n%s", n, got)
	}
	if strings.Contains(r.body, "<form") && strings.Contains(r.body, "method=\"post\" action=\"/units") {
		t.Error("the units page has a form")
	}
}

func TestUnitsPageWithoutRegistry(t *testing.T) {
	e := startServer(t)
	bare := newHandlerWithoutUnits(t, e)
	r := bare.do(t, "GET", "/units", bare.login(t, e.srv.AdminToken), nil)
	if r.code != http.StatusOK || !strings.Contains(r.body, "This server has no unit registry") {
		t.Fatalf("GET /units without a registry: %d\n%s", r.code, r.body)
	}
	if strings.Contains(r.body, "No units submitted") {
		t.Error("page without a registry claims an empty registry")
	}
}

func TestUnitsPageNeedsSession(t *testing.T) {
	e := startServer(t)
	r := e.do(t, "GET", "/units", nil, nil)
	if r.code != http.StatusSeeOther || !strings.HasPrefix(r.header.Get("Location"), "/login?next=%2Funits") {
		t.Fatalf("GET /units without a session: %d %q", r.code, r.header.Get("Location"))
	}
}

// putConfig stores a group config version directly in the store.
func putConfig(t *testing.T, st store.Store, group, doc, author, comment string, at time.Time) int {
	t.Helper()
	v, err := st.PutGroupConfig(context.Background(), store.GroupConfig{AppID: omaha.FlatcarAppID, Group: group, Document: doc,
		Format: "cloud-config", Author: author, Comment: comment, CreatedAt: at})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func putReport(t *testing.T, st store.Store, id, group string, version int, drift []string, errText string, at time.Time) {
	t.Helper()
	if err := st.PutConfigReport(context.Background(), store.ConfigReport{AppID: omaha.FlatcarAppID, MachineID: id, Group: group,
		Version: version, AppliedAt: at, Drift: drift, Error: errText, ReportedAt: at}); err != nil {
		t.Fatal(err)
	}
}

// seedConfig gives group stable three config versions and reports from
// five machines: three on the latest (one drifted), one on the first
// version, one that failed to apply.
func seedConfig(t *testing.T, st store.Store, extra string) {
	t.Helper()
	now := time.Now().UTC()
	putConfig(t, st, "stable", "#cloud-config\nhostname: node\n", "alice", "first config", now.Add(-3*time.Hour))
	putConfig(t, st, "stable", "#cloud-config\nhostname: node\nwrite_files:\n  - path: /etc/motd\n    content: hello\n", "alice", "motd", now.Add(-2*time.Hour))
	putConfig(t, st, "stable", "#cloud-config\nhostname: node\nwrite_files:\n  - path: /etc/motd\n    content: welcome to flotilla"+extra+"\n",
		"bob"+extra, "motd: new text"+extra, now.Add(-30*time.Minute))
	putReport(t, st, "c001d1f7a0b34e5f6071829304a5b6c7", "stable", 3, nil, "", now.Add(-5*time.Minute))
	putReport(t, st, "c002d1f7a0b34e5f6071829304a5b6c7", "stable", 3, nil, "", now.Add(-4*time.Minute))
	putReport(t, st, "c003d1f7a0b34e5f6071829304a5b6c7", "stable", 3,
		[]string{"/etc/motd: content differs" + extra, "/etc/hosts: mode 0600, want 0644"}, "", now.Add(-3*time.Minute))
	putReport(t, st, "c004d1f7a0b34e5f6071829304a5b6c7", "stable", 1, nil, "", now.Add(-2*time.Hour))
	putReport(t, st, "c005d1f7a0b34e5f6071829304a5b6c7", "stable", 2, nil, "write /etc/motd: read-only file system"+extra, now.Add(-time.Minute))
}

func TestGroupConfigCard(t *testing.T) {
	e := startServer(t)
	_, secret := e.newToken(t, restapi.RoleViewer)
	c := e.login(t, secret)

	r := e.do(t, "GET", stablePath, c, nil)
	if r.code != http.StatusOK || !strings.Contains(r.body, `id="config-none"`) || !strings.Contains(r.body, "flotilla config set-group stable FILE") {
		t.Fatalf("group without config: %d, no empty state\n%s", r.code, r.body)
	}

	// One version: no diff, no reports yet.
	st := e.srv.Store()
	putConfig(t, st, "beta", "#cloud-config\nhostname: b\n", "carol", "only one", time.Now())
	r = e.do(t, "GET", "/apps/"+omaha.FlatcarAppID+"/groups/beta", c, nil)
	for _, want := range []string{"This is the group's first version.", "No machine has reported yet.", "carol", "only one"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("beta config card lacks %q", want)
		}
	}

	seedConfig(t, st, "")
	r = e.do(t, "GET", stablePath, c, nil)
	if r.code != http.StatusOK {
		t.Fatalf("GET group: %d", r.code)
	}
	card := section(t, r.body, `id="config"`)
	for _, want := range []string{
		"<strong>3</strong>", "bob", "motd: new text", "cloud-config",
		"5 reporting · 3 on version 3", "⚠ 1 drifted", "✗ 1 with errors",
		"3 in all",
		// machines per applied version, newest first
		"<tr><td>3 <span class=\"badge st-complete\">✓ current</span></td><td>3</td></tr>",
		"<tr><td>2</td><td>1</td></tr>", "<tr><td>1</td><td>1</td></tr>",
		// problems: the error first, then the drift
		"read-only file system", "/etc/motd: content differs", "/etc/hosts: mode 0600, want 0644",
		// diff of 3 against 2
		"--- stable version 2", "+++ stable version 3", "-    content: hello", "+    content: welcome to flotilla",
	} {
		if !strings.Contains(card, want) && !strings.Contains(html.UnescapeString(card), want) {
			t.Errorf("config card lacks %q", want)
		}
	}
	if i, j := strings.Index(card, "c005"), strings.Index(card, "c003"); i < 0 || j < 0 || i > j {
		t.Errorf("errors are not listed before drift (%d, %d)", i, j)
	}
	for _, notWant := range []string{"c001", "c002", "c004"} {
		if strings.Contains(card, notWant) {
			t.Errorf("converged machine %s is listed as a problem", notWant)
		}
	}

	// History shows the last 10 of 12 versions.
	for i := range 9 {
		putConfig(t, st, "stable", "#cloud-config\nhostname: node-"+string(rune('a'+i))+"\n", "alice", "", time.Now())
	}
	card = section(t, e.do(t, "GET", stablePath, c, nil).body, `id="config"`)
	hist := section(t, card, `id="config-history"`)
	if n := strings.Count(hist, "<tr><td>"); n != 10 {
		t.Errorf("history lists %d versions, want 10", n)
	}
	if !strings.Contains(card, "last 10 of 12") || !strings.Contains(hist, "<td>12</td>") || strings.Contains(hist, "<td>2</td>") {
		t.Errorf("history is not the last 10 versions:\n%s", hist)
	}
}

// section returns body from the element whose start tag contains attr to
// its closing tag (the first closing tag of that element's name).
func section(t *testing.T, body, attr string) string {
	t.Helper()
	i := strings.Index(body, attr)
	if i < 0 {
		t.Fatalf("no element with %s", attr)
	}
	start := strings.LastIndex(body[:i], "<")
	name := strings.FieldsFunc(body[start+1:], func(r rune) bool { return r == ' ' || r == '>' })[0]
	end := strings.Index(body[start:], "</"+name+">")
	if end < 0 {
		t.Fatalf("element with %s is not closed", attr)
	}
	return body[start : start+end]
}

func TestUnitsAndConfigEscaping(t *testing.T) {
	e := startServer(t)
	seedUnits(t, e.srv, xss1+xss2)
	seedConfig(t, e.srv.Store(), xss1+xss2)
	c := e.login(t, e.srv.AdminToken)
	for _, p := range []string{"/units", stablePath} {
		r := e.do(t, "GET", p, c, nil)
		if r.code != http.StatusOK {
			t.Fatalf("GET %s: %d", p, r.code)
		}
		for _, raw := range []string{xss1, xss2, "<img", "<script>"} {
			if strings.Contains(r.body, raw) {
				t.Errorf("GET %s: raw %q in the page", p, raw)
			}
		}
		if !strings.Contains(r.body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
			t.Errorf("GET %s: the hostile string is not shown escaped", p)
		}
	}
	diff := section(t, e.do(t, "GET", stablePath, c, nil).body, `id="config-diff"`)
	if !strings.Contains(diff, "&#43;    content: welcome to flotilla&lt;script&gt;alert(1)&lt;/script&gt;&#34;&#39;&gt;&lt;img") {
		t.Errorf("diff not escaped as expected:\n%s", diff)
	}
}

// newHandlerWithoutUnits is a dashboard on e's server without a unit
// registry (as New is called without WithUnits), served on its own port.
func newHandlerWithoutUnits(t *testing.T, e *env) *env {
	t.Helper()
	h, err := dashboard.New(e.srv.Service(), []byte("0123456789abcdef0123456789abcdef"), e.srv.Locks(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return &env{srv: e.srv, base: ts.URL}
}
