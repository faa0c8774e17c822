package gpt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var ignoreUnexported = cmpopts.IgnoreUnexported(Table{})

func TestRoundTrip(t *testing.T) {
	want := imageTable(t)
	m := writtenImage(t, want)
	got, err := Read(m, m.size())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, ignoreUnexported); diff != "" {
		t.Errorf("read back differs (-want +got):\n%s", diff)
	}
	if !got.PrimaryValid || !got.BackupValid || got.NeedsRepair() {
		t.Errorf("valid = %v/%v, needs repair %v", got.PrimaryValid, got.BackupValid, got.NeedsRepair())
	}
	// Writing a read table back unchanged must not change a single byte.
	before := slices.Clone(m.b)
	if err := Write(m, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, m.b) {
		t.Error("rewriting an unchanged table changed the disk")
	}
}

func TestHeaderFieldsAndCRCs(t *testing.T) {
	tb := imageTable(t)
	m := writtenImage(t, tb)
	last := uint64(len(m.b)/512 - 1)
	for _, c := range []struct {
		name                    string
		lba, alt, entries, want uint64
	}{
		{"primary", 1, last, 2, 0},
		{"backup", last, 1, last - 32, 0},
	} {
		h := m.b[c.lba*512:][:512]
		if string(h[:8]) != "EFI PART" {
			t.Fatalf("%s: signature %q", c.name, h[:8])
		}
		if rev, size := binary.LittleEndian.Uint32(h[8:]), binary.LittleEndian.Uint32(h[12:]); rev != 0x00010000 || size != 92 {
			t.Errorf("%s: revision %#x size %d", c.name, rev, size)
		}
		for field, want := range map[int]uint64{24: c.lba, 32: c.alt, 40: 34, 48: last - 33, 72: c.entries} {
			if got := binary.LittleEndian.Uint64(h[field:]); got != want {
				t.Errorf("%s: header field at %d = %d, want %d", c.name, field, got, want)
			}
		}
		if n, sz := binary.LittleEndian.Uint32(h[80:]), binary.LittleEndian.Uint32(h[84:]); n != 128 || sz != 128 {
			t.Errorf("%s: %d entries of %d bytes", c.name, n, sz)
		}
		if !bytes.Equal(h[56:72], tb.DiskGUID[:]) {
			t.Errorf("%s: disk GUID % x", c.name, h[56:72])
		}
		if !bytes.Equal(h[20:24], []byte{0, 0, 0, 0}) || !bytes.Equal(h[92:], make([]byte, 512-92)) {
			t.Errorf("%s: reserved bytes not zero", c.name)
		}
		// CRCs computed independently of the package.
		entries := m.b[c.entries*512:][:128*128]
		if got, want := binary.LittleEndian.Uint32(h[88:]), crc32.ChecksumIEEE(entries); got != want {
			t.Errorf("%s: entry CRC %08x, want %08x", c.name, got, want)
		}
		hdr := slices.Clone(h[:92])
		copy(hdr[16:20], []byte{0, 0, 0, 0})
		if got, want := binary.LittleEndian.Uint32(h[16:]), crc32.ChecksumIEEE(hdr); got != want {
			t.Errorf("%s: header CRC %08x, want %08x", c.name, got, want)
		}
	}
	if !bytes.Equal(m.b[2*512:34*512], m.b[(last-32)*512:last*512]) {
		t.Error("primary and backup entry arrays differ")
	}
	// Protective MBR: one 0xEE record from LBA 1 over the whole disk.
	mbr := m.b[:512]
	if mbr[510] != 0x55 || mbr[511] != 0xaa || mbr[446+4] != 0xee {
		t.Errorf("no protective MBR: % x", mbr[446:])
	}
	if start, n := binary.LittleEndian.Uint32(mbr[446+8:]), binary.LittleEndian.Uint32(mbr[446+12:]); start != 1 || uint64(n) != last {
		t.Errorf("protective record LBA %d count %d", start, n)
	}
}

func TestEntryBytes(t *testing.T) {
	tb := imageTable(t)
	m := writtenImage(t, tb)
	// Entry 3 (USR-A) starts at LBA 2 + 2×128 bytes.
	e := m.b[2*512+2*128:][:128]
	if !bytes.Equal(e[0:16], TypeUSR[:]) || !bytes.Equal(e[16:32], USRAGUID[:]) {
		t.Errorf("entry 3 GUIDs % x", e[:32])
	}
	// Priority 1 (bit 48) and successful (bit 56), little-endian at 48.
	if got := e[48:56]; !bytes.Equal(got, []byte{0, 0, 0, 0, 0, 0, 0x01, 0x01}) {
		t.Errorf("USR-A attribute bytes % x", got)
	}
	name := []byte{'U', 0, 'S', 0, 'R', 0, '-', 0, 'A', 0}
	if !bytes.Equal(e[56:56+len(name)], name) || !bytes.Equal(e[56+len(name):128], make([]byte, 72-len(name))) {
		t.Errorf("name bytes % x", e[56:])
	}
	// Entry 1 (ESP): legacy-BIOS-bootable is bit 2 = byte 48 value 0x04.
	if got := m.b[2*512+48]; got != 0x04 {
		t.Errorf("ESP attribute byte 0 = %#x", got)
	}
	// Now set tries/priority on USR-B and check the raw bits again.
	if err := CommitUpdate(tb, USRBGUID); err != nil {
		t.Fatal(err)
	}
	if err := Write(m, tb); err != nil {
		t.Fatal(err)
	}
	b := binary.LittleEndian.Uint64(m.b[2*512+3*128+48:])
	if b>>48&0xf != 2 || b>>52&0xf != 1 || b>>56&1 != 0 {
		t.Errorf("USR-B raw attributes %016x, want priority 2 tries 1", b)
	}
}

func TestNames(t *testing.T) {
	tb := imageTable(t)
	tb.Partitions[0].Name = "ÉFI-Système ☃ 𝄞" // BMP, non-BMP (surrogate pair)
	m := writtenImage(t, tb)
	got, err := Read(m, m.size())
	if err != nil {
		t.Fatal(err)
	}
	if got.Partitions[0].Name != tb.Partitions[0].Name {
		t.Errorf("name %q, want %q", got.Partitions[0].Name, tb.Partitions[0].Name)
	}
	tb.Partitions[0].Name = strings.Repeat("x", 36)
	if err := Write(m, tb); err != nil {
		t.Errorf("36 code units: %v", err)
	}
	tb.Partitions[0].Name = strings.Repeat("x", 35) + "𝄞" // 37 code units
	if err := Write(m, tb); err == nil {
		t.Error("37 code units accepted")
	}
}

func TestCorruptPrimaryUsesBackup(t *testing.T) {
	for _, c := range []struct {
		name    string
		corrupt func(b []byte)
	}{
		{"header CRC", func(b []byte) { b[512+40]++ }},
		{"signature", func(b []byte) { copy(b[512:], "NOT PART") }},
		{"entry array", func(b []byte) { b[2*512+2*128+48] = 0xff }},
		{"zeroed", func(b []byte) { clear(b[512:1024]) }},
		{"MyLBA with valid CRC", func(b []byte) { binary.LittleEndian.PutUint64(b[512+24:], 7); fixCRCs(b, 1) }},
		{"huge entry count with valid CRC", func(b []byte) { binary.LittleEndian.PutUint32(b[512+80:], 1<<30); fixCRCs0(b) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := imageTable(t)
			m := writtenImage(t, want)
			c.corrupt(m.b)
			got, err := Read(m, m.size())
			if err != nil {
				t.Fatal(err)
			}
			if got.PrimaryValid || !got.BackupValid || !got.NeedsRepair() {
				t.Errorf("valid = %v/%v", got.PrimaryValid, got.BackupValid)
			}
			if diff := cmp.Diff(want.Partitions, got.Partitions); diff != "" {
				t.Errorf("partitions from backup differ:\n%s", diff)
			}
			// Writing repairs both copies.
			if err := Write(m, got); err != nil {
				t.Fatal(err)
			}
			again, err := Read(m, m.size())
			if err != nil || !again.PrimaryValid || !again.BackupValid || again.NeedsRepair() {
				t.Fatalf("after repair: %v valid %v/%v", err, again != nil && again.PrimaryValid, again != nil && again.BackupValid)
			}
		})
	}
}

// fixCRCs0 recomputes only the header CRC of the primary (the entry CRC
// cannot be computed for an absurd entry count).
func fixCRCs0(b []byte) {
	h := b[512:1024]
	binary.LittleEndian.PutUint32(h[16:], 0)
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:92]))
}

func TestCorruptBackup(t *testing.T) {
	want := imageTable(t)
	m := writtenImage(t, want)
	m.b[len(m.b)-512+30]++
	got, err := Read(m, m.size())
	if err != nil {
		t.Fatal(err)
	}
	if !got.PrimaryValid || got.BackupValid {
		t.Errorf("valid = %v/%v", got.PrimaryValid, got.BackupValid)
	}
	if diff := cmp.Diff(want, got, ignoreUnexported, cmpopts.IgnoreFields(Table{}, "BackupValid")); diff != "" {
		t.Error(diff)
	}
}

func TestBothCorrupt(t *testing.T) {
	m := writtenImage(t, imageTable(t))
	m.b[512]++
	m.b[len(m.b)-512]++
	_, err := Read(m, m.size())
	if !errors.Is(err, ErrNoGPT) {
		t.Fatalf("err = %v, want ErrNoGPT", err)
	}
	if !strings.Contains(err.Error(), "primary") || !strings.Contains(err.Error(), "backup") {
		t.Errorf("error does not explain both copies: %v", err)
	}
	if _, err := Read(newMemDisk(1<<20), 1<<20); !errors.Is(err, ErrNoGPT) {
		t.Errorf("blank disk: %v", err)
	}
	if _, err := Read(newMemDisk(512), 512); !errors.Is(err, ErrNoGPT) {
		t.Errorf("tiny disk: %v", err)
	}
}

func TestWriteOrderBackupFirst(t *testing.T) {
	tb := imageTable(t)
	m := newMemDisk(int(tb.SizeBytes()))
	if err := Write(m, tb); err != nil {
		t.Fatal(err)
	}
	last := len(m.b)/512 - 1
	want := []string{
		"write " + strconv.Itoa((last-32)*512) + "+16384", // backup entries
		"write " + strconv.Itoa(last*512) + "+512",        // backup header
		"sync",
		"write 446+66", // protective MBR records (blank disk)
		"write 1024+16384",
		"write 512+512",
		"sync",
	}
	if diff := cmp.Diff(want, m.ops); diff != "" {
		t.Errorf("write order (-want +got):\n%s", diff)
	}
	// The MBR exists now, so a second write leaves sector 0 alone.
	m.ops = nil
	if err := Write(m, tb); err != nil {
		t.Fatal(err)
	}
	for _, op := range m.ops {
		if op == "write 446+66" {
			t.Error("protective MBR rewritten although present")
		}
	}
}

func TestHybridMBRKept(t *testing.T) {
	tb := imageTable(t)
	m := newMemDisk(int(tb.SizeBytes()))
	// Boot code, a FAT record for the ESP and the 0xEE record, as in
	// Flatcar's hybrid MBR.
	copy(m.b, "bootcode")
	m.b[446+4] = 0x0c
	m.b[446+16+4] = 0xee
	m.b[510], m.b[511] = 0x55, 0xaa
	before := slices.Clone(m.b[:512])
	if err := Write(m, tb); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, m.b[:512]) {
		t.Error("hybrid MBR was rewritten")
	}
	// A non-GPT MBR gets protective records, but the boot code stays.
	m2 := newMemDisk(int(tb.SizeBytes()))
	copy(m2.b, "bootcode")
	m2.b[446+4] = 0x83
	m2.b[510], m2.b[511] = 0x55, 0xaa
	if err := Write(m2, tb); err != nil {
		t.Fatal(err)
	}
	if string(m2.b[:8]) != "bootcode" || m2.b[446+4] != 0xee {
		t.Errorf("MBR = % x", m2.b[446:])
	}
}

// TestCrashDuringWrite cuts a Write off after every possible number of
// writes: the disk must always read as either the old or the new table.
func TestCrashDuringWrite(t *testing.T) {
	old := withSlots(t, slot{2, 0, true}, slot{1, 0, false})
	next := old.Clone()
	if err := CommitUpdate(next, USRBGUID); err != nil {
		t.Fatal(err)
	}
	// With the protective MBR present Write does four writes: backup
	// entries, backup header, primary entries, primary header.
	for failAt := 1; failAt <= 4; failAt++ {
		m := writtenImage(t, old)
		m.failAt, m.writes = failAt, 0
		err := Write(m, next.Clone())
		if !errors.Is(err, errCrash) {
			t.Fatalf("failAt %d: err = %v", failAt, err)
		}
		got, err := Read(m, m.size())
		if err != nil {
			t.Fatalf("failAt %d: unreadable after crash: %v", failAt, err)
		}
		// Until the primary entries are overwritten the old primary wins;
		// after that the primary is invalid and the complete new backup is
		// used. Never a mix.
		want := old
		if failAt == 4 {
			want = next
		}
		if diff := cmp.Diff(want.Partitions, got.Partitions); diff != "" {
			t.Errorf("failAt %d: wrong table:\n%s", failAt, diff)
		}
		if repair := failAt >= 2; got.NeedsRepair() != repair {
			t.Errorf("failAt %d: NeedsRepair = %v, want %v", failAt, got.NeedsRepair(), repair)
		}
	}
}

func TestDiskGrewBackupMoved(t *testing.T) {
	tb := imageTable(t)
	m := writtenImage(t, tb)
	m.b = append(m.b, make([]byte, 1<<20)...) // disk grew by 1 MiB
	got, err := Read(m, m.size())
	if err != nil {
		t.Fatal(err)
	}
	if !got.PrimaryValid || got.BackupValid || got.TotalSectors != uint64(len(m.b)/512) {
		t.Fatalf("valid %v/%v total %d", got.PrimaryValid, got.BackupValid, got.TotalSectors)
	}
	if err := Write(m, got); err != nil {
		t.Fatal(err)
	}
	again, err := Read(m, m.size())
	if err != nil || !again.BackupValid || again.LastUsableLBA != tb.LastUsableLBA {
		t.Fatalf("after write: %v %+v", err, again)
	}
	if alt := binary.LittleEndian.Uint64(m.b[512+32:]); alt != uint64(len(m.b)/512-1) {
		t.Errorf("primary AlternateLBA = %d", alt)
	}
}

func TestLargeEntriesKeepExtraBytes(t *testing.T) {
	tb := imageTable(t)
	tb.EntrySize = 256
	tb.FirstUsableLBA = 2 + 64
	tb.LastUsableLBA = tb.TotalSectors - 2 - 64
	tb.Partitions[len(tb.Partitions)-1].LastLBA = tb.LastUsableLBA
	m := writtenImage(t, tb)
	last := int64(len(m.b)/512 - 1)
	for _, arr := range []int64{2, last - 64} {
		copy(m.b[arr*512+2*256+200:], "vendor") // entry 3, beyond byte 128
	}
	fixCRCs(m.b, 1)
	fixCRCs(m.b, last)
	got, err := Read(m, m.size())
	if err != nil || !got.PrimaryValid || !got.BackupValid {
		t.Fatalf("read: %v", err)
	}
	if err := CommitUpdate(got, USRAGUID); err != nil {
		t.Fatal(err)
	}
	if err := Write(m, got); err != nil {
		t.Fatal(err)
	}
	if string(m.b[2*512+2*256+200:][:6]) != "vendor" || string(m.b[(last-64)*512+2*256+200:][:6]) != "vendor" {
		t.Error("extra entry bytes lost")
	}
	if again, err := Read(m, m.size()); err != nil || !again.PrimaryValid || !again.BackupValid {
		t.Errorf("re-read: %v", err)
	}
}

func TestSectorSize4096(t *testing.T) {
	tb := &Table{
		DiskGUID: NewRandomGUID(), SectorSize: 4096, TotalSectors: 1024,
		FirstUsableLBA: 6, LastUsableLBA: 1024 - 6, NumEntries: 128, EntrySize: 128,
		Partitions: []Partition{{Index: 1, Type: TypeUSR, GUID: USRAGUID, FirstLBA: 256, LastLBA: 511, Name: LabelUSRA}},
	}
	m := writtenImage(t, tb)
	got, err := Read(m, m.size())
	if err != nil {
		t.Fatal(err)
	}
	if got.SectorSize != 4096 || len(got.Partitions) != 1 || got.Partitions[0].Offset(got.SectorSize) != 1<<20 {
		t.Errorf("got %+v", got)
	}
}

func TestWriteValidates(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(tb *Table)
		want string
	}{
		{"overlap", func(tb *Table) { tb.Partitions[1].FirstLBA = tb.Partitions[0].LastLBA }, "overlaps"},
		{"index 0", func(tb *Table) { tb.Partitions[0].Index = 0 }, "index 0"},
		{"duplicate index", func(tb *Table) { tb.Partitions[1].Index = 1 }, "used twice"},
		{"zero type", func(tb *Table) { tb.Partitions[0].Type = GUID{} }, "zero type"},
		{"beyond usable", func(tb *Table) { tb.Partitions[len(tb.Partitions)-1].LastLBA = tb.LastUsableLBA + 1 }, "outside the usable area"},
		{"reversed", func(tb *Table) { tb.Partitions[0].LastLBA = tb.Partitions[0].FirstLBA - 1 }, "after its end"},
		{"last usable in backup", func(tb *Table) { tb.LastUsableLBA = tb.TotalSectors - 2 }, "backup entry array"},
		{"first usable in primary", func(tb *Table) { tb.FirstUsableLBA = 20 }, "primary entry array"},
		{"entry size", func(tb *Table) { tb.EntrySize = 100 }, "128 × 2^n"},
		{"sector size", func(tb *Table) { tb.SectorSize = 1024 }, "sector size"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tb := imageTable(t)
			c.edit(tb)
			m := newMemDisk(100 << 20)
			err := Write(m, tb)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
			if len(m.ops) != 0 {
				t.Errorf("invalid table partly written: %v", m.ops)
			}
		})
	}
}
