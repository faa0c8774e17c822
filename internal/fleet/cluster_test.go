package fleet

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/flotilla/flotilla/internal/etcdtest"
	"github.com/flotilla/flotilla/internal/testenv"
)

// TestCluster100Units runs one engine and ten unit agents with the process
// driver against a real etcd, starts 100 units with constraints, kills an
// agent and checks that its units come back elsewhere within grace + 5 s,
// that nothing else restarted, and that no unit ever ran twice.
func TestCluster100Units(t *testing.T) {
	if testing.Short() {
		t.Skip("starts ~200 processes")
	}
	cluster := etcdtest.Start(t, 1)
	ctx := t.Context()
	logPath := filepath.Join(t.TempDir(), "units.log")
	reg := NewRegistry(cluster.Client(t), RegistryConfig{Grace: testGrace}, testLogger())

	startEngine(t, cluster.Client(t), "engine-1")
	agents := map[string]*runner{}
	zone := map[string]string{}
	for i := range 10 {
		id := machineID(i)
		zone[id] = []string{"a", "b"}[i%2]
		agents[id] = startAgent(t, cluster.Client(t), id, map[string]string{"zone": zone[id]})
	}

	templates := map[string]string{
		"app@.service":    "",
		"web@.service":    "Conflicts=web@*.service",
		"side@.service":   "MachineOf=web@%i.service",
		"zoned@.service":  "MachineMetadata=zone=a",
		"pinned@.service": "MachineID=m03",
	}
	for name, fleet := range templates {
		if _, err := reg.SubmitUnit(ctx, name, loggingUnit(logPath, fleet), false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := reg.SubmitUnit(ctx, "g.service", loggingUnit(logPath, "Global=true;MachineMetadata=zone=b"), false); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{"app": 61, "web": 8, "side": 5, "zoned": 20, "pinned": 5}
	var units []string
	for prefix, n := range counts {
		for i := 1; i <= n; i++ {
			units = append(units, fmt.Sprintf("%s@%d.service", prefix, i))
		}
	}
	units = append(units, "g.service")
	if len(units) != 100 {
		t.Fatalf("%d units", len(units))
	}
	for _, u := range units {
		// Instances are created from their template on first use.
		if err := reg.SetDesiredState(ctx, u, Launched); err != nil {
			t.Fatal(err)
		}
	}
	if err := reg.SetDesiredState(ctx, "web@.service", Launched); !errors.Is(err, ErrInvalidState) {
		t.Errorf("launching a template: %v, want ErrInvalidState", err)
	}

	zoneB := []string{"m01", "m03", "m05", "m07", "m09"}
	var snap Snapshot
	allActive := func(alive map[string]bool, wantGlobal []string) func() error {
		return func() error {
			on, s, err := activeOn(ctx, reg)
			if err != nil {
				return err
			}
			snap = s
			for _, u := range units {
				if u == "g.service" {
					if !slices.Equal(on[u], wantGlobal) {
						return fmt.Errorf("g.service active on %v, want %v", on[u], wantGlobal)
					}
					continue
				}
				if len(on[u]) != 1 || !alive[on[u][0]] {
					return fmt.Errorf("%s active on %v (unschedulable: %q)", u, on[u], s.Unschedulable[u])
				}
			}
			return nil
		}
	}
	alive := map[string]bool{}
	for id := range agents {
		alive[id] = true
	}
	testenv.WaitFor(t, 60*time.Second, "100 units active", allActive(alive, zoneB))
	t.Logf("100 units active")

	// Constraints hold in what actually runs.
	where := map[string]string{}
	for _, a := range snap.Assignments {
		where[a.Unit] = a.Machine
	}
	seenWeb := map[string]string{}
	for i := 1; i <= 8; i++ {
		m := where[fmt.Sprintf("web@%d.service", i)]
		if other, dup := seenWeb[m]; dup {
			t.Errorf("web@%d and %s share %s", i, other, m)
		}
		seenWeb[m] = fmt.Sprintf("web@%d", i)
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
			t.Errorf("zoned@%d on %s (zone %s)", i, m, zone[m])
		}
	}
	machines, err := reg.ListMachines(ctx)
	if err != nil || len(machines) != 10 {
		t.Fatalf("ListMachines = %d machines, %v", len(machines), err)
	}
	for _, m := range machines {
		if m.State != MachineAlive || m.Metadata["zone"] != zone[m.ID] {
			t.Errorf("machine %+v", m)
		}
	}

	// Kill the zone-b machine running web@1 (or m01): its units, web and
	// side included, must run elsewhere within grace + 5 s.
	victim := where["web@1.service"]
	if victim == "m03" || zone[victim] != "b" {
		victim = "m01"
		if where["web@1.service"] == "m03" {
			victim = "m05"
		}
	}
	moved := []string{}
	for u, m := range where {
		if m == victim {
			moved = append(moved, u)
		}
	}
	before := starts(readLog(t, logPath))
	killed := time.Now()
	agents[victim].stop()
	delete(alive, victim)
	t.Logf("killed %s running %d units", victim, len(moved))
	wantGlobal := slices.DeleteFunc(slices.Clone(zoneB), func(id string) bool { return id == victim })
	testenv.WaitFor(t, testGrace+testTTL+5*time.Second, "units of the killed machine running elsewhere", allActive(alive, wantGlobal))
	t.Logf("rescheduled %d units in %v (grace %v)", len(moved), time.Since(killed).Round(time.Millisecond), testGrace)

	ms, err := reg.ListMachines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.ID == victim && m.State != MachineLost {
			t.Errorf("killed machine state = %s, want lost", m.State)
		}
	}

	evs := readLog(t, logPath)
	checkNeverTwice(t, evs, map[string]bool{"g.service": true})
	after := starts(evs)
	for _, u := range units {
		want := before[u]
		if slices.Contains(moved, u) && u != "g.service" {
			want++
		}
		if after[u] != want {
			t.Errorf("%s started %d times, want %d", u, after[u], want)
		}
	}
}

// TestUnitLifecycle covers desired-state changes, replace and destroy on a
// single machine.
func TestUnitLifecycle(t *testing.T) {
	cluster := etcdtest.Start(t, 1)
	ctx := t.Context()
	logPath := filepath.Join(t.TempDir(), "units.log")
	reg := NewRegistry(cluster.Client(t), RegistryConfig{Grace: testGrace}, nil)
	startEngine(t, cluster.Client(t), "e1")
	startAgent(t, cluster.Client(t), "m00", nil)

	body := loggingUnit(logPath, "")
	if _, err := reg.SubmitUnit(ctx, "a.service", body, false); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.SubmitUnit(ctx, "a.service", body, false); err != nil {
		t.Errorf("identical resubmit: %v", err)
	}
	if _, err := reg.SubmitUnit(ctx, "a.service", body+"# changed\n", false); !errors.Is(err, ErrExists) {
		t.Errorf("changed resubmit: %v, want ErrExists", err)
	}
	if _, err := reg.SubmitUnit(ctx, "bad.service", "[X-Fleet]\nGlobal=maybe\n", false); err == nil {
		t.Error("invalid unit accepted")
	}
	if err := reg.SetDesiredState(ctx, "nope.service", Launched); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetDesiredState(nope) = %v", err)
	}

	state := func(want DesiredState, machines int) func() error {
		return func() error {
			s, err := reg.Snapshot(ctx)
			if err != nil {
				return err
			}
			for _, us := range s.UnitStatuses() {
				if us.Name == "a.service" {
					if us.Current != want || len(us.Machines) != machines {
						return fmt.Errorf("status %+v", us)
					}
					return nil
				}
			}
			return errors.New("a.service missing")
		}
	}
	if err := reg.SetDesiredState(ctx, "a.service", Launched); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "launched", state(Launched, 1))
	if err := reg.SetDesiredState(ctx, "a.service", Loaded); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "loaded", state(Loaded, 1))
	if err := reg.SetDesiredState(ctx, "a.service", Launched); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "relaunched", state(Launched, 1))
	if _, err := reg.SubmitUnit(ctx, "a.service", body+"# v2\n", true); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "restarted with new body", func() error {
		if n := starts(readLog(t, logPath))["a.service"]; n != 3 {
			return fmt.Errorf("%d starts", n)
		}
		return state(Launched, 1)()
	})
	if err := reg.DestroyUnit(ctx, "a.service"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "destroyed unit stopped", func() error {
		evs := readLog(t, logPath)
		if len(evs) == 0 || evs[len(evs)-1].kind != "stop" {
			return fmt.Errorf("log %v", evs)
		}
		s, err := reg.Snapshot(ctx)
		if err != nil {
			return err
		}
		if len(s.Assignments)+len(s.States) != 0 {
			return fmt.Errorf("assignments %v states %v", s.Assignments, s.States)
		}
		return nil
	})
	checkNeverTwice(t, readLog(t, logPath), nil)
}

// TestDrainMovesUnits drains a machine: its MoveBeforeReboot unit moves
// to the other machine (started there only after it stopped here), the
// other unit stays.
// twoMachines starts an etcd member, an engine and unit agents on two
// machines, and returns the registry, the agents by machine id, and the
// path of the log the test units write.
func twoMachines(t *testing.T) (*Registry, map[string]*UnitAgent, string) {
	t.Helper()
	cluster := etcdtest.Start(t, 1)
	reg := NewRegistry(cluster.Client(t), RegistryConfig{Grace: testGrace}, nil)
	startEngine(t, cluster.Client(t), "e1")
	agents := map[string]*UnitAgent{}
	for i := range 2 {
		agents[machineID(i)], _ = startUnitAgent(t, cluster.Client(t), machineID(i), nil)
	}
	return reg, agents, filepath.Join(t.TempDir(), "units.log")
}

func TestDrainMovesUnits(t *testing.T) {
	ctx := t.Context()
	reg, agents, logPath := twoMachines(t)
	for name, fleet := range map[string]string{"mover.service": "MoveBeforeReboot=true", "stayer.service": ""} {
		if _, err := reg.SubmitUnit(ctx, name, loggingUnit(logPath, fleet), false); err != nil {
			t.Fatal(err)
		}
		if err := reg.SetDesiredState(ctx, name, Launched); err != nil {
			t.Fatal(err)
		}
	}
	var on map[string][]string
	testenv.WaitFor(t, 15*time.Second, "units active", func() error {
		var err error
		on, _, err = activeOn(ctx, reg)
		if err == nil && (len(on["mover.service"]) != 1 || len(on["stayer.service"]) != 1) {
			err = fmt.Errorf("active %v", on)
		}
		return err
	})
	from := on["mover.service"][0]
	stayer := on["stayer.service"][0]
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := agents[from].Drain(dctx); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "mover moved", func() error {
		on, _, err := activeOn(ctx, reg)
		if err != nil {
			return err
		}
		if len(on["mover.service"]) != 1 || on["mover.service"][0] == from {
			return fmt.Errorf("mover on %v", on["mover.service"])
		}
		if len(on["stayer.service"]) != 1 || on["stayer.service"][0] != stayer {
			return fmt.Errorf("stayer on %v", on["stayer.service"])
		}
		return nil
	})
	evs := readLog(t, logPath)
	checkNeverTwice(t, evs, nil)
	if n := starts(evs); n["mover.service"] != 2 || n["stayer.service"] != 1 {
		t.Errorf("starts %v", n)
	}
	ms, err := reg.ListMachines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Draining != (m.ID == from) {
			t.Errorf("machine %s draining=%v", m.ID, m.Draining)
		}
	}
	if err := agents[from].Undrain(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestDrainKeepsUnitsWithNowhereToGo: a MoveBeforeReboot unit pinned to
// the draining machine cannot move; the drain ends at once instead of
// running out its timeout, and the unit keeps running there (it reboots
// with the machine, as without the option).
func TestDrainKeepsUnitsWithNowhereToGo(t *testing.T) {
	ctx := t.Context()
	reg, agents, logPath := twoMachines(t)
	pinned := machineID(0)
	if _, err := reg.SubmitUnit(ctx, "pinned.service", loggingUnit(logPath, "MoveBeforeReboot=true\nMachineID="+pinned), false); err != nil {
		t.Fatal(err)
	}
	if err := reg.SetDesiredState(ctx, "pinned.service", Launched); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "unit active", func() error {
		on, _, err := activeOn(ctx, reg)
		if err == nil && (len(on["pinned.service"]) != 1 || on["pinned.service"][0] != pinned) {
			err = fmt.Errorf("active %v", on)
		}
		return err
	})
	// The drain's own deadline is far beyond what it should take: a drain
	// that waited for the unit would run it out.
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	start := time.Now()
	if err := agents[pinned].Drain(dctx); err != nil {
		t.Fatalf("drain: %v (after %s)", err, time.Since(start))
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("drain took %s for a unit that cannot move", took)
	}
	on, _, err := activeOn(ctx, reg)
	if err != nil {
		t.Fatal(err)
	}
	if len(on["pinned.service"]) != 1 || on["pinned.service"][0] != pinned {
		t.Errorf("pinned unit active on %v after the drain, want %s", on["pinned.service"], pinned)
	}
	if n := starts(readLog(t, logPath)); n["pinned.service"] != 1 {
		t.Errorf("pinned unit started %d times, want once (it stays)", n["pinned.service"])
	}
	if err := agents[pinned].Undrain(ctx); err != nil {
		t.Fatal(err)
	}
}
