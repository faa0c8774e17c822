package e2e

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/flotilla/flotilla/api/v1"
	"github.com/flotilla/flotilla/internal/gpt"
)

var rebootingRE = regexp.MustCompile(`time=(\S+) level=INFO msg="rebooting to apply the update`)

// TestFleetMoveBeforeReboot: a server, host A (disk image, `flotilla
// agent --units` with the etcd-lock reboot strategy) and host B (a unit
// agent). mover.service ([X-Fleet] MoveBeforeReboot=true) and
// stay.service run on A. A installs an update and asks for its reboot
// slot: the units' own log shows mover stopped on A and then started on B
// before A ran its reboot command, while stay kept running on A until the
// reboot; A is draining (a unit pinned to A is unschedulable) until its
// new boot passed the health gate, then undrained: the pinned unit runs
// on A and stay runs on A again. Units are not moved back (placement keeps
// valid assignments), so mover stays on B. No unit ran on two machines at
// once.
func TestFleetMoveBeforeReboot(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test builds and runs the binary; skipped with -short")
	}
	e := newFleetEnv(t)
	etcd := e.srv.EtcdURL()
	if etcd == "" {
		t.Fatal("the server did not log its etcd client URL")
	}
	c := apiClientFor(t, e.srv)
	ctx := t.Context()
	logPath := filepath.Join(t.TempDir(), "units.log")
	t.Cleanup(func() {
		if _, err := os.Stat(logPath); err == nil {
			killProcessGroups(readRuns(t, logPath, nil))
		}
	})

	a := newHost(t, e)
	a.extra = []string{"--reboot-strategy", "etcd-lock", "--etcd-endpoints", etcd, "--lock-interval", "100ms",
		"--check-interval", "1h", "--units", "--unit-driver", "process", "--unit-drain-timeout", "1m"}
	a.start(t)
	waitInstanceStatus(t, e.srv, a.id, "idle", "1.0.0")
	machines := func() map[string]v1.Machine {
		var ml v1.MachineList
		out, err := e.srv.cliErr("machine", "list", "-o", "json")
		if err != nil || json.Unmarshal([]byte(out), &ml) != nil {
			return nil
		}
		by := map[string]v1.Machine{}
		for _, m := range ml.Machines {
			by[m.ID] = m
		}
		return by
	}
	if err := pollFor(30*time.Second, func() bool { return machines()[a.id].State == "alive" }); err != nil {
		t.Fatal("host A did not register as a machine")
	}

	// Both units start while A is the only machine, so both run there.
	paths := writeUnitFiles(t, t.TempDir(), map[string]string{
		"mover.service":  loggedUnit(logPath, "MoveBeforeReboot=true"),
		"stay.service":   loggedUnit(logPath, ""),
		"pinned.service": loggedUnit(logPath, "MachineID="+a.id),
	})
	e.srv.cli(t, append([]string{"unit", "submit"}, paths...)...)
	e.srv.cli(t, "unit", "start", "--block-timeout", "1m", "mover.service", "stay.service")
	where, _, err := launchedOn(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if where["mover.service"] != a.id || where["stay.service"] != a.id {
		t.Fatalf("units run on %v, want both on A (%s)", where, a.id)
	}

	const b = "machine-b"
	startUnitHost(t, b, etcd)
	if err := pollFor(30*time.Second, func() bool { return machines()[b].State == "alive" }); err != nil {
		t.Fatal("host B did not register as a machine")
	}

	// The update: A installs it, takes its slot, drains, then reboots.
	e.publish("1.1.0")
	a.check(t)
	marker := filepath.Join(a.dir, "reboot-requested")
	var fi os.FileInfo
	if err := pollFor(120*time.Second, func() bool {
		fi, err = os.Stat(marker)
		return err == nil
	}); err != nil {
		t.Fatalf("host A never asked to reboot; log:\n%s", a.log.String())
	}
	requested := fi.ModTime()
	if m := rebootingRE.FindStringSubmatch(a.log.String()); m == nil {
		t.Fatal(`no "rebooting to apply the update" line in A's log`)
	} else if at, err := time.Parse(time.RFC3339Nano, m[1]); err != nil {
		t.Fatal(err)
	} else if at.Before(requested) {
		requested = at // the log's time is taken before the command runs
	}
	reqSec := float64(requested.UnixNano()) / 1e9

	// A holds its slot and is draining until its new boot is healthy.
	if ms := machines(); !ms[a.id].Draining || ms[a.id].State != "alive" || ms[b].Draining {
		t.Errorf("machines while A waits for its reboot: %+v", ms)
	}
	out := e.srv.cli(t, "machine", "list", "--full")
	if !strings.Contains(out, a.id) || !strings.Contains(out, "alive,draining") {
		t.Errorf("machine list does not show A draining:\n%s", out)
	}
	// A draining machine takes no new units: one pinned to it waits.
	e.srv.cli(t, "unit", "start", "--no-block", "pinned.service")
	var pinned v1.UnitList
	if err := pollFor(15*time.Second, func() bool {
		out, err := e.srv.cliErr("unit", "status", "pinned.service", "-o", "json")
		pinned = v1.UnitList{}
		return err == nil && json.Unmarshal([]byte(out), &pinned) == nil && len(pinned.Units) == 1 &&
			strings.Contains(pinned.Units[0].Unschedulable, "draining")
	}); err != nil {
		t.Errorf("a unit pinned to draining A: %+v", pinned)
	}
	if err := pollFor(30*time.Second, func() bool {
		where, _, err = launchedOn(ctx, c)
		return err == nil && where["mover.service"] == b
	}); err != nil {
		t.Fatalf("mover.service did not move to B: %v", where)
	}
	if where["stay.service"] != a.id {
		t.Fatalf("stay.service is on %q before the reboot, want A", where["stay.service"])
	}

	runs := readRuns(t, logPath, nil)
	byUnit := map[string][]runSpan{}
	for _, r := range runs {
		byUnit[r.unit] = append(byUnit[r.unit], r)
	}
	mv := byUnit["mover.service"]
	if len(mv) != 2 || mv[0].machine != a.id || mv[1].machine != b {
		t.Fatalf("mover.service runs before the reboot: %+v", mv)
	}
	if mv[0].end >= reqSec {
		t.Errorf("mover.service stopped on A at %.3f, not before A asked to reboot at %.3f", mv[0].end, reqSec)
	}
	if mv[1].start < mv[0].end || mv[1].start >= reqSec {
		t.Errorf("mover.service started on B at %.3f, want after it stopped on A (%.3f) and before A asked to reboot (%.3f)",
			mv[1].start, mv[0].end, reqSec)
	}
	t.Logf("mover.service: stopped on A %.0f ms and started on B %.0f ms before A's reboot request",
		(reqSec-mv[0].end)*1e3, (reqSec-mv[1].start)*1e3)
	if st := byUnit["stay.service"]; len(st) != 1 || st[0].machine != a.id || !math.IsInf(st[0].end, 1) {
		t.Fatalf("stay.service runs before the reboot: %+v", st)
	}

	// The reboot: stay.service goes down with A and comes back there.
	os.Remove(marker)
	rebootAt := time.Now()
	if slot := a.reboot(t); slot != gpt.LabelUSRB {
		t.Fatalf("A booted %s", slot)
	}
	if err := pollFor(60*time.Second, func() bool {
		s, err := runErr(t, "agent", "status", "--socket", a.socket(), "-o", "json")
		return err == nil && strings.Contains(s, `"boot_healthy": true`) && strings.Contains(s, `"current_version": "1.1.0"`)
	}); err != nil {
		t.Fatalf("A never became healthy on 1.1.0; log:\n%s", a.log.String())
	}
	if err := pollFor(30*time.Second, func() bool {
		m := machines()[a.id]
		return m.State == "alive" && !m.Draining
	}); err != nil {
		t.Fatalf("A is not undrained after its healthy boot: %+v", machines()[a.id])
	}
	// Allowed back: the pinned unit is placed on A now.
	if err := pollFor(30*time.Second, func() bool {
		where, _, err = launchedOn(ctx, c)
		return err == nil && where["pinned.service"] == a.id && where["stay.service"] == a.id
	}); err != nil {
		t.Fatalf("after A's reboot units run on %v, want pinned and stay on A", where)
	}
	if where["mover.service"] != b {
		t.Errorf("mover.service is on %q after A came back, want still on B (valid assignments are kept)", where["mover.service"])
	}
	out = e.srv.cli(t, "machine", "list", "--full")
	if strings.Contains(out, "draining") {
		t.Errorf("machine list still shows a draining machine:\n%s", out)
	}
	var sl v1.UnitStateList
	e.srv.cliJSON(t, &sl, "unit", "list")
	active := map[string][]string{}
	for _, s := range sl.States {
		if s.Active == "active" {
			active[s.Unit] = append(active[s.Unit], s.Machine)
		}
	}
	for unit, m := range map[string]string{"mover.service": b, "stay.service": a.id, "pinned.service": a.id} {
		if got := active[unit]; len(got) != 1 || got[0] != m {
			t.Errorf("unit list: %s active on %v, want [%s]", unit, got, m)
		}
	}

	runs = readRuns(t, logPath, nil)
	checkNeverTwice(t, runs)
	byUnit = map[string][]runSpan{}
	for _, r := range runs {
		byUnit[r.unit] = append(byUnit[r.unit], r)
	}
	if mv := byUnit["mover.service"]; len(mv) != 2 || !math.IsInf(mv[1].end, 1) {
		t.Errorf("mover.service runs: %+v, want one on A and one still running on B", mv)
	}
	st := byUnit["stay.service"]
	rebootSec := float64(rebootAt.UnixNano()) / 1e9
	switch {
	case len(st) != 2 || st[0].machine != a.id || st[1].machine != a.id:
		t.Errorf("stay.service runs: %+v, want two on A (before and after the reboot)", st)
	case st[0].end < rebootSec || st[1].start < st[0].end || !math.IsInf(st[1].end, 1):
		t.Errorf("stay.service did not run on A until the reboot and again after it: %+v (reboot at %.3f)", st, rebootSec)
	}
	if p := byUnit["pinned.service"]; len(p) != 1 || p[0].machine != a.id || p[0].start < rebootSec {
		t.Errorf("pinned.service runs: %+v, want one on A after the reboot", p)
	}
}
