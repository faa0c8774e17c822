package gpt

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// newImageFile creates a small Flatcar-layout image in a temp dir.
func newImageFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := CreateImage(path, ImageOptions{Size: 100 << 20, USRSize: 8 << 20, ESPSize: 4 << 20, OEMSize: 4 << 20}); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCreateImageLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flatcar.img")
	const size = 3 << 30
	if err := CreateImage(path, ImageOptions{Size: size}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Size() != size {
		t.Fatalf("stat: %v size %d", err, fi.Size())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Blocks*512 > 1<<20 {
		t.Errorf("image not sparse: %d bytes allocated", st.Blocks*512)
	}
	d, err := OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tb, err := d.Table()
	if err != nil {
		t.Fatal(err)
	}
	const mib = 2048 // sectors
	want := []struct {
		index       int
		name        string
		typ         GUID
		first, size uint64
		attrs       Attributes
	}{
		{1, "EFI-SYSTEM", TypeEFI, 2 * mib, 128 * mib, AttrLegacyBIOSBootable},
		{2, "BIOS-BOOT", TypeBIOSBoot, 130 * mib, 2 * mib, 0},
		{3, "USR-A", TypeUSR, 132 * mib, 1024 * mib, 0x0101000000000000},
		{4, "USR-B", TypeUSR, 1156 * mib, 1024 * mib, 0},
		{6, "OEM", TypeLinuxData, 2180 * mib, 128 * mib, 0},
		{7, "OEM-CONFIG", TypeFlatcarReserved, 2308 * mib, 64 * mib, 0},
		{9, "ROOT", TypeFlatcarResize, 2372 * mib, 3*1024*mib - 2372*mib - 33, 0},
	}
	if len(tb.Partitions) != len(want) {
		t.Fatalf("%d partitions, want %d", len(tb.Partitions), len(want))
	}
	for i, w := range want {
		p := tb.Partitions[i]
		if p.Index != w.index || p.Name != w.name || p.Type != w.typ || p.FirstLBA != w.first || p.Sectors() != w.size || p.Attributes != w.attrs {
			t.Errorf("partition %d = %+v, want %+v", i, p, w)
		}
		if p.FirstLBA%4096 != 0 {
			t.Errorf("%s not 2 MiB aligned", p.Name)
		}
	}
	if a, _ := tb.ByIndex(3); a.GUID != USRAGUID {
		t.Errorf("USR-A GUID %s", a.GUID)
	}
	if b, _ := tb.ByIndex(4); b.GUID != USRBGUID {
		t.Errorf("USR-B GUID %s", b.GUID)
	}
	if tb.NumEntries != 128 || tb.EntrySize != 128 || tb.FirstUsableLBA != 34 || tb.LastUsableLBA != tb.TotalSectors-34 {
		t.Errorf("geometry %d×%d usable %d..%d", tb.NumEntries, tb.EntrySize, tb.FirstUsableLBA, tb.LastUsableLBA)
	}
	// Random GUIDs differ between images.
	other := filepath.Join(t.TempDir(), "other.img")
	if err := CreateImage(other, ImageOptions{Size: size}); err != nil {
		t.Fatal(err)
	}
	d2, _ := OpenReadOnly(other)
	defer d2.Close()
	t2, _ := d2.Table()
	if t2.DiskGUID == tb.DiskGUID || t2.Partitions[0].GUID == tb.Partitions[0].GUID {
		t.Error("disk or ESP GUID repeated across images")
	}
}

func TestCreateImageErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.img")
	err := CreateImage(path, ImageOptions{Size: 2 << 30})
	if err == nil || !strings.Contains(err.Error(), "needs at least 2488287744 bytes (2374 MiB)") {
		t.Errorf("too small: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Error("failed create left a file behind")
	}
	if err := CreateImage(path, ImageOptions{Size: 1000}); err == nil {
		t.Error("size not a multiple of 512 accepted")
	}
	path = newImageFile(t)
	if err := CreateImage(path, ImageOptions{Size: 100 << 20, USRSize: 8 << 20, ESPSize: 4 << 20, OEMSize: 4 << 20}); !errors.Is(err, os.ErrExist) {
		t.Errorf("overwrite without force: %v", err)
	}
	if err := CreateImage(path, ImageOptions{Size: 128 << 20, USRSize: 8 << 20, ESPSize: 4 << 20, OEMSize: 4 << 20, Force: true}); err != nil {
		t.Errorf("force: %v", err)
	}
	if fi, _ := os.Stat(path); fi.Size() != 128<<20 {
		t.Errorf("forced image size %d", fi.Size())
	}
	if err := CreateImage(dir, ImageOptions{Size: 128 << 20, USRSize: 8 << 20, ESPSize: 4 << 20, OEMSize: 4 << 20, Force: true}); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory with force: %v", err)
	}
}

func TestDiskCommitRepairs(t *testing.T) {
	path := newImageFile(t)
	// Corrupt the primary header on disk.
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	f.WriteAt([]byte("garbage!"), 512)
	f.Close()

	d, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := d.Table()
	if err != nil {
		t.Fatal(err)
	}
	if tb.PrimaryValid || !tb.BackupValid {
		t.Fatalf("valid %v/%v", tb.PrimaryValid, tb.BackupValid)
	}
	if err := CommitUpdate(tb, USRBGUID); err != nil {
		t.Fatal(err)
	}
	if err := d.Commit(tb); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	r, err := OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := r.Table()
	if err != nil || !got.PrimaryValid || !got.BackupValid {
		t.Fatalf("after commit: %v", err)
	}
	if diff := cmp.Diff(tb.Partitions, got.Partitions); diff != "" {
		t.Error(diff)
	}
	if err := r.Commit(got); err == nil {
		t.Error("commit on a read-only disk succeeded")
	}
	wrong := got.Clone()
	wrong.TotalSectors++
	d2, _ := Open(path)
	defer d2.Close()
	if err := d2.Commit(wrong); err == nil || !strings.Contains(err.Error(), "disk has") {
		t.Errorf("commit of another disk's table: %v", err)
	}
}

func TestDiskLock(t *testing.T) {
	path := newImageFile(t)
	d, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := OpenContext(ctx, path); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	if time.Since(start) < 90*time.Millisecond {
		t.Error("did not wait for the lock")
	}
	// Readers do not need the lock.
	r, err := OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	// A waiter gets the lock once the holder closes.
	got := make(chan error, 1)
	go func() {
		d2, err := OpenContext(context.Background(), path)
		if err == nil {
			d2.Close()
		}
		got <- err
	}()
	d.Close()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter never got the lock")
	}
}

func TestOpenRejects(t *testing.T) {
	if _, err := Open(t.TempDir()); err == nil {
		t.Error("opened a directory")
	}
	if _, err := OpenReadOnly(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := OpenReadOnly("/dev/null"); err == nil || !strings.Contains(err.Error(), "block device") {
		t.Errorf("char device: %v", err)
	}
}

func TestPartitionIO(t *testing.T) {
	path := newImageFile(t)
	d, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tb, err := d.Table()
	if err != nil {
		t.Fatal(err)
	}
	_, b, _ := FindUSR(tb)
	w := d.PartitionWriter(b)
	size := b.Size(512)
	if _, err := w.WriteAt([]byte("first"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("last"), size-4); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{size - 3, size, -1, 1 << 62} {
		if n, err := w.WriteAt([]byte("xxxx"), off); !errors.Is(err, ErrOutOfRange) || n != 0 {
			t.Errorf("write at %d: n %d err %v", off, n, err)
		}
	}
	r := d.PartitionReader(b)
	if r.Size() != size {
		t.Errorf("reader size %d, want %d", r.Size(), size)
	}
	all, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(all, []byte("first")) || !bytes.HasSuffix(all, []byte("last")) {
		t.Error("partition contents wrong")
	}
	// The bytes landed at the partition's offset in the file and nowhere
	// else: the next partition starts with zeros.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head, after := make([]byte, 5), make([]byte, 1)
	f.ReadAt(head, b.Offset(512))
	f.ReadAt(after, b.Offset(512)+size)
	if string(head) != "first" || after[0] != 0 {
		t.Error("write not at the partition offset")
	}

	// A partition that is not in the GPT cannot be written.
	fake := b
	fake.FirstLBA = 0
	if _, err := d.PartitionWriter(fake).WriteAt([]byte("x"), 0); err == nil || !strings.Contains(err.Error(), "not a partition") {
		t.Errorf("fake partition: %v", err)
	}
	ro, _ := OpenReadOnly(path)
	defer ro.Close()
	if _, err := ro.PartitionWriter(b).WriteAt([]byte("x"), 0); err == nil {
		t.Error("write through a read-only disk")
	}
}
