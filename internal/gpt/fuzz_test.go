package gpt

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// tinyImage is an 8 KiB disk (16 sectors) with a 4-entry GPT: small enough
// for the fuzzer to mutate meaningfully and to minimize quickly.
func tinyImage(t testing.TB) []byte {
	tb := &Table{
		DiskGUID: NewRandomGUID(), SectorSize: 512, TotalSectors: 16,
		FirstUsableLBA: 3, LastUsableLBA: 13, NumEntries: 4, EntrySize: 128,
		Partitions: []Partition{
			{Index: 1, Type: TypeUSR, GUID: USRAGUID, FirstLBA: 4, LastLBA: 5, Name: LabelUSRA, Attributes: 0x0101000000000000},
			{Index: 2, Type: TypeUSR, GUID: USRBGUID, FirstLBA: 6, LastLBA: 7, Name: LabelUSRB, Attributes: 0x0012000000000000},
			{Index: 4, Type: TypeLinuxData, GUID: NewRandomGUID(), FirstLBA: 8, LastLBA: 13, Name: "ROOT"},
		},
	}
	m := newMemDisk(16 * 512)
	if err := Write(m, tb); err != nil {
		t.Fatal(err)
	}
	return m.b
}

// FuzzRead: Read must never panic or over-allocate on any input, and a
// table it accepts must survive Write + Read unchanged. With fix set the
// CRCs are recomputed after mutation, so the fuzzer gets past the checksums
// and exercises the header and entry bound checks. Run it with a bounded
// minimization, which is otherwise slow on whole-disk inputs:
//
//	go test ./internal/gpt -run FuzzRead -fuzz FuzzRead -fuzztime 2m -fuzzminimizetime 100x
func FuzzRead(f *testing.F) {
	img := tinyImage(f)
	f.Add(img, false)
	f.Add(img, true)
	noPrimary := bytes.Clone(img)
	noPrimary[512] = 0
	f.Add(noPrimary, false)
	f.Add(img[:len(img)-512], false) // backup cut off
	f.Add(img[:1024], true)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, b []byte, fix bool) {
		if fix {
			b = bytes.Clone(b)
			fixCRCsLoose(b, 1)
			fixCRCsLoose(b, int64(len(b)/512)-1)
		}
		tb, err := Read(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		if len(tb.Partitions) > int(tb.NumEntries) {
			t.Fatalf("%d partitions from %d entries", len(tb.Partitions), tb.NumEntries)
		}
		m := &memDisk{b: bytes.Clone(b)}
		if err := Write(m, tb); err != nil {
			t.Fatalf("Write of a table Read accepted: %v", err)
		}
		again, err := Read(m, m.size())
		if err != nil {
			t.Fatalf("re-read: %v", err)
		}
		if !again.PrimaryValid || !again.BackupValid || again.NeedsRepair() {
			t.Fatalf("after write: valid %v/%v", again.PrimaryValid, again.BackupValid)
		}
		if diff := cmp.Diff(tb, again, ignoreUnexported); diff != "" {
			t.Fatalf("round trip differs:\n%s", diff)
		}
	})
}

// fixCRCsLoose is fixCRCs for arbitrary bytes: it recomputes what it can
// and skips what would read out of range.
func fixCRCsLoose(b []byte, lba int64) {
	if lba < 1 || (lba+1)*512 > int64(len(b)) {
		return
	}
	h := b[lba*512:][:512]
	entryLBA := binary.LittleEndian.Uint64(h[72:])
	n := uint64(binary.LittleEndian.Uint32(h[80:])) * uint64(binary.LittleEndian.Uint32(h[84:]))
	if entryLBA < uint64(len(b)/512) && n <= uint64(len(b))-entryLBA*512 {
		binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(b[entryLBA*512:][:n]))
	}
	size := min(max(binary.LittleEndian.Uint32(h[12:]), 92), 512)
	binary.LittleEndian.PutUint32(h[16:], 0)
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:size]))
}
