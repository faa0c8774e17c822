package fleet

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/flotilla/flotilla/internal/fleet/unitfile"
)

// machine builds an alive machine; meta is "k=v,k=v".
func machine(id, meta string) Machine {
	m := Machine{ID: id, State: MachineAlive, Metadata: map[string]string{}}
	for kv := range strings.SplitSeq(meta, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m.Metadata[k] = v
		}
	}
	return m
}

func withState(m Machine, s MachineState) Machine { m.State = s; return m }
func draining(m Machine) Machine                  { m.Draining = true; return m }

// unitOf parses a unit whose [X-Fleet] section is fleet (lines separated
// by ";").
func unitOf(t testing.TB, name, fleet string) Unit {
	t.Helper()
	body := "[Service]\nExecStart=/bin/true\n"
	if fleet != "" {
		body += "[X-Fleet]\n" + strings.ReplaceAll(fleet, ";", "\n") + "\n"
	}
	f, err := unitfile.Parse(name, body)
	if err != nil {
		t.Fatalf("parse %s: %v", name, err)
	}
	return Unit{Name: name, Desired: Launched, Options: f.Options}
}

func inactive(u Unit) Unit { u.Desired = Inactive; return u }

func TestPlace(t *testing.T) {
	three := []Machine{machine("m1", "region=east,disk=ssd"), machine("m2", "region=west,disk=hdd"), machine("m3", "region=north,disk=ssd")}
	tests := []struct {
		name     string
		machines []Machine
		units    func(t testing.TB) []Unit
		current  Assignments
		want     Assignments
		// unschedulable maps unit -> a substring of the reason.
		unschedulable map[string]string
	}{
		{
			name:     "least loaded spreads, ties by machine id",
			machines: three,
			units: func(t testing.TB) []Unit {
				return []Unit{unitOf(t, "a.service", ""), unitOf(t, "b.service", ""), unitOf(t, "c.service", ""), unitOf(t, "d.service", "")}
			},
			want: Assignments{"a.service": {"m1"}, "b.service": {"m2"}, "c.service": {"m3"}, "d.service": {"m1"}},
		},
		{
			name:     "existing load counts",
			machines: three,
			units: func(t testing.TB) []Unit {
				return []Unit{unitOf(t, "a.service", ""), unitOf(t, "b.service", ""), unitOf(t, "new.service", "")}
			},
			current: Assignments{"a.service": {"m1"}, "b.service": {"m2"}},
			want:    Assignments{"a.service": {"m1"}, "b.service": {"m2"}, "new.service": {"m3"}},
		},
		{
			name:     "MachineID pins",
			machines: three,
			units: func(t testing.TB) []Unit {
				return []Unit{unitOf(t, "a.service", "MachineID=m3"), unitOf(t, "b.service", "MachineID=m3")}
			},
			want: Assignments{"a.service": {"m3"}, "b.service": {"m3"}},
		},
		{
			name:     "MachineID of unknown, lost or unregistered machine",
			machines: []Machine{machine("m1", ""), withState(machine("m2", ""), MachineUnknown), withState(machine("m3", ""), MachineLost)},
			units: func(t testing.TB) []Unit {
				return []Unit{unitOf(t, "a.service", "MachineID=m2"), unitOf(t, "b.service", "MachineID=m3"), unitOf(t, "c.service", "MachineID=m9")}
			},
			want:          Assignments{},
			unschedulable: map[string]string{"a.service": "m2 is unknown", "b.service": "m3 is lost", "c.service": "not a registered machine"},
		},
		{
			name:     "MachineMetadata OR within a key, AND across keys",
			machines: three,
			units: func(t testing.TB) []Unit {
				return []Unit{
					unitOf(t, "or.service", `MachineMetadata="region=west" "region=north"`),
					unitOf(t, "and.service", `MachineMetadata=region=east region=north;MachineMetadata=disk=ssd`),
					unitOf(t, "and2.service", `MachineMetadata=region=north disk=ssd`),
					unitOf(t, "none.service", `MachineMetadata=region=west disk=ssd`),
					unitOf(t, "missing.service", `MachineMetadata=rack=r1`),
				}
			},
			want:          Assignments{"or.service": {"m2"}, "and.service": {"m1"}, "and2.service": {"m3"}},
			unschedulable: map[string]string{"none.service": "MachineMetadata (3)", "missing.service": "MachineMetadata (3)"},
		},
		{
			name:     "Conflicts between instances of one template",
			machines: three,
			units: func(t testing.TB) []Unit {
				var us []Unit
				for i := 1; i <= 4; i++ {
					us = append(us, unitOf(t, fmt.Sprintf("web@%d.service", i), "Conflicts=%p@*.service"))
				}
				return us
			},
			want:          Assignments{"web@1.service": {"m1"}, "web@2.service": {"m2"}, "web@3.service": {"m3"}},
			unschedulable: map[string]string{"web@4.service": "Conflicts (3)"},
		},
		{
			name:     "Conflicts checked in both directions",
			machines: []Machine{machine("m1", ""), machine("m2", "")},
			units: func(t testing.TB) []Unit {
				return []Unit{unitOf(t, "a.service", "Conflicts=b.service"), unitOf(t, "b.service", ""), unitOf(t, "c.service", "")}
			},
			current: Assignments{"a.service": {"m1"}, "c.service": {"m2"}},
			// b would go to the less loaded... both have one; m1 wins the
			// tie but a conflicts with b.
			want: Assignments{"a.service": {"m1"}, "b.service": {"m2"}, "c.service": {"m2"}},
		},
		{
			name:     "Global on every matching machine, not on conflicting or dead ones",
			machines: append(slices.Clone(three), withState(machine("m4", "disk=ssd"), MachineLost), machine("m5", "disk=ssd")),
			units: func(t testing.TB) []Unit {
				return []Unit{
					unitOf(t, "log.service", "Global=true;MachineMetadata=disk=ssd;Conflicts=db.service"),
					unitOf(t, "db.service", "MachineID=m5"),
					unitOf(t, "all.service", "Global=true"),
				}
			},
			// db is already on m5, so the global keeps off m5; placed
			// fresh, globals go first and db would be unschedulable.
			current: Assignments{"db.service": {"m5"}},
			want: Assignments{
				"db.service":  {"m5"},
				"log.service": {"m1", "m3"},
				"all.service": {"m1", "m2", "m3", "m5"},
			},
		},
		{
			name:     "Global kept on an unknown machine, not added to it",
			machines: []Machine{machine("m1", ""), withState(machine("m2", ""), MachineUnknown), withState(machine("m3", ""), MachineUnknown)},
			units: func(t testing.TB) []Unit {
				return []Unit{unitOf(t, "g.service", "Global=yes")}
			},
			current: Assignments{"g.service": {"m2"}},
			want:    Assignments{"g.service": {"m1", "m2"}},
		},
		{
			name:     "Global with no matching machine is unschedulable",
			machines: three,
			units: func(t testing.TB) []Unit {
				return []Unit{unitOf(t, "g.service", "Global=yes;MachineMetadata=region=south")}
			},
			want:          Assignments{},
			unschedulable: map[string]string{"g.service": "MachineMetadata (3)"},
		},
		{
			name:     "Replaces takes the machine and moves the replaced unit",
			machines: three,
			units: func(t testing.TB) []Unit {
				return []Unit{unitOf(t, "old.service", ""), unitOf(t, "other.service", ""), unitOf(t, "new.service", "Replaces=old*.service")}
			},
			current: Assignments{"old.service": {"m2"}, "other.service": {"m1"}},
			want:    Assignments{"new.service": {"m2"}, "old.service": {"m3"}, "other.service": {"m1"}},
		},
		{
			name:     "Replaces keeps replacer and replaced apart",
			machines: []Machine{machine("m1", ""), machine("m2", "")},
			units: func(t testing.TB) []Unit {
				return []Unit{unitOf(t, "new.service", "Replaces=old.service"), unitOf(t, "old.service", "")}
			},
			want: Assignments{"new.service": {"m1"}, "old.service": {"m2"}},
		},
		{
			name:     "MachineOf chain follows its root",
			machines: three,
			units: func(t testing.TB) []Unit {
				return []Unit{
					unitOf(t, "a.service", "MachineOf=b.service"),
					unitOf(t, "b.service", "MachineOf=c.service"),
					unitOf(t, "c.service", ""),
					unitOf(t, "x.service", ""),
				}
			},
			current: Assignments{"x.service": {"m1"}},
			want:    Assignments{"a.service": {"m2"}, "b.service": {"m2"}, "c.service": {"m2"}, "x.service": {"m1"}},
		},
		{
			name:     "MachineOf followers move with a peer whose machine was lost",
			machines: []Machine{withState(machine("m1", ""), MachineLost), machine("m2", ""), machine("m3", "")},
			units: func(t testing.TB) []Unit {
				return []Unit{unitOf(t, "db.service", ""), unitOf(t, "side.service", "MachineOf=db.service"), unitOf(t, "x.service", "")}
			},
			current: Assignments{"db.service": {"m1"}, "side.service": {"m1"}, "x.service": {"m2"}},
			want:    Assignments{"db.service": {"m3"}, "side.service": {"m3"}, "x.service": {"m2"}},
		},
		{
			name:     "MachineOf unschedulable peers and cycles",
			machines: three,
			units: func(t testing.TB) []Unit {
				return []Unit{
					unitOf(t, "orphan.service", "MachineOf=nothere.service"),
					unitOf(t, "lazy.service", "MachineOf=sleeper.service"),
					inactive(unitOf(t, "sleeper.service", "")),
					unitOf(t, "p.service", "MachineOf=q.service"),
					unitOf(t, "q.service", "MachineOf=p.service"),
					unitOf(t, "pinned.service", "MachineID=m9"),
					unitOf(t, "follower.service", "MachineOf=pinned.service"),
				}
			},
			want: Assignments{},
			unschedulable: map[string]string{
				"orphan.service":   "nothere.service is not submitted",
				"lazy.service":     "sleeper.service is not submitted or not active",
				"p.service":        "MachineOf cycle",
				"q.service":        "MachineOf cycle",
				"pinned.service":   "not a registered machine",
				"follower.service": "pinned.service is unschedulable",
			},
		},
		{
			name:     "templates: conflicts and MachineOf with specifiers",
			machines: three,
			units: func(t testing.TB) []Unit {
				var us []Unit
				for i := 1; i <= 3; i++ {
					us = append(us,
						unitOf(t, fmt.Sprintf("web@%d.service", i), "Conflicts=web@*.service;MachineOf=%p-data@%i.service"),
						unitOf(t, fmt.Sprintf("web-data@%d.service", i), "Conflicts=web-data@*.service"))
				}
				return us
			},
			want: Assignments{
				"web-data@1.service": {"m1"}, "web@1.service": {"m1"},
				"web-data@2.service": {"m2"}, "web@2.service": {"m2"},
				"web-data@3.service": {"m3"}, "web@3.service": {"m3"},
			},
		},
		{
			name:     "stability: imbalance is not corrected and new machines take only new units",
			machines: append(slices.Clone(three), machine("m0", "")),
			units: func(t testing.TB) []Unit {
				return []Unit{unitOf(t, "a.service", ""), unitOf(t, "b.service", ""), unitOf(t, "c.service", ""), unitOf(t, "d.service", "")}
			},
			current: Assignments{"a.service": {"m1"}, "b.service": {"m1"}, "c.service": {"m1"}},
			want:    Assignments{"a.service": {"m1"}, "b.service": {"m1"}, "c.service": {"m1"}, "d.service": {"m0"}},
		},
		{
			name:     "unknown machine keeps its units, lost machine's units move",
			machines: []Machine{withState(machine("m1", ""), MachineUnknown), withState(machine("m2", ""), MachineLost), machine("m3", "")},
			units: func(t testing.TB) []Unit {
				return []Unit{unitOf(t, "a.service", ""), unitOf(t, "b.service", "")}
			},
			current: Assignments{"a.service": {"m1"}, "b.service": {"m2"}},
			want:    Assignments{"a.service": {"m1"}, "b.service": {"m3"}},
		},
		{
			name:     "assignment to an unregistered machine is replaced",
			machines: []Machine{machine("m1", "")},
			units: func(t testing.TB) []Unit {
				return []Unit{unitOf(t, "a.service", "")}
			},
			current: Assignments{"a.service": {"gone"}},
			want:    Assignments{"a.service": {"m1"}},
		},
		{
			name:     "draining moves MoveBeforeReboot units only and takes nothing new",
			machines: []Machine{draining(machine("m1", "")), machine("m2", "")},
			units: func(t testing.TB) []Unit {
				return []Unit{
					unitOf(t, "mover.service", "MoveBeforeReboot=true"),
					unitOf(t, "stayer.service", ""),
					unitOf(t, "g.service", "Global=true"),
					unitOf(t, "new.service", ""),
				}
			},
			current: Assignments{"mover.service": {"m1"}, "stayer.service": {"m1"}, "g.service": {"m1", "m2"}},
			want: Assignments{
				"mover.service": {"m2"}, "stayer.service": {"m1"}, "g.service": {"m1", "m2"}, "new.service": {"m2"},
			},
		},
		{
			name:     "draining: mover with an alternative moves",
			machines: []Machine{draining(machine("m1", "disk=ssd")), machine("m2", "disk=hdd"), machine("m3", "disk=ssd")},
			units: func(t testing.TB) []Unit {
				return []Unit{unitOf(t, "mover.service", "MoveBeforeReboot=true;MachineMetadata=disk=ssd"), unitOf(t, "x.service", "")}
			},
			current: Assignments{"mover.service": {"m1"}, "x.service": {"m2"}},
			want:    Assignments{"mover.service": {"m3"}, "x.service": {"m2"}},
		},
		{
			name:     "draining: mover without an alternative stays, with its follower, listed as staying",
			machines: []Machine{draining(machine("m1", "disk=ssd")), machine("m2", "disk=hdd")},
			units: func(t testing.TB) []Unit {
				return []Unit{
					unitOf(t, "mover.service", "MoveBeforeReboot=true;MachineMetadata=disk=ssd"),
					unitOf(t, "side.service", "MachineOf=mover.service"),
					unitOf(t, "pinned.service", "MoveBeforeReboot=true;MachineID=m1"),
					unitOf(t, "stayer.service", ""),
				}
			},
			current: Assignments{"mover.service": {"m1"}, "side.service": {"m1"}, "pinned.service": {"m1"}, "stayer.service": {"m1"}},
			want:    Assignments{"mover.service": {"m1"}, "side.service": {"m1"}, "pinned.service": {"m1"}, "stayer.service": {"m1"}},
			unschedulable: map[string]string{
				"mover.service":  StaysOnDraining + " m1 (no eligible machine among 1: MachineMetadata (1)); stays there",
				"pinned.service": StaysOnDraining + " m1 (MachineID m1 is draining)",
			},
		},
		{
			name:     "draining: mover conflicting with every other machine stays; non-mover stays",
			machines: []Machine{draining(machine("m1", "")), machine("m2", "")},
			units: func(t testing.TB) []Unit {
				return []Unit{
					unitOf(t, "mover.service", "MoveBeforeReboot=true;Conflicts=busy.service"),
					unitOf(t, "busy.service", ""),
					unitOf(t, "stayer.service", ""),
				}
			},
			current:       Assignments{"mover.service": {"m1"}, "busy.service": {"m2"}, "stayer.service": {"m1"}},
			want:          Assignments{"mover.service": {"m1"}, "busy.service": {"m2"}, "stayer.service": {"m1"}},
			unschedulable: map[string]string{"mover.service": StaysOnDraining + " m1 (no eligible machine among 1: Conflicts (1))"},
		},
		{
			name:     "draining: new units and unassigned movers never go to a draining machine",
			machines: []Machine{draining(machine("m1", "disk=ssd")), draining(machine("m2", "")), machine("m3", "")},
			units: func(t testing.TB) []Unit {
				return []Unit{
					unitOf(t, "new.service", ""),
					unitOf(t, "ssd.service", "MachineMetadata=disk=ssd"),
					unitOf(t, "newmover.service", "MoveBeforeReboot=true;MachineMetadata=disk=ssd"),
					// Its machine is lost, the only other one drains.
					unitOf(t, "lostmover.service", "MoveBeforeReboot=true;MachineID=m1"),
				}
			},
			current: Assignments{"lostmover.service": {"m9"}},
			want:    Assignments{"new.service": {"m3"}},
			unschedulable: map[string]string{
				"ssd.service":       "MachineMetadata (1)",
				"newmover.service":  "MachineMetadata (1)",
				"lostmover.service": "MachineID m1 is draining",
			},
		},
		{
			name:     "draining: staying mover, then the machine undrains: nothing moves",
			machines: []Machine{machine("m1", "disk=ssd"), machine("m2", "disk=hdd")},
			units: func(t testing.TB) []Unit {
				return []Unit{unitOf(t, "mover.service", "MoveBeforeReboot=true;MachineMetadata=disk=ssd"), unitOf(t, "new.service", "")}
			},
			current: Assignments{"mover.service": {"m1"}},
			want:    Assignments{"mover.service": {"m1"}, "new.service": {"m2"}},
		},
		{
			name:     "inactive units are not placed and lose their assignment",
			machines: three,
			units: func(t testing.TB) []Unit {
				return []Unit{inactive(unitOf(t, "a.service", "")), {Name: "b.service", Desired: Loaded}}
			},
			current: Assignments{"a.service": {"m1"}},
			want:    Assignments{"b.service": {"m1"}},
		},
		{
			name:     "current assignments that conflict: first by name stays",
			machines: []Machine{machine("m1", ""), machine("m2", "")},
			units: func(t testing.TB) []Unit {
				return []Unit{unitOf(t, "a.service", "Conflicts=b.service"), unitOf(t, "b.service", "")}
			},
			current: Assignments{"a.service": {"m1"}, "b.service": {"m1"}},
			want:    Assignments{"a.service": {"m1"}, "b.service": {"m2"}},
		},
		{
			name:     "no machines",
			machines: nil,
			units: func(t testing.TB) []Unit {
				return []Unit{unitOf(t, "a.service", "")}
			},
			want:          Assignments{},
			unschedulable: map[string]string{"a.service": "no alive machine"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			units := tt.units(t)
			before := cloneAssignments(tt.current)
			got := Place(tt.machines, units, tt.current)
			if diff := cmp.Diff(tt.want, got.Assignments); diff != "" {
				t.Errorf("assignments (-want +got):\n%s", diff)
			}
			if !maps.EqualFunc(before, tt.current, slices.Equal) {
				t.Errorf("Place modified current")
			}
			if len(got.Unschedulable) != len(tt.unschedulable) {
				t.Errorf("unschedulable = %q, want %d entries", got.Unschedulable, len(tt.unschedulable))
			}
			for u, want := range tt.unschedulable {
				if r, ok := got.Unschedulable[u]; !ok || !strings.Contains(r, want) {
					t.Errorf("unschedulable[%s] = %q, want it to contain %q", u, r, want)
				}
			}
			// Deterministic and idempotent: placing again from the result
			// changes nothing.
			again := Place(tt.machines, units, got.Assignments)
			if diff := cmp.Diff(got.Assignments, again.Assignments); diff != "" {
				t.Errorf("second placement moved units (-first +second):\n%s", diff)
			}
			if diff := cmp.Diff(got.Unschedulable, again.Unschedulable); diff != "" {
				t.Errorf("second placement changed unschedulable (-first +second):\n%s", diff)
			}
		})
	}
}

// TestPlaceRespectsConstraints checks invariants on a larger random-ish
// cluster: no conflicting pair shares a machine, metadata always matches,
// followers sit with their peers, and nothing lands on a dead machine.
func TestPlaceRespectsConstraints(t *testing.T) {
	var machines []Machine
	for i := range 40 {
		m := machine(fmt.Sprintf("m%02d", i), fmt.Sprintf("zone=z%d", i%4))
		switch i % 10 {
		case 7:
			m.State = MachineLost
		case 8:
			m.State = MachineUnknown
		case 9:
			m.Draining = true
		}
		machines = append(machines, m)
	}
	var units []Unit
	for i := range 300 {
		var fleet string
		switch i % 5 {
		case 0:
			fleet = "Conflicts=svc@*.service"
		case 1:
			fleet = fmt.Sprintf("MachineMetadata=zone=z%d", i%4)
		case 2:
			fleet = fmt.Sprintf("MachineOf=svc@%d.service", i-2)
		case 3:
			fleet = "MoveBeforeReboot=true"
		}
		units = append(units, unitOf(t, fmt.Sprintf("svc@%d.service", i), fleet))
	}
	// Start from an arbitrary (partly invalid) assignment.
	current := Assignments{}
	for i, u := range units {
		current[u.Name] = []string{machines[(i*7)%len(machines)].ID}
	}
	got := Place(machines, units, current)
	byID := map[string]Machine{}
	for _, m := range machines {
		byID[m.ID] = m
	}
	byName := map[string]Unit{}
	for _, u := range units {
		byName[u.Name] = u
	}
	perMachine := map[string][]string{}
	for name, ids := range got.Assignments {
		if len(ids) != 1 {
			t.Fatalf("%s on %d machines", name, len(ids))
		}
		m := byID[ids[0]]
		u := byName[name]
		if m.State == MachineLost {
			t.Errorf("%s on lost machine %s", name, m.ID)
		}
		if m.State == MachineUnknown && !slices.Equal(current[name], ids) {
			t.Errorf("%s newly placed on unknown machine %s", name, m.ID)
		}
		stays := strings.HasPrefix(got.Unschedulable[name], StaysOnDraining)
		if stays != (m.Draining && u.Options.MoveBeforeReboot) {
			t.Errorf("%s on %s (draining %v), unschedulable %q", name, m.ID, m.Draining, got.Unschedulable[name])
		}
		if m.Draining && !slices.Equal(current[name], ids) {
			t.Errorf("%s newly placed on draining machine %s", name, m.ID)
		}
		for k, vs := range u.Options.MachineMetadata {
			if !slices.Contains(vs, m.Metadata[k]) {
				t.Errorf("%s on %s with %s=%s", name, m.ID, k, m.Metadata[k])
			}
		}
		for _, peer := range u.Options.MachineOf {
			if !slices.Equal(got.Assignments[peer], ids) {
				t.Errorf("%s on %s but peer %s on %v", name, m.ID, peer, got.Assignments[peer])
			}
		}
		perMachine[m.ID] = append(perMachine[m.ID], name)
	}
	for id, names := range perMachine {
		for _, a := range names {
			for _, b := range names {
				if a != b && matchAny(byName[a].Options.Conflicts, b) {
					t.Errorf("%s and %s conflict but share %s", a, b, id)
				}
			}
		}
	}
	staying := 0
	for name, why := range got.Unschedulable {
		if strings.HasPrefix(why, StaysOnDraining) {
			staying++
		} else if len(got.Assignments[name]) > 0 {
			t.Errorf("%s placed and unschedulable: %s", name, why)
		}
	}
	if len(got.Assignments)+len(got.Unschedulable)-staying != len(units) {
		t.Errorf("%d placed + %d unschedulable - %d staying != %d units", len(got.Assignments), len(got.Unschedulable), staying, len(units))
	}
}
