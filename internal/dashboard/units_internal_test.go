package dashboard

import (
	"testing"
	"time"

	"github.com/flotilla/flotilla/internal/fleet"
	"github.com/flotilla/flotilla/internal/fleet/unitfile"
)

func TestUnitsView(t *testing.T) {
	parse := func(name, raw string) *unitfile.File {
		t.Helper()
		f, err := unitfile.Parse(name, raw)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	lapsed := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	s := fleet.Snapshot{
		Units: []fleet.UnitInfo{
			{Name: "a.service", Desired: fleet.Launched, File: parse("a.service", "[Service]\nExecStart=/bin/a\n")},
			{Name: "g.service", Desired: fleet.Launched, File: parse("g.service", "[Service]\nExecStart=/bin/g\n[X-Fleet]\nGlobal=true\n")},
			{Name: "t@.service", Template: true, File: parse("t@.service", "[Service]\nExecStart=/bin/t\n")},
		},
		Machines: []fleet.Machine{
			{ID: "m1", State: fleet.MachineAlive, Metadata: map[string]string{"z": "1", "a": "2"}},
			{ID: "m2", State: fleet.MachineLost, LapsedAt: lapsed},
		},
		Assignments: []fleet.Assignment{{Unit: "a.service", Machine: "gone"}, {Unit: "g.service", Machine: "m1"}},
		States:      []fleet.UnitState{{Unit: "g.service", Machine: "m1", Active: "failed", Sub: "failed", Message: "exit 1"}},
	}
	units, machines, templates := unitsView(s)
	if templates != 1 || len(units) != 2 || len(machines) != 2 {
		t.Fatalf("templates %d, units %d, machines %d", templates, len(units), len(machines))
	}
	a, g := units[0], units[1]
	if len(a.Places) != 1 || a.Places[0].Known || a.Places[0].Reported || a.Converged {
		t.Errorf("unit on an unregistered machine: %+v", a)
	}
	if !g.Global || g.Current.Label != "loaded" || g.Places[0].Active != "failed" || g.Places[0].Message != "exit 1" {
		t.Errorf("global unit with a failed report: %+v", g)
	}
	m1, m2 := machines[0], machines[1]
	if m1.Units != 1 || len(m1.Metadata) != 2 || m1.Metadata[0] != "a=2" || m1.State != (statusInfo{"alive", "●", "complete"}) {
		t.Errorf("alive machine: %+v", m1)
	}
	if m2.State != (statusInfo{"lost", "✗", "error"}) || !m2.Since.Equal(lapsed) || m2.Units != 0 {
		t.Errorf("lost machine: %+v", m2)
	}
	if b := stateBadge("machine", "weird"); b.Label != "weird" || b.Symbol != "?" {
		t.Errorf("unknown state badge: %+v", b)
	}
}
