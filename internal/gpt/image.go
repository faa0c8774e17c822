package gpt

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
)

// NewRandomGUID returns a random (version 4, RFC 4122 variant) GUID.
func NewRandomGUID() GUID {
	var be [16]byte
	_, _ = rand.Read(be[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	be[6] = be[6]&0x0f | 0x40
	be[8] = be[8]&0x3f | 0x80
	return fromCanonical(be)
}

// Image layout defaults (Flatcar's older "base" layout sizes; the current
// one uses 1 GiB ESP/OEM and 2 GiB USR slots, pass those explicitly).
const (
	DefaultUSRSize int64 = 1 << 30
	DefaultESPSize int64 = 128 << 20
	DefaultOEMSize int64 = 128 << 20

	imageSectorSize       = 512
	alignBytes            = 2 << 20 // partitions start on 2 MiB boundaries
	biosBootSize    int64 = 2 << 20
	oemConfigSize   int64 = 64 << 20
	minRootSize     int64 = 1 << 20
)

// ImageOptions configures CreateImage. Zero sizes take the defaults.
type ImageOptions struct {
	Size    int64 // whole disk in bytes; a multiple of 512
	USRSize int64 // each of USR-A and USR-B (default 1 GiB)
	ESPSize int64 // EFI-SYSTEM (default 128 MiB)
	OEMSize int64 // OEM (default 128 MiB)
	Force   bool  // overwrite an existing regular file
}

// layoutEntry is one partition of the image layout before placement.
type layoutEntry struct {
	index int
	name  string
	typ   GUID
	guid  GUID // zero: random
	size  int64
	attrs Attributes
}

// NewImageTable returns the Flatcar "base" layout (ab-updates.md §1) for a
// disk of opts.Size bytes, without writing anything:
//
//	1 EFI-SYSTEM, 2 BIOS-BOOT, 3 USR-A, 4 USR-B, (5 empty), 6 OEM,
//	7 OEM-CONFIG, (8 empty), 9 ROOT (the rest of the disk).
//
// Partitions start at 2 MiB and on 2 MiB boundaries. USR-A is the booted,
// good slot (priority 1, successful); USR-B is empty (all zero), as on a
// freshly built Flatcar image. The disk size is not rounded to Flatcar's
// 258048-sector (VHD geometry) multiple: that only matters for VHD
// conversion, and a GPT does not care.
func NewImageTable(opts ImageOptions) (*Table, error) {
	usr := orDefault(opts.USRSize, DefaultUSRSize)
	esp := orDefault(opts.ESPSize, DefaultESPSize)
	oem := orDefault(opts.OEMSize, DefaultOEMSize)
	for _, s := range []struct {
		name string
		v    int64
	}{{"USR size", usr}, {"ESP size", esp}, {"OEM size", oem}} {
		if s.v < 0 || s.v%imageSectorSize != 0 {
			return nil, fmt.Errorf("gpt: image layout: %s %d is not a positive multiple of %d bytes", s.name, s.v, imageSectorSize)
		}
		if s.v > 1<<50 {
			return nil, fmt.Errorf("gpt: image layout: %s %d is too large", s.name, s.v)
		}
	}
	if opts.Size <= 0 || opts.Size%imageSectorSize != 0 {
		return nil, fmt.Errorf("gpt: image layout: disk size %d is not a positive multiple of %d bytes", opts.Size, imageSectorSize)
	}
	entries := []layoutEntry{
		{1, "EFI-SYSTEM", TypeEFI, GUID{}, esp, AttrLegacyBIOSBootable},
		{2, "BIOS-BOOT", TypeBIOSBoot, GUID{}, biosBootSize, 0},
		{3, LabelUSRA, TypeUSR, USRAGUID, usr, Attributes(0).WithPriority(1).WithSuccessful(true)},
		{4, LabelUSRB, TypeUSR, USRBGUID, usr, 0},
		{6, "OEM", TypeLinuxData, GUID{}, oem, 0},
		{7, "OEM-CONFIG", TypeFlatcarReserved, GUID{}, oemConfigSize, 0},
	}
	const ss = imageSectorSize
	es := entrySectors(defaultEntries, minEntrySize, ss)
	start := int64(alignBytes)
	var parts []Partition
	for _, e := range entries {
		guid := e.guid
		if guid.IsZero() {
			guid = NewRandomGUID()
		}
		parts = append(parts, Partition{
			Index: e.index, Type: e.typ, GUID: guid, Name: e.name, Attributes: e.attrs,
			FirstLBA: uint64(start / ss), LastLBA: uint64((start+e.size)/ss - 1),
		})
		start = alignUp(start+e.size, alignBytes)
	}
	// ROOT takes the rest, up to the last usable LBA before the backup GPT.
	total := uint64(opts.Size / ss)
	backupBytes := int64(es+1) * ss
	minSize := start + minRootSize + backupBytes
	if opts.Size < minSize {
		return nil, fmt.Errorf("gpt: image layout: disk size %d bytes is too small: this layout needs at least %d bytes (%d MiB)",
			opts.Size, minSize, (minSize+(1<<20)-1)>>20)
	}
	lastUsable := total - 2 - es
	parts = append(parts, Partition{
		Index: 9, Type: TypeFlatcarResize, GUID: NewRandomGUID(), Name: "ROOT",
		FirstLBA: uint64(start / ss), LastLBA: lastUsable,
	})
	t := &Table{
		DiskGUID:       NewRandomGUID(),
		SectorSize:     ss,
		TotalSectors:   total,
		FirstUsableLBA: defaultEntryLBA + es,
		LastUsableLBA:  lastUsable,
		NumEntries:     defaultEntries,
		EntrySize:      minEntrySize,
		Partitions:     parts,
	}
	if err := t.validate(); err != nil {
		return nil, fmt.Errorf("gpt: image layout: %w", err)
	}
	return t, nil
}

// CreateImage creates a sparse disk image at path with the Flatcar layout
// of NewImageTable. An existing file is refused unless opts.Force (and is
// never replaced if it is not a regular file, so a block device path
// cannot be wiped by accident). On failure a newly created file is removed.
func CreateImage(path string, opts ImageOptions) error {
	t, err := NewImageTable(opts)
	if err != nil {
		return err
	}
	fi, err := os.Stat(path)
	exists := err == nil
	if exists {
		if !opts.Force {
			return fmt.Errorf("gpt: create image %s: %w (use force to overwrite)", path, os.ErrExist)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("gpt: create image %s: not a regular file, refusing to overwrite", path)
		}
	}
	flag := os.O_RDWR | os.O_CREATE | os.O_EXCL
	if opts.Force {
		flag = os.O_RDWR | os.O_CREATE
	}
	f, err := os.OpenFile(path, flag, 0o644)
	if err != nil {
		return fmt.Errorf("gpt: create image: %w", err)
	}
	created := !exists
	fail := func(err error) error {
		f.Close()
		if created {
			os.Remove(path)
		}
		return fmt.Errorf("gpt: create image %s: %w", path, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultLockWait)
	defer cancel()
	if err := lockExclusive(ctx, f); err != nil {
		return fail(err)
	}
	// Truncating to 0 first drops old contents (and keeps the file sparse).
	if err := f.Truncate(0); err != nil {
		return fail(err)
	}
	if err := f.Truncate(opts.Size); err != nil {
		return fail(err)
	}
	if err := Write(f, t); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		if created {
			os.Remove(path)
		}
		return fmt.Errorf("gpt: create image %s: %w", path, err)
	}
	return nil
}

func orDefault(v, def int64) int64 {
	if v == 0 {
		return def
	}
	return v
}

func alignUp(v, a int64) int64 { return (v + a - 1) / a * a }
