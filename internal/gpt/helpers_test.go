package gpt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"testing"
)

// memDisk is an in-memory WriterAtSyncer + ReaderAt that logs the order of
// writes and syncs and can simulate a crash: from the failAt-th write on
// (1-based), writes fail without changing anything.
type memDisk struct {
	b      []byte
	ops    []string
	failAt int
	writes int
}

func newMemDisk(size int) *memDisk { return &memDisk{b: make([]byte, size)} }

func (m *memDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

var errCrash = errors.New("simulated crash")

func (m *memDisk) WriteAt(p []byte, off int64) (int, error) {
	m.writes++
	if m.failAt > 0 && m.writes >= m.failAt {
		return 0, errCrash
	}
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, fmt.Errorf("write %d bytes at %d beyond %d", len(p), off, len(m.b))
	}
	copy(m.b[off:], p)
	m.ops = append(m.ops, fmt.Sprintf("write %d+%d", off, len(p)))
	return len(p), nil
}

func (m *memDisk) Sync() error {
	if m.failAt > 0 && m.writes >= m.failAt {
		return errCrash
	}
	m.ops = append(m.ops, "sync")
	return nil
}

func (m *memDisk) size() int64 { return int64(len(m.b)) }

// imageTable returns the Flatcar layout on a small disk: 100 MiB with tiny
// partitions, so tests stay fast.
func imageTable(t testing.TB) *Table {
	t.Helper()
	tb, err := NewImageTable(ImageOptions{Size: 100 << 20, USRSize: 8 << 20, ESPSize: 4 << 20, OEMSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// writtenImage returns a memDisk holding tb.
func writtenImage(t testing.TB, tb *Table) *memDisk {
	t.Helper()
	m := newMemDisk(int(tb.SizeBytes()))
	if err := Write(m, tb); err != nil {
		t.Fatal(err)
	}
	return m
}

// fixCRCs recomputes entry-array and header CRCs of the 512-byte-sector
// header at lba, for tests that edit raw bytes and want a valid copy.
func fixCRCs(b []byte, lba int64) {
	h := b[lba*512:][:512]
	entryLBA := int64(binary.LittleEndian.Uint64(h[72:]))
	n := int64(binary.LittleEndian.Uint32(h[80:])) * int64(binary.LittleEndian.Uint32(h[84:]))
	binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(b[entryLBA*512:][:n]))
	size := binary.LittleEndian.Uint32(h[12:])
	binary.LittleEndian.PutUint32(h[16:], 0)
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:size]))
}

// slot is the gptprio state of one slot, for compact table tests.
type slot struct {
	prio, tries int
	succ        bool
}

func (s slot) String() string {
	return fmt.Sprintf("{prio %d tries %d succ %v}", s.prio, s.tries, s.succ)
}

func slotOf(a Attributes) slot { return slot{a.Priority(), a.Tries(), a.Successful()} }

func (s slot) attrs(base Attributes) Attributes {
	return base.WithPriority(s.prio).WithTries(s.tries).WithSuccessful(s.succ)
}

// withSlots returns the image layout with USR-A and USR-B set to a and b.
func withSlots(t testing.TB, a, b slot) *Table {
	t.Helper()
	tb := imageTable(t)
	for i := range tb.Partitions {
		switch tb.Partitions[i].GUID {
		case USRAGUID:
			tb.Partitions[i].Attributes = a.attrs(0)
		case USRBGUID:
			tb.Partitions[i].Attributes = b.attrs(0)
		}
	}
	return tb
}

// slots returns the states of USR-A and USR-B.
func slots(t testing.TB, tb *Table) (a, b slot) {
	t.Helper()
	pa, pb, err := FindUSR(tb)
	if err != nil {
		t.Fatal(err)
	}
	return slotOf(pa.Attributes), slotOf(pb.Attributes)
}
