package gpt

import (
	"cmp"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"slices"
	"unicode/utf16"
)

// On-disk constants.
const (
	signature       = "EFI PART"
	revision1       = 0x00010000
	minHeaderSize   = 92
	minEntrySize    = 128
	nameCodeUnits   = 36
	defaultEntries  = 128
	defaultEntryLBA = 2
	// MaxEntryArrayBytes bounds NumEntries × EntrySize, so a corrupt header
	// cannot make Read allocate gigabytes. The standard array is 16 KiB.
	MaxEntryArrayBytes = 1 << 20
)

// header is one parsed GPT header.
type header struct {
	revision    uint32
	size        uint32
	myLBA       uint64
	altLBA      uint64
	firstUsable uint64
	lastUsable  uint64
	diskGUID    GUID
	entryLBA    uint64
	numEntries  uint32
	entrySize   uint32
	entriesCRC  uint32
	extra       []byte // bytes 92..size
}

// gptCopy is a header with its entry array, both checked.
type gptCopy struct {
	h       header
	entries []byte
}

// Read parses the GPT of a disk of size bytes. It tries 512-byte sectors
// first and 4096-byte sectors if no GPT is found with 512. The primary
// header (LBA 1) is used when valid; otherwise the backup at the last LBA,
// with PrimaryValid=false. If neither copy is valid the error wraps ErrNoGPT.
func Read(r io.ReaderAt, size int64) (*Table, error) {
	t, err := readSectorSize(r, size, 512)
	if err != nil && errors.Is(err, ErrNoGPT) {
		if t4, err4 := readSectorSize(r, size, 4096); err4 == nil {
			return t4, nil
		}
	}
	return t, err
}

func readSectorSize(r io.ReaderAt, size int64, ss int) (*Table, error) {
	if size < 0 {
		return nil, fmt.Errorf("gpt: read: negative disk size %d", size)
	}
	total := uint64(size) / uint64(ss)
	if total < 4 { // MBR, primary header, backup header, one data sector
		return nil, fmt.Errorf("gpt: read: %w: disk of %d bytes is too small", ErrNoGPT, size)
	}
	prim, perr := readCopy(r, ss, total, 1)
	back, berr := readCopy(r, ss, total, total-1)
	if perr != nil && berr != nil {
		return nil, fmt.Errorf("gpt: read: %w (primary: %v; backup: %v)", ErrNoGPT, perr, berr)
	}
	use := prim
	if perr != nil {
		use = back
	}
	h := use.h
	t := &Table{
		DiskGUID:        h.diskGUID,
		SectorSize:      ss,
		TotalSectors:    total,
		FirstUsableLBA:  h.firstUsable,
		LastUsableLBA:   h.lastUsable,
		NumEntries:      h.numEntries,
		EntrySize:       h.entrySize,
		PrimaryValid:    perr == nil,
		BackupValid:     berr == nil,
		primaryEntryLBA: defaultEntryLBA,
		revision:        h.revision,
		headerSize:      h.size,
		headerExtra:     h.extra,
		rawEntries:      use.entries,
	}
	if perr == nil {
		t.primaryEntryLBA = prim.h.entryLBA
		if berr == nil {
			t.mismatch = !sameTable(prim.h, back.h) || prim.h.altLBA != total-1 || back.h.altLBA != 1
		}
	}
	for i := range h.numEntries {
		e := use.entries[int(i)*int(h.entrySize):][:minEntrySize]
		p := decodeEntry(e)
		if p.Type.IsZero() {
			continue
		}
		p.Index = int(i) + 1
		t.Partitions = append(t.Partitions, p)
	}
	// Reject what Write could not write back, so a read table can always be
	// committed unchanged.
	if err := t.validate(); err != nil {
		return nil, fmt.Errorf("gpt: read: %w", err)
	}
	return t, nil
}

// sameTable reports whether two valid headers describe the same table.
func sameTable(a, b header) bool {
	return a.diskGUID == b.diskGUID && a.firstUsable == b.firstUsable && a.lastUsable == b.lastUsable &&
		a.numEntries == b.numEntries && a.entrySize == b.entrySize && a.entriesCRC == b.entriesCRC
}

// readCopy reads and checks the header at lba and its entry array.
func readCopy(r io.ReaderAt, ss int, total, lba uint64) (*gptCopy, error) {
	sec := make([]byte, ss)
	if _, err := r.ReadAt(sec, int64(lba)*int64(ss)); err != nil {
		return nil, fmt.Errorf("read header at LBA %d: %w", lba, err)
	}
	h, err := parseHeader(sec, ss, total, lba)
	if err != nil {
		return nil, fmt.Errorf("header at LBA %d: %w", lba, err)
	}
	n := int(h.numEntries) * int(h.entrySize)
	entries := make([]byte, n)
	if _, err := r.ReadAt(entries, int64(h.entryLBA)*int64(ss)); err != nil {
		return nil, fmt.Errorf("read entries at LBA %d: %w", h.entryLBA, err)
	}
	if c := crc32.ChecksumIEEE(entries); c != h.entriesCRC {
		return nil, fmt.Errorf("entry array CRC %08x, header says %08x", c, h.entriesCRC)
	}
	return &gptCopy{h: h, entries: entries}, nil
}

// parseHeader decodes and bound-checks a header sector read from lba.
func parseHeader(sec []byte, ss int, total, lba uint64) (header, error) {
	var h header
	if string(sec[0:8]) != signature {
		return h, errors.New(`no "EFI PART" signature`)
	}
	h.revision = le32(sec[8:])
	h.size = le32(sec[12:])
	if h.size < minHeaderSize || int(h.size) > ss {
		return h, fmt.Errorf("header size %d out of range %d..%d", h.size, minHeaderSize, ss)
	}
	stored := le32(sec[16:])
	buf := append([]byte(nil), sec[:h.size]...)
	clear(buf[16:20])
	if c := crc32.ChecksumIEEE(buf); c != stored {
		return h, fmt.Errorf("header CRC %08x, stored %08x", c, stored)
	}
	h.myLBA = le64(sec[24:])
	h.altLBA = le64(sec[32:])
	h.firstUsable = le64(sec[40:])
	h.lastUsable = le64(sec[48:])
	h.diskGUID = getGUID(sec[56:])
	h.entryLBA = le64(sec[72:])
	h.numEntries = le32(sec[80:])
	h.entrySize = le32(sec[84:])
	h.entriesCRC = le32(sec[88:])
	h.extra = append([]byte(nil), sec[minHeaderSize:h.size]...)

	if h.myLBA != lba {
		return h, fmt.Errorf("header says it is at LBA %d", h.myLBA)
	}
	if err := checkEntryGeometry(h.numEntries, h.entrySize); err != nil {
		return h, err
	}
	if h.firstUsable > h.lastUsable || h.lastUsable >= total {
		return h, fmt.Errorf("usable LBAs %d..%d do not fit a disk of %d sectors", h.firstUsable, h.lastUsable, total)
	}
	es := entrySectors(h.numEntries, h.entrySize, ss)
	if h.entryLBA < 2 || h.entryLBA > total || total-h.entryLBA < es {
		return h, fmt.Errorf("entry array at LBA %d (%d sectors) outside the disk", h.entryLBA, es)
	}
	// The array must not overlap the usable area or the header itself.
	end := h.entryLBA + es // exclusive
	if (h.entryLBA <= h.lastUsable && end > h.firstUsable) || (h.entryLBA <= lba && end > lba) {
		return h, fmt.Errorf("entry array at LBA %d..%d overlaps the header or usable area", h.entryLBA, end-1)
	}
	return h, nil
}

// checkEntryGeometry enforces the UEFI rule (entry size 128 × 2^n) and our
// allocation cap.
func checkEntryGeometry(n, size uint32) error {
	if n == 0 {
		return errors.New("zero partition entries")
	}
	if size < minEntrySize || size&(size-1) != 0 {
		return fmt.Errorf("entry size %d is not 128 × 2^n", size)
	}
	if uint64(n)*uint64(size) > MaxEntryArrayBytes {
		return fmt.Errorf("entry array of %d × %d bytes exceeds %d bytes", n, size, MaxEntryArrayBytes)
	}
	return nil
}

func entrySectors(n, size uint32, ss int) uint64 {
	b := uint64(n) * uint64(size)
	return (b + uint64(ss) - 1) / uint64(ss)
}

// decodeEntry parses the first 128 bytes of an entry (Index is left 0).
func decodeEntry(e []byte) Partition {
	p := Partition{
		Type:       getGUID(e[0:]),
		GUID:       getGUID(e[16:]),
		FirstLBA:   le64(e[32:]),
		LastLBA:    le64(e[40:]),
		Attributes: Attributes(le64(e[48:])),
	}
	units := make([]uint16, 0, nameCodeUnits)
	for i := range nameCodeUnits {
		u := uint16(e[56+2*i]) | uint16(e[57+2*i])<<8
		if u == 0 {
			break
		}
		units = append(units, u)
	}
	p.Name = string(utf16.Decode(units))
	return p
}

// validate checks everything Write needs; Read runs it too.
func (t *Table) validate() error {
	if t.SectorSize != 512 && t.SectorSize != 4096 {
		return fmt.Errorf("sector size %d not supported (512 or 4096)", t.SectorSize)
	}
	if t.TotalSectors > math.MaxInt64/uint64(t.SectorSize) {
		return fmt.Errorf("disk of %d sectors is too large", t.TotalSectors)
	}
	if err := checkEntryGeometry(t.NumEntries, t.EntrySize); err != nil {
		return err
	}
	es := entrySectors(t.NumEntries, t.EntrySize, t.SectorSize)
	if t.TotalSectors < 2*es+4 {
		return fmt.Errorf("disk of %d sectors too small for two entry arrays of %d sectors", t.TotalSectors, es)
	}
	primLBA := t.primaryEntryLBA
	if primLBA == 0 {
		primLBA = defaultEntryLBA
	}
	backupEntryLBA := t.TotalSectors - 1 - es
	if primLBA < 2 || primLBA+es > t.FirstUsableLBA {
		return fmt.Errorf("first usable LBA %d overlaps the primary entry array at LBA %d..%d", t.FirstUsableLBA, primLBA, primLBA+es-1)
	}
	if t.LastUsableLBA >= backupEntryLBA {
		return fmt.Errorf("last usable LBA %d overlaps the backup entry array at LBA %d (disk of %d sectors)", t.LastUsableLBA, backupEntryLBA, t.TotalSectors)
	}
	if t.FirstUsableLBA > t.LastUsableLBA {
		return fmt.Errorf("first usable LBA %d after last usable LBA %d", t.FirstUsableLBA, t.LastUsableLBA)
	}
	if t.headerSize != 0 && (t.headerSize < minHeaderSize || int(t.headerSize) > t.SectorSize || len(t.headerExtra) != int(t.headerSize)-minHeaderSize) {
		return fmt.Errorf("header size %d invalid", t.headerSize)
	}
	parts := slices.Clone(t.Partitions)
	slices.SortFunc(parts, func(a, b Partition) int { return cmp.Compare(a.FirstLBA, b.FirstLBA) })
	seen := make(map[int]bool, len(parts))
	for i, p := range parts {
		switch {
		case p.Index < 1 || p.Index > int(t.NumEntries):
			return fmt.Errorf("partition index %d out of range 1..%d", p.Index, t.NumEntries)
		case seen[p.Index]:
			return fmt.Errorf("partition index %d used twice", p.Index)
		case p.Type.IsZero():
			return fmt.Errorf("%s has the zero type GUID (that marks an empty entry)", p.describe())
		case p.FirstLBA > p.LastLBA:
			return fmt.Errorf("%s starts at LBA %d after its end %d", p.describe(), p.FirstLBA, p.LastLBA)
		case p.FirstLBA < t.FirstUsableLBA || p.LastLBA > t.LastUsableLBA:
			return fmt.Errorf("%s (LBA %d..%d) outside the usable area %d..%d", p.describe(), p.FirstLBA, p.LastLBA, t.FirstUsableLBA, t.LastUsableLBA)
		case len(utf16.Encode([]rune(p.Name))) > nameCodeUnits:
			return fmt.Errorf("%s: name longer than %d UTF-16 code units", p.describe(), nameCodeUnits)
		}
		seen[p.Index] = true
		if i > 0 && parts[i-1].LastLBA >= p.FirstLBA {
			return fmt.Errorf("%s overlaps %s", parts[i-1].describe(), p.describe())
		}
	}
	return nil
}
