package dashboard_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/omaha"
)

// findBrowser returns the path of a Chromium-family browser, or "".
func findBrowser() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// seedFleet adds a small, varied fleet so that the pages (and their
// screenshots) show every status.
func seedFleet(t *testing.T, e *env) string {
	t.Helper()
	ctx := context.Background()
	st := e.srv.Store()
	svc := e.srv.Service()
	if err := svc.CreatePackage(ctx, store.Package{AppID: omaha.FlatcarAppID, Version: "4152.2.0", Arch: "amd64",
		BaseURL: "https://update.release.flatcar-linux.net/amd64-usr/4152.2.0", FileName: "flatcar_production_update.gz",
		Size: 300 << 20, SHA256: "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg="}); err != nil {
		t.Fatal(err)
	}
	if err := svc.SetChannelPackage(ctx, omaha.FlatcarAppID, "stable", "4152.2.0"); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	statuses := []store.Status{store.StatusComplete, store.StatusComplete, store.StatusComplete, store.StatusComplete,
		store.StatusDownloading, store.StatusInstalled, store.StatusOnHold, store.StatusOnHold, store.StatusError,
		store.StatusRolledBack, store.StatusTimedOut, store.StatusIdle}
	var failed string
	for i := range 36 {
		s := statuses[i%len(statuses)]
		in := store.Instance{AppID: omaha.FlatcarAppID, MachineID: fmt.Sprintf("%08x%024x", 0xa1b2c3d4+i*7919, i),
			Alias: fmt.Sprintf("node-%02d.dc1", i), IP: fmt.Sprintf("10.0.%d.%d", i/10, 10+i), OEM: "qemu", OEMVersion: "2.0",
			AlephVersion: "3975.2.0", Board: "amd64-usr", Group: "stable", Version: "4081.2.0", Status: s,
			LastCheck: now.Add(-time.Duration(i) * time.Minute), StatusChanged: now.Add(-time.Duration(i) * time.Minute), CreatedAt: now.Add(-72 * time.Hour)}
		if s == store.StatusComplete {
			in.Version = "4152.2.0"
		}
		if s != store.StatusIdle && s != store.StatusOnHold {
			in.GrantedVersion, in.GrantedAt = "4152.2.0", now.Add(-2*time.Hour)
		}
		if err := st.PutInstance(ctx, in); err != nil {
			t.Fatal(err)
		}
		if s == store.StatusError && failed == "" {
			failed = in.MachineID
			for j, c := range []struct {
				st   store.Status
				code int64
			}{{store.StatusGranted, 0}, {store.StatusDownloading, 0}, {store.StatusError, 268435490}} {
				at := now.Add(time.Duration(j-3) * 10 * time.Minute)
				if _, err := st.AddStatusChange(ctx, store.StatusChange{AppID: in.AppID, MachineID: in.MachineID, Group: "stable",
					Status: c.st, Version: "4152.2.0", ErrorCode: c.code, At: at}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := st.AddEvent(ctx, store.Event{AppID: in.AppID, MachineID: in.MachineID, Group: "stable", Type: 3, Result: 0,
				ErrorCode: 268435490, Version: "4081.2.0", At: now.Add(-10 * time.Minute)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	seedHistory(t, e, now)
	return failed
}

// seedHistory records version samples for the last five hours, as if the
// group's machines had moved to 4152.2.0 one by one, so the chart shows a
// rollout. The instances end as seedFleet left them.
func seedHistory(t *testing.T, e *env, now time.Time) {
	t.Helper()
	ctx := context.Background()
	st := e.srv.Store()
	pg, err := st.ListInstances(ctx, store.InstanceFilter{AppID: omaha.FlatcarAppID, Group: "stable", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var done []store.Instance
	for _, in := range pg.Instances {
		if in.Version == "4152.2.0" {
			done = append(done, in)
		}
	}
	const steps = 15
	for step := 0; step <= steps; step++ {
		for i, in := range done {
			in.Version = "4081.2.0"
			if i < step*len(done)/steps {
				in.Version = "4152.2.0"
			}
			if err := st.PutInstance(ctx, in); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := st.SampleVersions(ctx, now.Add(-time.Duration(steps-step)*20*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
}

// needBrowser returns the Chromium to drive, or skips the test.
func needBrowser(t *testing.T) string {
	t.Helper()
	browser := findBrowser()
	if browser == "" {
		t.Skip("no Chromium found (looked for chromium, chromium-browser, google-chrome in PATH); install one to run the browser test")
	}
	return browser
}

// openBrowser starts Chromium for one test (closed at its end) and returns
// its context with two helpers: text reads an element's text, do runs
// steps; both fail the test on an error.
func openBrowser(t *testing.T, browser string, timeout time.Duration) (context.Context, func(sel string) string, func(what string, steps ...chromedp.Action[chromedp.Void])) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.WindowSize(1440, 900))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, timeout)
	t.Cleanup(func() {
		cancelT()
		cancel()
		cancelA()
	})
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	return ctx, text, do
}

// signIn are the browser steps that sign in with the admin token and land
// on the overview.
func signIn(e *env) []chromedp.Action[chromedp.Void] {
	return []chromedp.Action[chromedp.Void]{
		chromedp.Navigate(e.base + "/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), e.srv.AdminToken),
		chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.ID("groups")),
	}
}

// saveScreenshot writes what a (a full-page or element screenshot)
// captures to docs/screenshots/NAME.png, only with FLOTILLA_SCREENSHOTS=1.
func saveScreenshot(t *testing.T, ctx context.Context, name string, a chromedp.Action[[]byte]) {
	t.Helper()
	if os.Getenv("FLOTILLA_SCREENSHOTS") != "1" {
		return
	}
	png, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join("..", "..", "docs", "screenshots", name+".png")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBrowser drives a real Chromium: sign in, pause and resume a group,
// promote a package, watch an instance's status change live.
// With FLOTILLA_SCREENSHOTS=1 it also saves docs/screenshots/*.png.
func TestBrowser(t *testing.T) {
	browser := needBrowser(t)
	e := startServer(t)
	failed := seedFleet(t, e)

	ctx, text, do := openBrowser(t, browser, 90*time.Second)
	shot := func(name string) { saveScreenshot(t, ctx, name, chromedp.FullScreenshot(100)) }

	do("sign in", signIn(e)...)
	if h1 := text("h1"); h1 != "Overview" {
		t.Fatalf("after sign-in the page heading is %q", h1)
	}
	shot("overview")

	do("open group", chromedp.Click(chromedp.CSS(`a[href$="/groups/stable"]`)), chromedp.WaitVisible(chromedp.ID("pause")))
	if h1 := text("h1"); !strings.Contains(h1, "stable") || !strings.Contains(h1, "active") {
		t.Fatalf("group heading %q", h1)
	}
	do("pause", chromedp.Click(chromedp.ID("pause")), chromedp.WaitVisible(chromedp.ID("resume")))
	if h1 := text("h1"); !strings.Contains(h1, "paused") {
		t.Fatalf("after pausing the heading is %q", h1)
	}
	if !e.paused(t, "stable") {
		t.Fatal("the browser's pause did not pause the group")
	}
	do("resume", chromedp.Click(chromedp.ID("resume")), chromedp.WaitVisible(chromedp.ID("pause")))
	if h1 := text("h1"); !strings.Contains(h1, "active") {
		t.Fatalf("after resuming the heading is %q", h1)
	}
	if e.paused(t, "stable") {
		t.Fatal("the browser's resume did not resume the group")
	}
	// Edit the policy: a bad value is shown next to its field and changes
	// nothing; a good one is saved.
	do("bad policy",
		chromedp.SetValue(chromedp.ID("f-rollout_percent"), "150"),
		chromedp.Click(chromedp.ID("save-policy")),
		chromedp.WaitVisible(chromedp.CSS(`#f-rollout_percent[aria-invalid="true"]`)))
	do("good policy",
		chromedp.SetValue(chromedp.ID("f-rollout_percent"), "40"),
		chromedp.SetValue(chromedp.ID("f-max_updates_per_period"), "25"),
		chromedp.Click(chromedp.ID("save-policy")),
		chromedp.WaitVisible(chromedp.CSS(".flash.success")))
	g, err := e.srv.Store().GetGroup(ctx, omaha.FlatcarAppID, "stable")
	if err != nil {
		t.Fatal(err)
	}
	if g.Policy.RolloutPercent != 40 || g.Policy.MaxUpdatesPerPeriod != 25 {
		t.Fatalf("policy after the browser's edit: %+v", g.Policy)
	}
	do("chart range", chromedp.Click(chromedp.CSS(`.chart-ranges a[href$="chart=6h"]`)), chromedp.WaitVisible(chromedp.CSS("svg.chart path.band")))
	if legend := text("#versions-chart .legend"); !strings.Contains(legend, "4152.2.0") || !strings.Contains(legend, "4081.2.0") {
		t.Fatalf("chart legend %q", legend)
	}
	shot("group")

	do("open instance", chromedp.Navigate(e.base+"/apps/"+omaha.FlatcarAppID+"/instances/"+failed), chromedp.WaitVisible(chromedp.CSS(".timeline")))
	if tl := text(".timeline"); !strings.Contains(tl, "OmahaResponseInvalid (34)") {
		t.Fatalf("instance timeline lacks the decoded error: %q", tl)
	}
	shot("instance")

	// Promote a package: point channel beta at 4152.2.0 from the packages page.
	do("open packages", chromedp.Click(chromedp.CSS(`nav a[href="/packages"]`)), chromedp.WaitVisible(chromedp.ID("channel-beta")))
	do("promote",
		chromedp.SetValue(chromedp.CSS(`#channel-beta select`), "4152.2.0"),
		chromedp.Click(chromedp.CSS(`#channel-beta button.promote`)),
		chromedp.WaitVisible(chromedp.CSS(".flash.success")),
	)
	if ch, err := e.srv.Store().GetChannel(context.Background(), omaha.FlatcarAppID, "beta"); err != nil || ch.PackageVersion != "4152.2.0" {
		t.Fatalf("after promoting in the browser channel beta is %+v (%v)", ch, err)
	}
	if v := text(`#channel-beta`); !strings.Contains(v, "4152.2.0") {
		t.Fatalf("channel row after promoting: %q", v)
	}
	shot("packages")

	// Watch a machine's status change live: it is granted the update, the
	// instance page is opened, then the machine reports that it started
	// downloading; the badge must change without a reload.
	m := &machine{c: &omaha.Client{URL: e.base + omaha.DefaultPath}, id: "5eed00000000000000000000000000aa", track: "beta", version: "4081.2.0"}
	if st, err := m.send(ctx, omaha.App{Ping: &omaha.Ping{Active: 1}, UpdateCheck: &omaha.UpdateCheck{}}); err != nil || st.UpdateCheck == nil || st.UpdateCheck.Status != "ok" {
		t.Fatalf("update check: %+v, %v", st, err)
	}
	do("open live instance",
		chromedp.Navigate(e.base+"/apps/"+omaha.FlatcarAppID+"/instances/"+m.id),
		chromedp.WaitVisible(chromedp.CSS(`body[data-live="on"]`)),
	)
	if h1 := text("#title"); !strings.Contains(h1, "granted") {
		t.Fatalf("instance heading before the event: %q", h1)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.flotillaNoReload = 7`)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.send(ctx, omaha.App{Events: []omaha.Event{{Type: 13, Result: 1}}}); err != nil {
		t.Fatalf("download-started event: %v", err)
	}
	// Poll fails if the page navigates, so passing means no reload.
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](`document.querySelector("#title").textContent.includes("downloading")`,
		chromedp.WithPollingTimeout(15*time.Second))); err != nil {
		t.Fatalf("the status badge did not change live: %v (heading %q)", err, text("#title"))
	}
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.flotillaNoReload`)); err != nil || n != 7 {
		t.Fatalf("the page was reloaded (%d, %v)", n, err)
	}
	if v := text("#update"); !strings.Contains(v, "downloading") {
		t.Errorf("update card after the event: %q", v)
	}
}

// machine is a simulated update_engine client.
type machine struct {
	c                  *omaha.Client
	id, track, version string
}

func (m *machine) send(ctx context.Context, a omaha.App) (omaha.ResponseApp, error) {
	a.AppID = "{" + omaha.FlatcarAppID + "}"
	a.Version, a.Track, a.MachineID, a.Board = m.version, m.track, m.id, "amd64-usr"
	req := &omaha.Request{Protocol: "3.0", Version: "update_engine-0.4.10", UpdaterVersion: "update_engine-0.4.10",
		InstallSource: omaha.InstallSourceScheduler, IsMachine: 1, OS: &omaha.OS{Version: "Chateau", Platform: "CoreOS", ServicePack: m.version + "_x86_64"},
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

// TestBrowserUnits opens the Units page and the group page's machine
// config card in Chromium, with units placed by the server's engine on
// machines run by real unit agents, and a group config with reports.
// With FLOTILLA_SCREENSHOTS=1 it saves docs/screenshots/units.png and
// group-config.png.
func TestBrowserUnits(t *testing.T) {
	browser := needBrowser(t)
	e := startServer(t)
	seedUnits(t, e.srv, "")
	seedConfig(t, e.srv.Store(), "")

	ctx, text, do := openBrowser(t, browser, 60*time.Second)
	save := func(name string, a chromedp.Action[[]byte]) { saveScreenshot(t, ctx, name, a) }

	do("sign in", signIn(e)...)
	do("open units", chromedp.Click(chromedp.CSS(`nav a[href="/units"]`)), chromedp.WaitVisible(chromedp.ID("machines")))
	if row := text(`tr[id="unit-gpu-train.service"]`); !strings.Contains(row, "unschedulable") || !strings.Contains(row, "no eligible machine") {
		t.Fatalf("unschedulable unit row: %q", row)
	}
	if row := text(`tr[id="unit-node-exporter.service"]`); !strings.Contains(row, "launched") || !strings.Contains(row, "global") {
		t.Fatalf("global unit row: %q", row)
	}
	if row := text(`tr[id="machine-` + machineB + `"]`); !strings.Contains(row, "alive") || !strings.Contains(row, "draining") {
		t.Fatalf("draining machine row: %q", row)
	}
	if row := text(`tr[id="machine-` + machineC + `"]`); !strings.Contains(row, "unknown") {
		t.Fatalf("departed machine row: %q", row)
	}
	save("units", chromedp.FullScreenshot(100))

	do("open group", chromedp.Navigate(e.base+stablePath), chromedp.WaitVisible(chromedp.ID("config")), chromedp.ScrollIntoView(chromedp.ID("config")))
	if card := text("#config"); !strings.Contains(card, "5 reporting") || !strings.Contains(card, "motd: new text") ||
		!strings.Contains(card, "read-only file system") || !strings.Contains(card, "+    content: welcome to flotilla") {
		t.Fatalf("config card: %q", card)
	}
	save("group-config", chromedp.Screenshot(chromedp.ID("config")))
}
