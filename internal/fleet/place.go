package fleet

import (
	"cmp"
	"fmt"
	"maps"
	"path"
	"slices"
	"sort"
	"strings"
)

// Assignments maps a unit name to the machines it is placed on: one for an
// ordinary unit, one per matching machine for a Global unit. Machine ids
// are sorted.
type Assignments map[string][]string

// Placement is the result of Place.
type Placement struct {
	// Assignments is the complete desired mapping for every unit that
	// could be placed.
	Assignments Assignments
	// Unschedulable gives, for each unit that could not be placed
	// (anywhere, for Global units), a human-readable reason. It also
	// holds the MoveBeforeReboot units that cannot move off a draining
	// machine: they stay assigned there (and so are in Assignments too),
	// and the reason, which starts with StaysOnDraining, says why they
	// could not move. UnitAgent.Drain does not wait for a unit listed
	// here.
	Unschedulable map[string]string
}

// StaysOnDraining starts the Unschedulable reason of a MoveBeforeReboot
// unit that no other machine can take, kept on its draining machine.
const StaysOnDraining = "cannot move off draining machine"

// Place decides where units run. It is a pure function: the same input
// gives the same output, which is what makes a leader change harmless.
//
// Units with desired state inactive are not placed. An existing assignment
// in current is kept as long as it is still valid — the machine is alive
// or unknown (within its grace period), every constraint still holds, and
// the machine is not draining a MoveBeforeReboot unit — so units never
// move without a reason. Everything else goes to the least-loaded machine
// (units placed there, globals included; ties broken by machine id) that
// is alive, not draining and satisfies MachineID, MachineMetadata,
// MachineOf and Conflicts (in both directions). Global units go to every
// such machine. A unit with Replaces first tries the machine of a unit it
// replaces, which is then moved elsewhere.
//
// A draining machine takes no new units, but a MoveBeforeReboot unit that
// no other machine can take stays on it (with its MachineOf followers):
// the machine then reboots with it, as it would without MoveBeforeReboot,
// instead of the unit being down for the whole reboot. Such a unit is in
// Unschedulable too, so that the drain does not wait for it.
func Place(machines []Machine, units []Unit, current Assignments) Placement {
	p := newPlacer(machines, units, current)
	p.reserveReplacers()
	p.keep()
	p.sortOrder()
	p.placeGlobals()
	p.placeRegular()
	return Placement{Assignments: p.result(), Unschedulable: p.failed}
}

type machineSlot struct {
	m        *Machine
	load     int
	units    []*Unit // units decided on this machine
	eligible bool    // may take new units
	keepable bool    // may keep units it has
	pos      int     // index in placer.order, -1 if not eligible
	rank     int     // index in placer.all (machine id order), the tie-break
	// holds counts, per glob id, the units on the machine that carry the
	// glob in Conflicts or Replaces; matches counts the units whose name
	// the glob matches. Together they answer "does anything here conflict
	// with u" in O(globs of u) instead of O(units here × globs).
	holds   map[int32]int32
	matches map[int32]int32
}

// unitGlobs is the glob-id view of one unit's Conflicts and Replaces.
type unitGlobs struct {
	own       []int32 // ids of globs in the unit's Conflicts and Replaces
	matchedBy []int32 // ids of globs (of any unit) matching the unit's name
}

type placer struct {
	machines map[string]*machineSlot
	all      []*machineSlot // every machine by id
	order    []*machineSlot // eligible machines by (load, id)
	// metaOK caches, per distinct MachineMetadata constraint, which
	// machines (by rank) satisfy it: constrained units are checked
	// against many machines, and most share a handful of constraints.
	metaOK  map[string][]bool
	metaOf  map[string]string // unit -> its constraint's key in metaOK
	units   map[string]*Unit
	names   []string // desired, non-inactive units by name
	current Assignments
	decided map[string][]string // unit -> machines
	failed  map[string]string
	globs   map[string]*unitGlobs // only units involved in any glob
	// ordered is false while keep() runs: order is sorted once after it
	// instead of on every kept unit.
	ordered bool
}

func newPlacer(machines []Machine, units []Unit, current Assignments) *placer {
	p := &placer{
		machines: make(map[string]*machineSlot, len(machines)),
		units:    make(map[string]*Unit, len(units)),
		current:  current,
		decided:  make(map[string][]string, len(units)),
		failed:   map[string]string{},
	}
	byID := make([]*Machine, len(machines))
	for i := range machines {
		byID[i] = &machines[i]
	}
	slices.SortFunc(byID, func(a, b *Machine) int { return cmp.Compare(a.ID, b.ID) })
	p.all = make([]*machineSlot, len(byID))
	for i, m := range byID {
		s := &machineSlot{m: m, pos: -1, rank: i}
		p.all[i] = s
		s.keepable = m.State == MachineAlive || m.State == MachineUnknown
		s.eligible = m.State == MachineAlive && !m.Draining
		p.machines[m.ID] = s
		if s.eligible {
			p.order = append(p.order, s)
		}
	}
	for i, s := range p.order {
		s.pos = i
	}
	for i := range units {
		u := &units[i]
		if u.Desired == Inactive || u.Desired == "" {
			continue
		}
		p.units[u.Name] = u
		p.names = append(p.names, u.Name)
	}
	sort.Strings(p.names)
	p.indexMetadata()
	p.indexGlobs()
	return p
}

// indexMetadata evaluates each distinct MachineMetadata constraint once
// against every machine.
func (p *placer) indexMetadata() {
	p.metaOK, p.metaOf = map[string][]bool{}, map[string]string{}
	for _, name := range p.names {
		md := p.units[name].Options.MachineMetadata
		if len(md) == 0 {
			continue
		}
		keys := slices.Sorted(maps.Keys(md))
		var b strings.Builder
		for _, k := range keys {
			vs := slices.Clone(md[k])
			sort.Strings(vs)
			fmt.Fprintf(&b, "%q=%q;", k, vs)
		}
		sig := b.String()
		p.metaOf[name] = sig
		if _, done := p.metaOK[sig]; done {
			continue
		}
		ok := make([]bool, len(p.all))
		for i, s := range p.all {
			ok[i] = true
			for k, vs := range md {
				if v, has := s.m.Metadata[k]; !has || !slices.Contains(vs, v) {
					ok[i] = false
					break
				}
			}
		}
		p.metaOK[sig] = ok
	}
}

// indexGlobs numbers the distinct Conflicts and Replaces globs and
// resolves, once, which unit names each one matches. Globs without
// wildcards (the common "Conflicts=other.service") are map lookups;
// wildcard globs are matched against every unit name, so the cost is
// wildcard globs × units rather than placements × machines × units.
func (p *placer) indexGlobs() {
	p.globs = map[string]*unitGlobs{}
	ids := map[string]int32{}
	get := func(name string) *unitGlobs {
		g := p.globs[name]
		if g == nil {
			g = &unitGlobs{}
			p.globs[name] = g
		}
		return g
	}
	for _, name := range p.names {
		u := p.units[name]
		for _, list := range [][]string{u.Options.Conflicts, u.Options.Replaces} {
			for _, glob := range list {
				id, seen := ids[glob]
				if !seen {
					id = int32(len(ids))
					ids[glob] = id
				}
				g := get(name)
				if !slices.Contains(g.own, id) {
					g.own = append(g.own, id)
				}
				if seen {
					continue
				}
				if !strings.ContainsAny(glob, `*?[\`) {
					if _, ok := p.units[glob]; ok {
						mg := get(glob)
						mg.matchedBy = append(mg.matchedBy, id)
					}
					continue
				}
				for _, other := range p.names {
					if ok, _ := path.Match(glob, other); ok {
						mg := get(other)
						mg.matchedBy = append(mg.matchedBy, id)
					}
				}
			}
		}
	}
}

// assign records u on s and keeps p.order sorted by (load, id).
func (p *placer) assign(u *Unit, s *machineSlot) {
	p.decided[u.Name] = append(p.decided[u.Name], s.m.ID)
	s.units = append(s.units, u)
	s.load++
	if g := p.globs[u.Name]; g != nil {
		if s.holds == nil {
			s.holds, s.matches = map[int32]int32{}, map[int32]int32{}
		}
		for _, id := range g.own {
			s.holds[id]++
		}
		for _, id := range g.matchedBy {
			s.matches[id]++
		}
	}
	if s.pos < 0 || !p.ordered {
		return
	}
	// The slot's key only grew, so it can only move right; equal-load
	// runs are short in practice, and this keeps the scan below O(1) for
	// unconstrained units.
	i := s.pos
	for i+1 < len(p.order) && less(p.order[i+1], s) {
		p.order[i] = p.order[i+1]
		p.order[i].pos = i
		i++
	}
	p.order[i] = s
	s.pos = i
}

func less(a, b *machineSlot) bool {
	if a.load != b.load {
		return a.load < b.load
	}
	return a.rank < b.rank
}

// sortOrder sorts the eligible machines by (load, id) and turns on
// incremental maintenance.
func (p *placer) sortOrder() {
	slices.SortFunc(p.order, func(a, b *machineSlot) int {
		if a.load != b.load {
			return cmp.Compare(a.load, b.load)
		}
		return cmp.Compare(a.rank, b.rank)
	})
	for i, s := range p.order {
		s.pos = i
	}
	p.ordered = true
}

// reserveReplacers points each replacing unit that has no live assignment
// at the machine of a unit it replaces, so that keep() moves the replaced
// unit instead of keeping it there.
func (p *placer) reserveReplacers() {
	cloned := false
	for _, name := range p.names {
		u := p.units[name]
		if len(u.Options.Replaces) == 0 || u.Options.Global || p.hasKeepable(name) {
			continue
		}
		var targets []string
		for _, other := range p.names {
			if other != name && matchAny(u.Options.Replaces, other) {
				for _, id := range p.current[other] {
					if s := p.machines[id]; s != nil && s.eligible {
						targets = append(targets, id)
					}
				}
			}
		}
		sort.Strings(targets)
		for _, id := range targets {
			s := p.machines[id]
			if p.staticFit(u, s) == rejNone && p.peersCurrentlyOn(u, id) {
				// current belongs to the caller.
				if !cloned {
					p.current, cloned = cloneAssignments(p.current), true
				}
				p.current[name] = []string{id}
				break
			}
		}
	}
}

func (p *placer) hasKeepable(unit string) bool {
	for _, id := range p.current[unit] {
		if s := p.machines[id]; s != nil && s.keepable {
			return true
		}
	}
	return false
}

func (p *placer) peersCurrentlyOn(u *Unit, id string) bool {
	for _, peer := range u.Options.MachineOf {
		if !slices.Contains(p.current[peer], id) {
			return false
		}
	}
	return true
}

// keep keeps every valid current assignment. Replacing units go first so
// that the units they replace see them; MachineOf followers wait until
// their peers are decided, so a follower stays only if its peer stays.
func (p *placer) keep() {
	var first, rest []string
	for _, name := range p.names {
		if len(p.current[name]) == 0 {
			continue
		}
		if len(p.units[name].Options.Replaces) > 0 {
			first = append(first, name)
		} else {
			rest = append(rest, name)
		}
	}
	pending := append(first, rest...)
	settled := make(map[string]bool, len(p.names))
	// Units without a current assignment are settled for this phase.
	for _, name := range p.names {
		if len(p.current[name]) == 0 {
			settled[name] = true
		}
	}
	for len(pending) > 0 {
		var next []string
		for _, name := range pending {
			u := p.units[name]
			if p.waitsForPeers(u, settled) {
				next = append(next, name)
				continue
			}
			settled[name] = true
			ids := slices.Clone(p.current[name])
			sort.Strings(ids)
			for _, id := range ids {
				s := p.machines[id]
				if s == nil || !s.keepable || p.keepFit(u, s) != rejNone {
					continue
				}
				p.assign(u, s)
				if !u.Options.Global {
					break
				}
			}
		}
		if len(next) == len(pending) {
			// A MachineOf cycle: nothing in it can be kept.
			for _, name := range next {
				settled[name] = true
			}
			break
		}
		pending = next
	}
}

func (p *placer) waitsForPeers(u *Unit, settled map[string]bool) bool {
	for _, peer := range u.Options.MachineOf {
		if _, known := p.units[peer]; known && !settled[peer] {
			return true
		}
	}
	return false
}

// keepFit returns why u may not stay on s, or "".
func (p *placer) keepFit(u *Unit, s *machineSlot) reject {
	if s.m.Draining && u.Options.MoveBeforeReboot && !u.Options.Global {
		return rejDraining
	}
	return p.stayFit(u, s)
}

// stayFit is keepFit without the draining rule.
func (p *placer) stayFit(u *Unit, s *machineSlot) reject {
	if r := p.staticFit(u, s); r != rejNone {
		return r
	}
	if r := p.peerFit(u, s); r != rejNone {
		return r
	}
	return p.conflictFit(u, s)
}

// staticFit checks the constraints that depend only on the machine.
func (p *placer) staticFit(u *Unit, s *machineSlot) reject {
	if id := u.Options.MachineID; id != "" && id != s.m.ID {
		return rejMachineID
	}
	if sig, ok := p.metaOf[u.Name]; ok && !p.metaOK[sig][s.rank] {
		return rejMetadata
	}
	return rejNone
}

func (p *placer) peerFit(u *Unit, s *machineSlot) reject {
	for _, peer := range u.Options.MachineOf {
		if !slices.Contains(p.decided[peer], s.m.ID) {
			return rejMachineOf
		}
	}
	return rejNone
}

// conflictFit checks Conflicts in both directions against the units
// already decided on s; Replaces counts as a conflict, since a replaced
// unit must not share the machine with its replacement. A unit never
// conflicts with itself ("Conflicts=web@*.service" in web@1.service).
func (p *placer) conflictFit(u *Unit, s *machineSlot) reject {
	g := p.globs[u.Name]
	if g == nil || s.holds == nil {
		return rejNone
	}
	// u is never on s while it is checked against s, so the counts are
	// of other units only.
	for _, id := range g.own {
		if s.matches[id] > 0 {
			return rejConflicts
		}
	}
	for _, id := range g.matchedBy {
		if s.holds[id] > 0 {
			return rejConflicts
		}
	}
	return rejNone
}

func matchAny(globs []string, name string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, name); ok {
			return true
		}
	}
	return false
}

// placeGlobals adds Global units to every eligible machine that passes
// their constraints and does not have them yet. They go before ordinary
// units so that a new ordinary unit cannot keep a global off a machine.
func (p *placer) placeGlobals() {
	byID := slices.Clone(p.order)
	slices.SortFunc(byID, func(a, b *machineSlot) int { return cmp.Compare(a.rank, b.rank) })
	for _, name := range p.names {
		u := p.units[name]
		if !u.Options.Global {
			continue
		}
		var rej rejections
		has := make(map[string]bool, len(p.decided[name]))
		for _, id := range p.decided[name] {
			has[id] = true
		}
		for _, s := range byID {
			if has[s.m.ID] {
				continue
			}
			if r := p.staticFit(u, s); r != rejNone {
				rej.add(r)
				continue
			}
			if r := p.conflictFit(u, s); r != rejNone {
				rej.add(r)
				continue
			}
			p.assign(u, s)
		}
		if len(p.decided[name]) == 0 {
			p.failed[name] = rej.reason(len(byID))
		}
	}
}

// placeRegular places every ordinary unit that was not kept, followers
// after their MachineOf peers.
func (p *placer) placeRegular() {
	var pending []string
	for _, name := range p.names {
		if !p.units[name].Options.Global && len(p.decided[name]) == 0 {
			pending = append(pending, name)
		}
	}
	waiting := make(map[string]bool, len(pending))
	for _, name := range pending {
		waiting[name] = true
	}
	for len(pending) > 0 {
		var next []string
		for _, name := range pending {
			u := p.units[name]
			if reason, wait := p.peerState(u, waiting); wait {
				next = append(next, name)
				continue
			} else if reason != "" {
				p.failed[name] = reason
				delete(waiting, name)
				continue
			}
			delete(waiting, name)
			p.placeOne(u)
			if _, failed := p.failed[name]; failed {
				p.stayOnDraining(u)
			}
		}
		if len(next) == len(pending) {
			for _, name := range next {
				p.failed[name] = "MachineOf cycle between " + strings.Join(next, ", ")
			}
			return
		}
		pending = next
	}
}

// peerState reports whether u must wait for a MachineOf peer still
// pending, or why it cannot be placed at all.
func (p *placer) peerState(u *Unit, pending map[string]bool) (string, bool) {
	for _, peer := range u.Options.MachineOf {
		if _, ok := p.units[peer]; !ok {
			return fmt.Sprintf("MachineOf peer %s is not submitted or not active", peer), false
		}
		if len(p.decided[peer]) > 0 {
			continue
		}
		if _, failed := p.failed[peer]; failed {
			return fmt.Sprintf("MachineOf peer %s is unschedulable", peer), false
		}
		if pending[peer] {
			return "", true
		}
	}
	return "", false
}

func (p *placer) placeOne(u *Unit) {
	var rej rejections
	try := func(s *machineSlot) bool {
		if r := p.staticFit(u, s); r != rejNone {
			rej.add(r)
			return false
		}
		if r := p.peerFit(u, s); r != rejNone {
			rej.add(r)
			return false
		}
		if r := p.conflictFit(u, s); r != rejNone {
			rej.add(r)
			return false
		}
		p.assign(u, s)
		return true
	}
	// Pinned units need not scan the cluster.
	if id := u.Options.MachineID; id != "" {
		s := p.machines[id]
		switch {
		case s == nil:
			p.failed[u.Name] = fmt.Sprintf("MachineID %s is not a registered machine", id)
		case !s.eligible && s.m.Draining:
			p.failed[u.Name] = fmt.Sprintf("MachineID %s is draining", id)
		case !s.eligible:
			p.failed[u.Name] = fmt.Sprintf("MachineID %s is %s", id, s.m.State)
		case !try(s):
			p.failed[u.Name] = rej.reason(1)
		}
		return
	}
	if len(u.Options.MachineOf) > 0 {
		for _, id := range p.decided[u.Options.MachineOf[0]] {
			if s := p.machines[id]; s != nil && s.eligible && try(s) {
				return
			}
			if s := p.machines[id]; s != nil && !s.eligible {
				rej.add(rejPeerNotEligible)
			}
		}
		p.failed[u.Name] = rej.reason(len(p.decided[u.Options.MachineOf[0]]))
		return
	}
	for _, s := range p.order {
		if try(s) {
			return
		}
	}
	p.failed[u.Name] = rej.reason(len(p.order))
}

// stayOnDraining runs when u could not be placed: if u is assigned to a
// draining machine and could stay there but for the draining rule (a
// MoveBeforeReboot unit, or a follower of one that did not move either),
// it stays. A MoveBeforeReboot unit stays listed as unschedulable, with a
// reason starting with StaysOnDraining; any other unit staying on a
// draining machine is simply kept.
func (p *placer) stayOnDraining(u *Unit) {
	ids := slices.Clone(p.current[u.Name])
	sort.Strings(ids)
	for _, id := range ids {
		s := p.machines[id]
		if s == nil || !s.keepable || !s.m.Draining || p.stayFit(u, s) != rejNone {
			continue
		}
		p.assign(u, s)
		if u.Options.MoveBeforeReboot {
			p.failed[u.Name] = fmt.Sprintf("%s %s (%s); stays there", StaysOnDraining, id, p.failed[u.Name])
		} else {
			delete(p.failed, u.Name)
		}
		return
	}
}

func (p *placer) result() Assignments {
	out := make(Assignments, len(p.decided))
	for name, ids := range p.decided {
		ids = slices.Clone(ids)
		sort.Strings(ids)
		out[name] = ids
	}
	return out
}

func cloneAssignments(a Assignments) Assignments {
	out := make(Assignments, len(a))
	for k, v := range a {
		out[k] = v
	}
	return out
}

// reject is why a machine cannot take a unit.
type reject uint8

const (
	rejNone reject = iota
	rejDraining
	rejMachineID
	rejMetadata
	rejMachineOf
	rejConflicts
	rejPeerNotEligible
	numRejects
)

var rejectNames = [numRejects]string{
	rejDraining:        "machine draining",
	rejMachineID:       "MachineID",
	rejMetadata:        "MachineMetadata",
	rejMachineOf:       "MachineOf",
	rejConflicts:       "Conflicts",
	rejPeerNotEligible: "MachineOf peer's machine not alive or draining",
}

// rejections counts why machines were turned down, for the reason of an
// unschedulable unit.
type rejections [numRejects]int

func (r *rejections) add(why reject) { r[why]++ }

func (r *rejections) reason(candidates int) string {
	if candidates == 0 {
		return "no alive machine to place on"
	}
	var parts []string
	for why, n := range r {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%s (%d)", rejectNames[why], n))
		}
	}
	return fmt.Sprintf("no eligible machine among %d: %s", candidates, strings.Join(parts, ", "))
}
