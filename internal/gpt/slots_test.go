package gpt

import (
	"errors"
	"strings"
	"testing"
)

func TestFindUSR(t *testing.T) {
	tb := imageTable(t)
	a, b, err := FindUSR(tb)
	if err != nil {
		t.Fatal(err)
	}
	if a.GUID != USRAGUID || a.Index != 3 || b.GUID != USRBGUID || b.Index != 4 {
		t.Errorf("a = %d %s, b = %d %s", a.Index, a.GUID, b.Index, b.GUID)
	}

	// Slots are found by type + label, not by number.
	sw := imageTable(t)
	sw.Partitions[2].Name, sw.Partitions[3].Name = LabelUSRB, LabelUSRA
	a, b, err = FindUSR(sw)
	if err != nil || a.Index != 4 || b.Index != 3 {
		t.Errorf("swapped labels: a %d b %d err %v", a.Index, b.Index, err)
	}

	for _, c := range []struct {
		name string
		edit func(tb *Table)
		want string
	}{
		{"missing B", func(tb *Table) { tb.Partitions = append(tb.Partitions[:3], tb.Partitions[4:]...) }, "no partition of type"},
		{"B wrong type", func(tb *Table) { tb.Partitions[3].Type = TypeLinuxData }, "has type 0fc63daf"},
		{"duplicate A", func(tb *Table) { tb.Partitions[3].Name = LabelUSRA }, "2 USR partitions are labelled USR-A (entries [3 4])"},
		{"unlabelled", func(tb *Table) { tb.Partitions[2].Name = "" }, "labelled USR-A"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tb := imageTable(t)
			c.edit(tb)
			_, _, err := FindUSR(tb)
			if !errors.Is(err, ErrSlot) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want ErrSlot with %q", err, c.want)
			}
		})
	}
}

func TestSelectBoot(t *testing.T) {
	const none = ""
	tests := []struct {
		name string
		a, b slot
		want string
	}{
		{"fresh image", slot{1, 0, true}, slot{0, 0, false}, LabelUSRA},
		{"update pending", slot{1, 0, true}, slot{2, 1, false}, LabelUSRB},
		{"tries used up → rollback", slot{1, 0, true}, slot{2, 0, false}, LabelUSRA},
		{"B good", slot{1, 0, true}, slot{2, 0, true}, LabelUSRB},
		{"A lower but only A good", slot{2, 0, false}, slot{1, 0, true}, LabelUSRB},
		{"tie → first in table", slot{1, 0, true}, slot{1, 3, false}, LabelUSRA},
		{"tie, A not bootable", slot{1, 0, false}, slot{1, 3, false}, LabelUSRB},
		{"priority 0 never wins", slot{0, 15, true}, slot{0, 1, false}, none},
		{"all zero", slot{0, 0, false}, slot{0, 0, false}, none},
		{"max values", slot{15, 0, true}, slot{14, 15, true}, LabelUSRA},
		{"tries only", slot{3, 2, false}, slot{5, 0, false}, LabelUSRA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := withSlots(t, tt.a, tt.b)
			got, ok := SelectBoot(tb.Partitions)
			if tt.want == none {
				if ok {
					t.Errorf("chose %s, want none", got.Name)
				}
				return
			}
			if !ok || got.Name != tt.want {
				t.Errorf("chose %q (ok %v), want %s", got.Name, ok, tt.want)
			}
		})
	}
}

func TestSelectBootTableOrderAndTypes(t *testing.T) {
	tb := withSlots(t, slot{1, 0, true}, slot{1, 0, true})
	// Reversed order: the first in the given (table) order wins a tie.
	parts := []Partition{tb.Partitions[3], tb.Partitions[2]}
	if got, _ := SelectBoot(parts); got.Name != LabelUSRB {
		t.Errorf("tie in reversed order chose %s", got.Name)
	}
	// Non-USR partitions are ignored whatever their bits say.
	tb.Partitions[len(tb.Partitions)-1].Attributes = slot{15, 15, true}.attrs(0)
	if got, _ := SelectBoot(tb.Partitions); got.Name != LabelUSRA {
		t.Errorf("chose %s, want USR-A", got.Name)
	}
}

func TestBootNext(t *testing.T) {
	tests := []struct {
		name        string
		a, b        slot
		want        string
		changed     bool
		wantA, wntB slot
	}{
		{"decrement tries", slot{1, 0, true}, slot{2, 1, false}, LabelUSRB, true, slot{1, 0, true}, slot{2, 0, false}},
		{"several tries", slot{1, 0, true}, slot{2, 3, false}, LabelUSRB, true, slot{1, 0, true}, slot{2, 2, false}},
		{"successful, no tries", slot{1, 0, true}, slot{2, 0, true}, LabelUSRB, false, slot{1, 0, true}, slot{2, 0, true}},
		{"successful with tries still decrements", slot{2, 1, true}, slot{0, 0, false}, LabelUSRA, true, slot{2, 0, true}, slot{0, 0, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := withSlots(t, tt.a, tt.b)
			got, changed, err := BootNext(tb)
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != tt.want || changed != tt.changed {
				t.Errorf("chose %s changed %v, want %s %v", got.Name, changed, tt.want, tt.changed)
			}
			a, b := slots(t, tb)
			if a != tt.wantA || b != tt.wntB {
				t.Errorf("after: A %v B %v, want A %v B %v", a, b, tt.wantA, tt.wntB)
			}
			if c, _ := tb.ByGUID(got.GUID); c.Attributes != got.Attributes {
				t.Error("returned partition is not the updated one")
			}
		})
	}
	tb := withSlots(t, slot{1, 0, false}, slot{0, 3, true})
	if _, _, err := BootNext(tb); !errors.Is(err, ErrNoBootableSlot) {
		t.Errorf("err = %v, want ErrNoBootableSlot", err)
	}
}

// TestABSequence walks the table of ab-updates.md §4.
func TestABSequence(t *testing.T) {
	tb := withSlots(t, slot{2, 0, true}, slot{1, 0, false}) // steady state
	step := func(name string, wantA, wantB slot) {
		t.Helper()
		if a, b := slots(t, tb); a != wantA || b != wantB {
			t.Fatalf("%s: A %v B %v, want A %v B %v", name, a, b, wantA, wantB)
		}
	}
	if got, _, _ := BootNext(tb.Clone()); got.Name != LabelUSRA {
		t.Fatalf("steady state boots %s", got.Name)
	}
	if err := ClearSlot(tb, USRBGUID); err != nil { // before writing the image
		t.Fatal(err)
	}
	step("cleared B", slot{2, 0, true}, slot{0, 0, false})
	if err := CommitUpdate(tb, USRBGUID); err != nil {
		t.Fatal(err)
	}
	step("after postinst", slot{1, 0, true}, slot{2, 1, false})
	chosen, changed, err := BootNext(tb)
	if err != nil || chosen.Name != LabelUSRB || !changed {
		t.Fatalf("GRUB chose %s changed %v err %v", chosen.Name, changed, err)
	}
	step("GRUB boots B", slot{1, 0, true}, slot{2, 0, false})

	// Branch 1: B is healthy and gets marked good.
	good := tb.Clone()
	changed, err = MarkGood(good, USRBGUID)
	if err != nil || !changed {
		t.Fatalf("MarkGood: changed %v err %v", changed, err)
	}
	if a, b := slots(t, good); a != (slot{1, 0, true}) || b != (slot{2, 0, true}) {
		t.Fatalf("marked good: A %v B %v", a, b)
	}
	if changed, _ = MarkGood(good, USRBGUID); changed {
		t.Error("second MarkGood changed the table")
	}
	for range 3 { // every later boot picks B without writing
		if c, changed, _ := BootNext(good); c.Name != LabelUSRB || changed {
			t.Fatalf("later boot: %s changed %v", c.Name, changed)
		}
	}

	// Branch 2: B panics before being marked good → GRUB falls back to A.
	chosen, changed, err = BootNext(tb)
	if err != nil || chosen.Name != LabelUSRA || changed {
		t.Fatalf("rollback boot: %s changed %v err %v", chosen.Name, changed, err)
	}
	step("rolled back", slot{1, 0, true}, slot{2, 0, false})
	// setgoodroot on A then re-establishes A on top.
	if changed, err := MarkGood(tb, USRAGUID); err != nil || !changed {
		t.Fatalf("MarkGood(A): %v %v", changed, err)
	}
	step("A marked good after rollback", slot{2, 0, true}, slot{1, 0, false})
}

// usrTable returns a table with one USR partition per priority, labelled
// U1, U2, ... (plus a non-USR partition with priority bits set, which
// Prioritize must not touch).
func usrTable(prios ...int) *Table {
	tb := &Table{SectorSize: 512, TotalSectors: 1 << 20, FirstUsableLBA: 34, LastUsableLBA: 1<<20 - 34, NumEntries: 128, EntrySize: 128}
	for i, p := range prios {
		tb.Partitions = append(tb.Partitions, Partition{
			Index: i + 1, Type: TypeUSR, GUID: NewRandomGUID(), Name: "U" + string(rune('1'+i)),
			FirstLBA: uint64(2048 * (i + 1)), LastLBA: uint64(2048*(i+2) - 1),
			Attributes: Attributes(0).WithPriority(p) | 1<<60,
		})
	}
	tb.Partitions = append(tb.Partitions, Partition{Index: len(prios) + 1, Type: TypeLinuxData, GUID: NewRandomGUID(),
		FirstLBA: 1 << 19, LastLBA: 1<<19 + 10, Attributes: Attributes(0).WithPriority(7)})
	return tb
}

func prioritiesOf(tb *Table) []int {
	var out []int
	for _, p := range tb.Partitions {
		out = append(out, p.Attributes.Priority())
	}
	return out
}

func TestPrioritize(t *testing.T) {
	tests := []struct {
		name   string
		prios  []int
		target int // index into prios
		want   []int
	}{
		{"two slots, other 1", []int{1, 1}, 1, []int{1, 2}},
		{"two slots, other 0 stays 0", []int{1, 0}, 0, []int{1, 0}},
		{"two slots, target 0 other 1", []int{0, 1}, 0, []int{2, 1}},
		{"already top gets compacted", []int{5, 3}, 0, []int{2, 1}},
		{"other higher", []int{2, 5}, 0, []int{2, 1}},
		{"groups keep order", []int{0, 3, 3, 1}, 0, []int{3, 2, 2, 1}},
		{"target in a group", []int{3, 3, 1}, 1, []int{2, 3, 1}},
		{"zero stays zero", []int{4, 0, 9}, 0, []int{2, 0, 1}},
		{"cap 15, never below 1", []int{0, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 1}, 0,
			[]int{15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := usrTable(tt.prios...)
			if err := Prioritize(tb, tb.Partitions[tt.target].GUID); err != nil {
				t.Fatal(err)
			}
			got := prioritiesOf(tb)
			want := append(tt.want, 7) // the non-USR partition
			if !equalInts(got, want) {
				t.Errorf("priorities %v, want %v", got, want)
			}
			for _, p := range tb.Partitions[:len(tt.prios)] {
				if p.Attributes&(1<<60) == 0 {
					t.Errorf("%s lost bit 60", p.Name)
				}
			}
		})
	}
	tb := usrTable(1, 1)
	if err := Prioritize(tb, tb.Partitions[2].GUID); !errors.Is(err, ErrSlot) {
		t.Errorf("non-USR target: %v", err)
	}
	if err := Prioritize(tb, NewRandomGUID()); !errors.Is(err, ErrSlot) {
		t.Errorf("unknown target: %v", err)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestClearCommitMarkGood(t *testing.T) {
	tests := []struct {
		name         string
		op           func(tb *Table) (bool, error)
		a, b         slot
		wantA, wantB slot
		changed      bool
	}{
		{"clear B", func(tb *Table) (bool, error) { return true, ClearSlot(tb, USRBGUID) },
			slot{1, 0, true}, slot{2, 3, true}, slot{1, 0, true}, slot{0, 0, false}, true},
		{"commit B on fresh image", func(tb *Table) (bool, error) { return true, CommitUpdate(tb, USRBGUID) },
			slot{1, 0, true}, slot{0, 0, false}, slot{1, 0, true}, slot{2, 1, false}, true},
		{"commit A from B", func(tb *Table) (bool, error) { return true, CommitUpdate(tb, USRAGUID) },
			slot{0, 0, false}, slot{2, 0, true}, slot{2, 1, false}, slot{1, 0, true}, true},
		{"mark good, already good and top", func(tb *Table) (bool, error) { return MarkGood(tb, USRAGUID) },
			slot{1, 0, true}, slot{0, 0, false}, slot{1, 0, true}, slot{0, 0, false}, false},
		{"mark good, tie is not top", func(tb *Table) (bool, error) { return MarkGood(tb, USRAGUID) },
			slot{1, 0, true}, slot{1, 0, true}, slot{2, 0, true}, slot{1, 0, true}, true},
		{"mark good, not successful yet", func(tb *Table) (bool, error) { return MarkGood(tb, USRBGUID) },
			slot{1, 0, true}, slot{2, 0, false}, slot{1, 0, true}, slot{2, 0, true}, true},
		{"mark good undoes manual prioritize (setgoodroot race)", func(tb *Table) (bool, error) { return MarkGood(tb, USRAGUID) },
			slot{1, 0, true}, slot{2, 1, true}, slot{2, 0, true}, slot{1, 1, true}, true},
		{"set next boot, never good", func(tb *Table) (bool, error) { return true, SetNextBoot(tb, USRBGUID) },
			slot{2, 0, true}, slot{1, 0, false}, slot{1, 0, true}, slot{2, 1, false}, true},
		{"set next boot, good", func(tb *Table) (bool, error) { return true, SetNextBoot(tb, USRAGUID) },
			slot{1, 0, true}, slot{2, 0, true}, slot{2, 0, true}, slot{1, 0, true}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := withSlots(t, tt.a, tt.b)
			before := tb.Clone()
			changed, err := tt.op(tb)
			if err != nil {
				t.Fatal(err)
			}
			a, b := slots(t, tb)
			if a != tt.wantA || b != tt.wantB || changed != tt.changed {
				t.Errorf("A %v B %v changed %v, want A %v B %v changed %v", a, b, changed, tt.wantA, tt.wantB, tt.changed)
			}
			if !changed {
				for i := range tb.Partitions {
					if tb.Partitions[i] != before.Partitions[i] {
						t.Errorf("unchanged table modified at %d", i)
					}
				}
			}
		})
	}
	tb := imageTable(t)
	for name, err := range map[string]error{
		"ClearSlot":    ClearSlot(tb, tb.Partitions[0].GUID),
		"CommitUpdate": CommitUpdate(tb, NewRandomGUID()),
		"SetNextBoot":  SetNextBoot(tb, tb.Partitions[0].GUID),
	} {
		if !errors.Is(err, ErrSlot) {
			t.Errorf("%s on a non-USR partition: %v", name, err)
		}
	}
	if _, err := MarkGood(tb, tb.Partitions[0].GUID); !errors.Is(err, ErrSlot) {
		t.Errorf("MarkGood on a non-USR partition: %v", err)
	}
}
