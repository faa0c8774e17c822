package gpt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// DefaultLockWait is how long Open waits for another holder of the disk
// lock. It covers short holders such as udev, which takes a shared lock on
// block devices while it probes them after every write; a second flotilla
// process committing a GPT is also done well within it.
const DefaultLockWait = 5 * time.Second

// Disk is an open disk image file or block device.
//
// Writable disks (Open, OpenContext) hold an exclusive flock(2) on the file
// until Close, so two flotilla processes never write one GPT at the same
// time (on a block device this also keeps udev from probing half-written
// state). Read-only disks take no lock: Write's backup-first ordering and
// the CRCs let a reader always find one consistent copy, and a lock would
// let a long-running writer block `disk show`.
type Disk struct {
	f        *os.File
	path     string
	size     int64
	readOnly bool
	// last is the most recently read or committed table; PartitionWriter
	// checks partitions against it.
	last *Table
}

// Open opens path read-write, waiting up to DefaultLockWait for the lock.
// When another process keeps holding it, the error wraps ErrLocked.
func Open(path string) (*Disk, error) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultLockWait)
	defer cancel()
	return OpenContext(ctx, path)
}

// OpenContext opens path read-write and waits for the exclusive lock until
// ctx is done; the error then wraps ErrLocked.
func OpenContext(ctx context.Context, path string) (*Disk, error) {
	return open(ctx, path, false)
}

// OpenReadOnly opens path for reading, without a lock.
func OpenReadOnly(path string) (*Disk, error) {
	return open(context.Background(), path, true)
}

func open(ctx context.Context, path string, readOnly bool) (*Disk, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("gpt: open: %w", err)
	}
	d := &Disk{f: f, path: path, readOnly: readOnly}
	if err := d.init(ctx); err != nil {
		f.Close()
		return nil, fmt.Errorf("gpt: open %s: %w", path, err)
	}
	return d, nil
}

func (d *Disk) init(ctx context.Context) error {
	fi, err := d.f.Stat()
	if err != nil {
		return err
	}
	if m := fi.Mode(); !m.IsRegular() && (m&os.ModeDevice == 0 || m&os.ModeCharDevice != 0) {
		return fmt.Errorf("not a regular file or block device (mode %s)", m)
	}
	if !d.readOnly {
		if err := lockExclusive(ctx, d.f); err != nil {
			return err
		}
	}
	// Stat reports 0 for block devices; seeking to the end works for both.
	size, err := d.f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("size: %w", err)
	}
	d.size = size
	return nil
}

// lockExclusive polls a non-blocking flock until it succeeds or ctx ends, so
// the wait can be cancelled (a blocking flock cannot).
func lockExclusive(ctx context.Context, f *os.File) error {
	delay := 10 * time.Millisecond
	for {
		ok, err := tryLock(f)
		if err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up waiting: %v)", ErrLocked, context.Cause(ctx))
		case <-time.After(delay):
		}
		delay = min(2*delay, 200*time.Millisecond)
	}
}

// Path returns the path the disk was opened with.
func (d *Disk) Path() string { return d.path }

// Size returns the disk size in bytes.
func (d *Disk) Size() int64 { return d.size }

// Table reads the GPT from the disk (every call re-reads).
func (d *Disk) Table() (*Table, error) {
	t, err := Read(d.f, d.size)
	if err != nil {
		return nil, err
	}
	d.last = t.Clone()
	return t, nil
}

// Commit writes both GPT copies of t (backup first) and syncs. t must
// describe this disk: its TotalSectors must match the disk size, which is
// the case for tables from d.Table().
func (d *Disk) Commit(t *Table) error {
	if d.readOnly {
		return fmt.Errorf("gpt: commit %s: disk opened read-only", d.path)
	}
	if t.SectorSize <= 0 || t.TotalSectors != uint64(d.size)/uint64(t.SectorSize) {
		return fmt.Errorf("gpt: commit %s: table is for %d sectors of %d bytes, disk has %d bytes",
			d.path, t.TotalSectors, t.SectorSize, d.size)
	}
	if err := Write(d.f, t); err != nil {
		return fmt.Errorf("gpt: commit %s: %w", d.path, err)
	}
	d.last = t.Clone()
	return nil
}

// PartitionReader returns a reader of exactly p's bytes. A range beyond the
// end of the disk reads as EOF.
func (d *Disk) PartitionReader(p Partition) *io.SectionReader {
	ss := 512
	if d.last != nil {
		ss = d.last.SectorSize
	}
	off, n, ok := d.span(p, ss)
	if !ok {
		return io.NewSectionReader(d.f, 0, 0)
	}
	return io.NewSectionReader(d.f, off, n)
}

// span converts p to a byte range inside the disk.
func (d *Disk) span(p Partition, ss int) (off, n int64, ok bool) {
	total := uint64(d.size) / uint64(ss)
	if p.FirstLBA > p.LastLBA || p.LastLBA >= total {
		return 0, 0, false
	}
	return p.Offset(ss), p.Size(ss), true
}

// PartitionWriter returns a writer confined to p: offsets are relative to
// the partition start, and any write that would reach outside the
// partition fails with ErrOutOfRange without writing anything. p must be a
// partition of the disk's current GPT (same index, GUID and range; the
// table is read if it was not yet); otherwise every write fails. This is
// what keeps an image write from ever clobbering the GPT or another slot.
func (d *Disk) PartitionWriter(p Partition) io.WriterAt {
	pw := &partWriter{f: d.f}
	switch {
	case d.readOnly:
		pw.err = fmt.Errorf("gpt: write %s: disk opened read-only", d.path)
		return pw
	case d.last == nil:
		if _, err := d.Table(); err != nil {
			pw.err = fmt.Errorf("gpt: write %s: %w", p.describe(), err)
			return pw
		}
	}
	cur, ok := d.last.ByIndex(p.Index)
	if !ok || cur.GUID != p.GUID || cur.FirstLBA != p.FirstLBA || cur.LastLBA != p.LastLBA {
		pw.err = fmt.Errorf("gpt: write %s: not a partition of %s's current GPT", p.describe(), d.path)
		return pw
	}
	off, n, ok := d.span(p, d.last.SectorSize)
	if !ok {
		pw.err = fmt.Errorf("gpt: write %s: beyond the end of %s", p.describe(), d.path)
		return pw
	}
	pw.off, pw.size, pw.name = off, n, p.describe()
	return pw
}

type partWriter struct {
	f         *os.File
	off, size int64
	name      string
	err       error
}

func (w *partWriter) WriteAt(b []byte, off int64) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if off < 0 || off > w.size || int64(len(b)) > w.size-off {
		return 0, fmt.Errorf("gpt: write %s: %d bytes at offset %d of %d: %w", w.name, len(b), off, w.size, ErrOutOfRange)
	}
	return w.f.WriteAt(b, w.off+off)
}

// Sync flushes writes to stable storage.
func (d *Disk) Sync() error {
	if err := d.f.Sync(); err != nil {
		return fmt.Errorf("gpt: sync %s: %w", d.path, err)
	}
	return nil
}

// Close releases the lock and closes the file. Closing the descriptor drops
// the flock; a read-write disk is synced first.
func (d *Disk) Close() error {
	var errs []error
	if !d.readOnly {
		errs = append(errs, d.Sync())
	}
	if err := d.f.Close(); err != nil {
		errs = append(errs, fmt.Errorf("gpt: close %s: %w", d.path, err))
	}
	return errors.Join(errs...)
}
