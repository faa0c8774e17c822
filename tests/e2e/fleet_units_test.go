package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	v1 "github.com/flotilla/flotilla/api/v1"
	"github.com/flotilla/flotilla/client"
)

// unitHost is a `flotilla agent --units` process with the process driver:
// a machine that runs units and nothing else (update checks are off).
type unitHost struct {
	id   string
	dir  string
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan error
}

func startUnitHost(t testing.TB, id, endpoints string, extra ...string) *unitHost {
	t.Helper()
	h := &unitHost{id: id, dir: t.TempDir(), log: &syncBuffer{}, done: make(chan error, 1)}
	args := append([]string{"agent", "--data-dir", filepath.Join(h.dir, "agent"), "--socket", filepath.Join(h.dir, "agent.sock"),
		"--update-conf", filepath.Join(h.dir, "update.conf"), "--update-server", "disabled",
		"--machine-id", id, "--boot-id", uuid.NewString(), "--os-version", "1.0.0", "--booted-partuuid", "none",
		"--etcd-endpoints", endpoints, "--units", "--unit-driver", "process"}, extra...)
	h.cmd = exec.Command(flotillaBinary(t), args...)
	h.cmd.Stdout, h.cmd.Stderr = h.log, h.log
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { h.done <- h.cmd.Wait() }()
	t.Cleanup(func() {
		if h.cmd.ProcessState == nil {
			_ = h.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-h.done:
			case <-time.After(15 * time.Second):
				_ = h.cmd.Process.Kill()
				<-h.done
			}
		}
		if t.Failed() {
			t.Logf("agent %s log:\n%s", h.id, h.log.String())
		}
	})
	return h
}

// sigkill kills the agent the way a machine dies: no chance to stop its
// units or withdraw its presence. It returns the time of the kill.
func (h *unitHost) sigkill(t *testing.T) time.Time {
	t.Helper()
	at := time.Now()
	if err := h.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-h.done
	return at
}

// loggedUnit is a unit whose shell appends "start UNIT MACHINE PID TIME"
// to logPath when it starts and "stop …" when it is stopped (SIGTERM to
// its process group), so the file is a record, kept by the units
// themselves, of where each unit ran when. $$$$ is the shell's $$ after
// the driver's $$ → $; %%s is date's %s after the specifier %% → %.
func loggedUnit(logPath, xfleet string) string {
	stamp := `%n $FLOTILLA_MACHINE_ID $$$$ $(date +%%s.%%N) >> ` + logPath
	u := "[Unit]\nDescription=logged test unit\n[Service]\n" +
		// The stop handler is a function: a double-quoted trap would expand
		// $c and the date when it is set, not when the unit is stopped.
		`ExecStart=/bin/sh -c 'h() { kill $c; wait $c; echo stop ` + stamp + `; exit 0; }; trap h TERM; ` +
		`echo start ` + stamp + `; sleep 600 & c=$!; wait $c'` + "\n"
	if xfleet != "" {
		u += "[X-Fleet]\n" + strings.ReplaceAll(xfleet, ";", "\n") + "\n"
	}
	return u
}

// runSpan is one run of a unit on a machine, from the unit's own log.
type runSpan struct {
	unit, machine string
	pid           int
	start, end    float64 // Unix seconds; end is +Inf while running
}

// readRuns parses the unit log. Runs of machines in died (machine → time
// of death) without a stop line end at the death: the test checked that
// their processes were gone.
func readRuns(t *testing.T, path string, died map[string]time.Time) []runSpan {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	open := map[string]*runSpan{} // by unit/machine/pid
	var runs []*runSpan
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		w := strings.Fields(sc.Text())
		if len(w) != 5 {
			t.Fatalf("unit log line %q", sc.Text())
		}
		pid, err1 := strconv.Atoi(w[3])
		ts, err2 := strconv.ParseFloat(w[4], 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("unit log line %q", sc.Text())
		}
		key := w[1] + "/" + w[2] + "/" + w[3]
		switch w[0] {
		case "start":
			r := &runSpan{unit: w[1], machine: w[2], pid: pid, start: ts, end: math.Inf(1)}
			open[key] = r
			runs = append(runs, r)
		case "stop":
			if r := open[key]; r != nil {
				r.end = ts
				delete(open, key)
			}
		}
	}
	out := make([]runSpan, 0, len(runs))
	for _, r := range runs {
		if at, ok := died[r.machine]; ok && math.IsInf(r.end, 1) {
			r.end = float64(at.UnixNano()) / 1e9
		}
		out = append(out, *r)
	}
	return out
}

// checkNeverTwice fails if two runs of one unit on different machines
// overlap in time. Global units, which run everywhere, are left out.
func checkNeverTwice(t *testing.T, runs []runSpan, globals ...string) {
	t.Helper()
	by := map[string][]runSpan{}
	for _, r := range runs {
		if slices.Contains(globals, r.unit) {
			continue
		}
		by[r.unit] = append(by[r.unit], r)
	}
	for unit, rs := range by {
		for i := range rs {
			for j := i + 1; j < len(rs); j++ {
				a, b := rs[i], rs[j]
				if a.machine != b.machine && a.start < b.end && b.start < a.end {
					t.Errorf("%s ran on %s and %s at once: [%.3f, %.3f] and [%.3f, %.3f]", unit, a.machine, b.machine, a.start, a.end, b.start, b.end)
				}
			}
		}
	}
}

// killProcessGroups ends what is left of the units' process groups (the
// orphaned sleeps of a killed machine's units): each unit runs in its own
// group, whose id is the pid its shell logged.
func killProcessGroups(runs []runSpan) {
	for _, r := range runs {
		_ = syscall.Kill(-r.pid, syscall.SIGKILL)
	}
}

func apiClientFor(t testing.TB, p *serverProc) *client.Client {
	t.Helper()
	tok, err := os.ReadFile(filepath.Join(p.dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	return client.New(p.url, strings.TrimSpace(string(tok)), nil)
}

// launchedOn maps each unit to the machine it is launched on, for units
// launched on exactly one machine; globals are left out.
func launchedOn(ctx context.Context, c *client.Client) (map[string]string, v1.UnitList, error) {
	l, err := c.ListUnits(ctx)
	if err != nil {
		return nil, l, err
	}
	out := map[string]string{}
	for _, u := range l.Units {
		if !u.Global && u.CurrentState == v1.UnitLaunched && len(u.Machines) == 1 {
			out[u.Name] = u.Machines[0]
		}
	}
	return out, l, nil
}

func writeUnitFiles(t testing.TB, dir string, files map[string]string) []string {
	t.Helper()
	var paths []string
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	sort.Strings(paths)
	return paths
}

// TestFleetUnitsAgentProcesses: one server, ten `flotilla agent --units`
// processes; 100 units with every kind of constraint submitted and
// started through the CLI. One agent is SIGKILLed: its units run
// elsewhere within grace + 5 s, nothing else restarts, and the units' own
// log shows no unit running on two machines at once.
func TestFleetUnitsAgentProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test builds and runs the binary; skipped with -short")
	}
	const grace = 3 * time.Second
	srv := startServer(t, t.TempDir(), "--unit-grace", grace.String(), "--unit-engine-ttl", "2s")
	if srv.EtcdURL() == "" {
		t.Fatal("the server did not log its etcd client URL")
	}
	logPath := filepath.Join(t.TempDir(), "units.log")
	hosts := map[string]*unitHost{}
	zone := map[string]string{}
	for i := 1; i <= 10; i++ {
		id := fmt.Sprintf("m%02d", i)
		zone[id] = []string{"a", "b"}[i%2]
		hosts[id] = startUnitHost(t, id, srv.EtcdURL(), "--machine-metadata", "zone="+zone[id],
			"--public-ip", fmt.Sprintf("127.0.0.%d", i), "--unit-grace", grace.String(), "--unit-presence-ttl", "1s")
	}
	c := apiClientFor(t, srv)
	ctx := t.Context()
	if err := pollFor(30*time.Second, func() bool {
		ml, err := c.ListMachines(ctx)
		return err == nil && len(ml.Machines) == 10
	}); err != nil {
		t.Fatal("ten machines did not register")
	}

	dir := t.TempDir()
	paths := writeUnitFiles(t, dir, map[string]string{
		"app@.service":    loggedUnit(logPath, ""),
		"web@.service":    loggedUnit(logPath, "Conflicts=web@*.service"),
		"side@.service":   loggedUnit(logPath, "MachineOf=web@%i.service"),
		"zoned@.service":  loggedUnit(logPath, "MachineMetadata=zone=a"),
		"pinned@.service": loggedUnit(logPath, "MachineID=m03"),
		"g.service":       loggedUnit(logPath, "Global=true;MachineMetadata=zone=b"),
	})
	srv.cli(t, append([]string{"unit", "submit"}, paths...)...)
	counts := []struct {
		prefix string
		n      int
	}{{"web", 8}, {"side", 5}, {"app", 61}, {"zoned", 20}, {"pinned", 5}}
	units := []string{"g.service"}
	for _, c := range counts {
		for i := 1; i <= c.n; i++ {
			units = append(units, fmt.Sprintf("%s@%d.service", c.prefix, i))
		}
	}
	if len(units) != 100 {
		t.Fatalf("%d units", len(units))
	}
	start := time.Now()
	out := srv.cli(t, append([]string{"unit", "start", "--block-timeout", "2m"}, units...)...)
	t.Logf("100 units launched in %s (CLI blocked until then)", time.Since(start).Round(time.Millisecond))
	if n := strings.Count(out, " launched on "); n != 99 || !strings.Contains(out, "Triggered global unit g.service start") {
		t.Fatalf("start printed %d launched lines:\n%s", n, out)
	}

	where, _, err := launchedOn(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	// Constraints hold in what runs.
	webOn := map[string]bool{}
	for i := 1; i <= 8; i++ {
		m := where[fmt.Sprintf("web@%d.service", i)]
		if webOn[m] {
			t.Errorf("two web instances on %s", m)
		}
		webOn[m] = true
	}
	for i := 1; i <= 5; i++ {
		if s, w := where[fmt.Sprintf("side@%d.service", i)], where[fmt.Sprintf("web@%d.service", i)]; s != w {
			t.Errorf("side@%d on %s, web@%d on %s", i, s, i, w)
		}
		if m := where[fmt.Sprintf("pinned@%d.service", i)]; m != "m03" {
			t.Errorf("pinned@%d on %s", i, m)
		}
	}
	for i := 1; i <= 20; i++ {
		if m := where[fmt.Sprintf("zoned@%d.service", i)]; zone[m] != "a" {
			t.Errorf("zoned@%d on %s (zone %q)", i, m, zone[m])
		}
	}
	var sl v1.UnitStateList
	srv.cliJSON(t, &sl, "unit", "list")
	gOn := 0
	for _, s := range sl.States {
		if s.Unit == "g.service" && s.Active == "active" {
			gOn++
			if zone[s.Machine] != "b" {
				t.Errorf("g.service on %s in zone %s", s.Machine, zone[s.Machine])
			}
		}
	}
	if gOn != 5 {
		t.Errorf("g.service active on %d machines, want the 5 of zone b", gOn)
	}

	// Kill the machine running web@1 unless that is m03 (its pinned units
	// could go nowhere).
	victim := where["web@1.service"]
	if victim == "m03" {
		victim = where["web@2.service"]
	}
	var moving []string
	for u, m := range where {
		if m == victim {
			moving = append(moving, u)
		}
	}
	sort.Strings(moving)
	runsBefore := readRuns(t, logPath, nil)
	t.Cleanup(func() { killProcessGroups(readRuns(t, logPath, nil)) })
	killedAt := hosts[victim].sigkill(t)
	t.Logf("killed %s, which ran %d units: %v", victim, len(moving), moving)

	// Its units die with it (the process driver ties them to the agent).
	for _, r := range runsBefore {
		if r.machine != victim {
			continue
		}
		if err := pollFor(2*time.Second, func() bool { return errors.Is(syscall.Kill(r.pid, 0), syscall.ESRCH) }); err != nil {
			t.Fatalf("%s (pid %d) still runs after its agent was killed", r.unit, r.pid)
		}
	}
	var moved map[string]string
	if err := pollFor(grace+20*time.Second, func() bool {
		moved, _, err = launchedOn(ctx, c)
		if err != nil {
			return false
		}
		for _, u := range moving {
			if m := moved[u]; m == "" || m == victim {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatalf("the units of %s did not move: %v", victim, moved)
	}
	// The move time from the units' own log: the last start of a moved
	// unit after the kill.
	var last float64
	for _, r := range readRuns(t, logPath, map[string]time.Time{victim: killedAt}) {
		if r.machine != victim && r.start > float64(killedAt.UnixNano())/1e9 {
			last = math.Max(last, r.start)
		}
	}
	moveTime := time.Duration((last - float64(killedAt.UnixNano())/1e9) * float64(time.Second))
	t.Logf("the %d units of %s ran elsewhere %s after the kill (grace %s)", len(moving), victim, moveTime.Round(time.Millisecond), grace)
	if moveTime > grace+5*time.Second {
		t.Errorf("moving took %s, want ≤ grace + 5s = %s", moveTime, grace+5*time.Second)
	}
	var ml v1.MachineList
	srv.cliJSON(t, &ml, "machine", "list")
	for _, m := range ml.Machines {
		if want := "alive"; m.ID == victim {
			if m.State != "lost" {
				t.Errorf("killed machine %s is %s, want lost", m.ID, m.State)
			}
		} else if m.State != want {
			t.Errorf("machine %s is %s", m.ID, m.State)
		}
	}

	runs := readRuns(t, logPath, map[string]time.Time{victim: killedAt})
	checkNeverTwice(t, runs, "g.service")
	starts := map[string]int{}
	for _, r := range runs {
		starts[r.unit]++
	}
	movingSet := map[string]bool{}
	for _, u := range moving {
		movingSet[u] = true
	}
	for _, u := range units {
		want := 1
		switch {
		case u == "g.service":
			want = 5
		case movingSet[u]:
			want = 2
		}
		if starts[u] != want {
			t.Errorf("%s started %d times, want %d", u, starts[u], want)
		}
	}
}

// TestFleetUnitsEngineFailover: three server processes form a
// three-member etcd; four agents reach etcd through all three. The
// leading engine's server is SIGKILLed: another engine takes over and
// places new units, and no running unit is stopped or restarted.
func TestFleetUnitsEngineFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test builds and runs the binary; skipped with -short")
	}
	// Longer than an etcd leader election after a member dies, so agents
	// whose etcd endpoint died switch endpoints well within it.
	const grace = 10 * time.Second
	ports := freeLoopbackPorts(t, 6)
	url := func(p int) string { return fmt.Sprintf("http://127.0.0.1:%d", p) }
	var cluster, endpoints []string
	for i := 0; i < 3; i++ {
		cluster = append(cluster, fmt.Sprintf("s%d=%s", i, url(ports[2*i+1])))
		endpoints = append(endpoints, url(ports[2*i]))
	}
	srvs := make([]*serverProc, 3)
	for i := range srvs {
		srvs[i] = launchServer(t, t.TempDir(), "--etcd-name", fmt.Sprintf("s%d", i),
			"--etcd-client-url", url(ports[2*i]), "--etcd-peer-url", url(ports[2*i+1]),
			"--etcd-initial-cluster", strings.Join(cluster, ","),
			"--unit-grace", grace.String(), "--unit-engine-ttl", "2s")
	}
	for _, s := range srvs {
		s.waitListening(t)
	}
	logPath := filepath.Join(t.TempDir(), "units.log")
	for i := 1; i <= 4; i++ {
		startUnitHost(t, fmt.Sprintf("f%d", i), strings.Join(endpoints, ","),
			"--unit-grace", grace.String(), "--unit-presence-ttl", "2s")
	}
	dir := t.TempDir()
	paths := writeUnitFiles(t, dir, map[string]string{
		"app@.service": loggedUnit(logPath, ""),
		"web@.service": loggedUnit(logPath, "Conflicts=web@*.service"),
	})
	srvs[1].cli(t, append([]string{"unit", "submit"}, paths...)...)
	var units []string
	for i := 1; i <= 16; i++ {
		units = append(units, fmt.Sprintf("app@%d.service", i))
	}
	for i := 1; i <= 4; i++ {
		units = append(units, fmt.Sprintf("web@%d.service", i))
	}
	srvs[1].cli(t, append([]string{"unit", "start", "--block-timeout", "2m"}, units...)...)

	leader := -1
	if err := pollFor(10*time.Second, func() bool {
		leader = -1
		n := 0
		for i, s := range srvs {
			if engineLeads(s) {
				leader, n = i, n+1
			}
		}
		return n == 1
	}); err != nil {
		t.Fatal("not exactly one engine leads")
	}
	killedAt := time.Now()
	if err := srvs[leader].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-srvs[leader].done
	var rest []*serverProc
	for i, s := range srvs {
		if i != leader {
			rest = append(rest, s)
		}
	}
	t.Logf("killed server s%d, whose engine led", leader)
	if err := pollFor(30*time.Second, func() bool { return engineLeads(rest[0]) || engineLeads(rest[1]) }); err != nil {
		t.Fatal("no engine took over")
	}
	t.Logf("a new engine leads %s after the kill", time.Since(killedAt).Round(time.Millisecond))

	// The new leader places new work…
	rest[0].cli(t, "unit", "start", "--block-timeout", "1m", "app@17.service")
	// …and nothing that ran before was touched, for longer than an agent
	// would wait before stopping its units if cut off.
	c := apiClientFor(t, rest[1])
	holdUntil := killedAt.Add(grace + 2*time.Second)
	for time.Now().Before(holdUntil) {
		where, _, err := launchedOn(t.Context(), c)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range units {
			if where[u] == "" {
				t.Fatalf("%s is not launched after the failover", u)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	runs := readRuns(t, logPath, nil)
	t.Cleanup(func() { killProcessGroups(runs) })
	checkNeverTwice(t, runs)
	starts := map[string]int{}
	for _, r := range runs {
		starts[r.unit]++
		if !math.IsInf(r.end, 1) {
			t.Errorf("%s stopped on %s", r.unit, r.machine)
		}
	}
	for _, u := range append(units, "app@17.service") {
		if starts[u] != 1 {
			t.Errorf("%s started %d times, want 1", u, starts[u])
		}
	}
}

// engineLeads reads a server's flotilla_fleet_engine_leader gauge.
func engineLeads(p *serverProc) bool {
	resp, err := httpGet(p.url + "/metrics")
	if err != nil {
		return false
	}
	return strings.Contains(resp, "\nflotilla_fleet_engine_leader 1\n")
}

func httpGet(url string) (string, error) {
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), nil
}
