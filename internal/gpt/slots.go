package gpt

import (
	"cmp"
	"fmt"
	"slices"
)

// FindUSR returns the USR-A and USR-B partitions: type TypeUSR with label
// LabelUSRA / LabelUSRB. Partition numbers are deliberately not used
// (update_engine's "swap the trailing 3↔4" trick breaks on other layouts).
// A missing or duplicated slot is an error wrapping ErrSlot.
func FindUSR(t *Table) (a, b Partition, err error) {
	a, err = findSlot(t, LabelUSRA)
	if err != nil {
		return Partition{}, Partition{}, err
	}
	b, err = findSlot(t, LabelUSRB)
	if err != nil {
		return Partition{}, Partition{}, err
	}
	return a, b, nil
}

// FindSlot returns the USR partition labelled label.
func FindSlot(t *Table, label string) (Partition, error) { return findSlot(t, label) }

func findSlot(t *Table, label string) (Partition, error) {
	var found []Partition
	for _, p := range t.Partitions {
		if p.IsUSR() && p.Name == label {
			found = append(found, p)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		if named := t.ByName(label); len(named) > 0 {
			return Partition{}, fmt.Errorf("gpt: find %s: %w: partition %d is labelled %s but has type %s, not %s",
				label, ErrSlot, named[0].Index, label, named[0].Type, TypeUSR)
		}
		return Partition{}, fmt.Errorf("gpt: find %s: %w: no partition of type %s labelled %s", label, ErrSlot, TypeUSR, label)
	}
	idx := make([]int, len(found))
	for i, p := range found {
		idx[i] = p.Index
	}
	return Partition{}, fmt.Errorf("gpt: find %s: %w: %d USR partitions are labelled %s (entries %v)", label, ErrSlot, len(found), label, idx)
}

// SelectBoot picks what GRUB gptprio would boot: among TypeUSR partitions
// with priority > 0 and (tries > 0 or successful), the strictly highest
// priority; on a tie the first in parts order (table order). False if none.
func SelectBoot(parts []Partition) (Partition, bool) {
	var best Partition
	found := false
	for _, p := range parts {
		if !p.IsUSR() || !p.Attributes.Bootable() {
			continue
		}
		if !found || p.Attributes.Priority() > best.Attributes.Priority() {
			best, found = p, true
		}
	}
	return best, found
}

// BootNext does what GRUB does at boot: SelectBoot, and if the chosen slot
// has tries left, decrement them in t so the caller commits the table
// before booting. chosen is returned as it is after the decrement; changed
// reports whether t was modified. No bootable slot is an error wrapping
// ErrNoBootableSlot.
func BootNext(t *Table) (chosen Partition, changed bool, err error) {
	p, ok := SelectBoot(t.Partitions)
	if !ok {
		return Partition{}, false, fmt.Errorf("gpt: boot next: %w", ErrNoBootableSlot)
	}
	if n := p.Attributes.Tries(); n > 0 {
		p.Attributes = p.Attributes.WithTries(n - 1)
		if err := t.Update(p); err != nil {
			return Partition{}, false, err
		}
		changed = true
	}
	return p, changed, nil
}

// slotByGUID finds a USR partition by unique GUID.
func slotByGUID(t *Table, op string, target GUID) (Partition, error) {
	p, ok := t.ByGUID(target)
	if !ok {
		return Partition{}, fmt.Errorf("gpt: %s: %w: no partition with GUID %s", op, ErrSlot, target)
	}
	if !p.IsUSR() {
		return Partition{}, fmt.Errorf("gpt: %s: %w: %s has type %s, not USR", op, ErrSlot, p.describe(), p.Type)
	}
	return p, nil
}

// Prioritize gives target the highest priority among the USR partitions,
// like `cgpt prioritize`: the other USR partitions with a non-zero priority
// are grouped by priority (highest first) and ranked below the target in
// that order; the target's priority is the number of ranks (itself plus
// the groups), capped at 15. Ranks that would fall below 1 stay at 1 (a
// non-zero priority is never lowered to 0) and priority-0 partitions keep
// 0. With two slots: target 2, other 1 (other stays 0 if it was 0).
func Prioritize(t *Table, target GUID) error {
	tp, err := slotByGUID(t, "prioritize", target)
	if err != nil {
		return err
	}
	var prios []int // distinct non-zero priorities of the others, descending
	for _, p := range t.Partitions {
		if p.IsUSR() && p.Index != tp.Index && p.Attributes.Priority() > 0 {
			prios = append(prios, p.Attributes.Priority())
		}
	}
	slices.SortFunc(prios, func(a, b int) int { return cmp.Compare(b, a) })
	prios = slices.Compact(prios)
	top := min(len(prios)+1, 15)
	for i := range t.Partitions {
		p := &t.Partitions[i]
		switch {
		case p.Index == tp.Index:
			p.Attributes = p.Attributes.WithPriority(top)
		case p.IsUSR() && p.Attributes.Priority() > 0:
			rank := slices.Index(prios, p.Attributes.Priority()) // 0 = just below the target
			p.Attributes = p.Attributes.WithPriority(max(top-1-rank, 1))
		}
	}
	return nil
}

// ClearSlot makes target unbootable (priority, tries and successful all 0).
// Do this before writing an image into a slot, so a half-written slot can
// never be chosen, whatever happens afterwards.
func ClearSlot(t *Table, target GUID) error {
	p, err := slotByGUID(t, "clear slot", target)
	if err != nil {
		return err
	}
	p.Attributes = p.Attributes.WithPriority(0).WithTries(0).WithSuccessful(false)
	return t.Update(p)
}

// CommitUpdate is the update commit point (postinst's `cgpt add -S0 -T1`
// then `cgpt prioritize`): target gets one try, is not yet successful, and
// the highest priority. Nothing before this changes which slot boots.
func CommitUpdate(t *Table, target GUID) error {
	p, err := slotByGUID(t, "commit update", target)
	if err != nil {
		return err
	}
	p.Attributes = p.Attributes.WithTries(1).WithSuccessful(false)
	if err := t.Update(p); err != nil {
		return err
	}
	return Prioritize(t, target)
}

// MarkGood records that the booted slot is healthy (flatcar-setgoodroot:
// `cgpt add -S1 -T0`, `cgpt prioritize`). If the slot is already successful
// and alone at the top priority, t is left untouched and changed is false,
// so callers need not rewrite the GPT on every boot.
func MarkGood(t *Table, booted GUID) (changed bool, err error) {
	p, err := slotByGUID(t, "mark good", booted)
	if err != nil {
		return false, err
	}
	if p.Attributes.Successful() && isTop(t, p) {
		return false, nil
	}
	p.Attributes = p.Attributes.WithSuccessful(true).WithTries(0)
	if err := t.Update(p); err != nil {
		return false, err
	}
	if err := Prioritize(t, booted); err != nil {
		return false, err
	}
	return true, nil
}

// SetNextBoot makes target the slot GRUB boots next (manual rollback,
// manual-rollbacks.md): Prioritize, and if the slot never booted
// successfully, give it one try so it is bootable.
func SetNextBoot(t *Table, target GUID) error {
	p, err := slotByGUID(t, "set next boot", target)
	if err != nil {
		return err
	}
	if !p.Attributes.Successful() {
		p.Attributes = p.Attributes.WithTries(1)
		if err := t.Update(p); err != nil {
			return err
		}
	}
	return Prioritize(t, target)
}

// isTop reports whether p has a non-zero priority strictly above every
// other USR partition.
func isTop(t *Table, p Partition) bool {
	if p.Attributes.Priority() == 0 {
		return false
	}
	for _, o := range t.Partitions {
		if o.IsUSR() && o.Index != p.Index && o.Attributes.Priority() >= p.Attributes.Priority() {
			return false
		}
	}
	return true
}
