// Package gpt reads and writes GUID Partition Tables on disk image files and
// block devices, and implements the CoreOS/Flatcar A/B slot logic on top of
// them: GRUB "gptprio" boot selection, cgpt-style prioritize, the update
// commit point and marking a booted slot good.
//
// flotilla has its own GPT code instead of driving sgdisk/cgpt or using a
// general partitioning library because the A/B scheme needs things those do
// not give together: exact control over the attribute bits 48–56 (priority,
// tries, successful) while preserving every other bit, a single write
// primitive that always writes the backup copy first and syncs before
// touching the primary (so a crash leaves one valid copy, and the primary
// acts as the commit record), and support for plain image files as well as
// block devices without loop devices or root.
//
// The slot functions (SelectBoot, BootNext, Prioritize, CommitUpdate,
// MarkGood, ...) are pure: they change a *Table in memory, and the caller
// persists it with one Write/Disk.Commit. USR slots are identified by type
// GUID plus partition label, never by partition number.
package gpt

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// GUID is a GPT GUID in on-disk byte order: the first three fields are
// little-endian ("mixed-endian"), the last eight bytes are as written.
type GUID [16]byte

// ParseGUID parses the canonical text form
// "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (any case).
func ParseGUID(s string) (GUID, error) {
	var g GUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, fmt.Errorf("gpt: parse GUID %q: want xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", s)
	}
	var be [16]byte // canonical (big-endian) order
	if _, err := hex.Decode(be[:], []byte(s[0:8]+s[9:13]+s[14:18]+s[19:23]+s[24:36])); err != nil {
		return g, fmt.Errorf("gpt: parse GUID %q: %w", s, err)
	}
	return fromCanonical(be), nil
}

// MustParseGUID is ParseGUID for constants; it panics on malformed input.
func MustParseGUID(s string) GUID {
	g, err := ParseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}

// fromCanonical converts big-endian text order to on-disk order; the
// conversion is its own inverse.
func fromCanonical(be [16]byte) GUID {
	var g GUID
	g[0], g[1], g[2], g[3] = be[3], be[2], be[1], be[0]
	g[4], g[5] = be[5], be[4]
	g[6], g[7] = be[7], be[6]
	copy(g[8:], be[8:])
	return g
}

// String returns the canonical lowercase text form.
func (g GUID) String() string {
	be := fromCanonical(g)
	h := hex.EncodeToString(be[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// IsZero reports whether g is the all-zero GUID (an unused entry's type).
func (g GUID) IsZero() bool { return g == GUID{} }

// MarshalText makes GUIDs print as text in JSON.
func (g GUID) MarshalText() ([]byte, error) { return []byte(g.String()), nil }

// UnmarshalText parses the canonical text form.
func (g *GUID) UnmarshalText(b []byte) error {
	v, err := ParseGUID(string(b))
	if err != nil {
		return err
	}
	*g = v
	return nil
}

// Well-known partition type GUIDs (ab-updates.md §1).
var (
	TypeEFI             = MustParseGUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
	TypeBIOSBoot        = MustParseGUID("21686148-6449-6e6f-744e-656564454649")
	TypeUSR             = MustParseGUID("5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6")
	TypeLinuxData       = MustParseGUID("0fc63daf-8483-4772-8e79-3d69d8477de4")
	TypeFlatcarReserved = MustParseGUID("c95dc21a-df0e-4340-8d7b-26cbfa9a03e0")
	TypeFlatcarResize   = MustParseGUID("3884dd41-8582-4404-b9a8-e9b84f2df50e")
	TypeRootRAID        = MustParseGUID("be9067b9-ea49-4f15-b4f6-f36f8c9e1818")
)

// Fixed unique GUIDs and labels of the two /usr slots. grub.cfg maps the
// USR-A GUID to vmlinuz-a, so these must never change.
var (
	USRAGUID = MustParseGUID("7130c94a-213a-4e5a-8e26-6cce9662f132")
	USRBGUID = MustParseGUID("e03dd35c-7c2d-4a47-b3fe-27f15780a57c")
)

const (
	LabelUSRA = "USR-A"
	LabelUSRB = "USR-B"
)

var typeNames = map[GUID]string{
	TypeEFI:             "efi",
	TypeBIOSBoot:        "bios-boot",
	TypeUSR:             "flatcar-usr",
	TypeLinuxData:       "linux-data",
	TypeFlatcarReserved: "flatcar-reserved",
	TypeFlatcarResize:   "flatcar-resize",
	TypeRootRAID:        "flatcar-root-raid",
}

// TypeName returns a short cgpt-style name for a well-known type GUID.
func TypeName(t GUID) (string, bool) {
	n, ok := typeNames[t]
	return n, ok
}

// Attributes is the 64-bit attribute field of a partition entry.
type Attributes uint64

// Attribute bits (UEFI bits 0–2, ChromeOS/GRUB gptprio bits 48–56).
const (
	AttrRequired           Attributes = 1 << 0
	AttrNoBlockIO          Attributes = 1 << 1
	AttrLegacyBIOSBootable Attributes = 1 << 2
	AttrSuccessful         Attributes = 1 << 56

	priorityShift = 48
	triesShift    = 52
	nibble        = 0xf
)

// Priority returns bits 48–51: 0 never boots, higher boots first.
func (a Attributes) Priority() int { return int(a>>priorityShift) & nibble }

// Tries returns bits 52–55: boot attempts left before the slot is skipped.
func (a Attributes) Tries() int { return int(a>>triesShift) & nibble }

// Successful returns bit 56: the slot booted and was marked good.
func (a Attributes) Successful() bool { return a&AttrSuccessful != 0 }

// LegacyBIOSBootable returns bit 2.
func (a Attributes) LegacyBIOSBootable() bool { return a&AttrLegacyBIOSBootable != 0 }

// Bootable reports whether GRUB gptprio would consider the slot:
// priority > 0 and (successful or tries left).
func (a Attributes) Bootable() bool {
	return a.Priority() > 0 && (a.Successful() || a.Tries() > 0)
}

func clamp4(n int) Attributes { return Attributes(min(max(n, 0), 15)) }

// WithPriority returns a with the priority set to n, clamped to 0–15; other
// bits are kept.
func (a Attributes) WithPriority(n int) Attributes {
	return a&^(nibble<<priorityShift) | clamp4(n)<<priorityShift
}

// WithTries returns a with tries set to n, clamped to 0–15.
func (a Attributes) WithTries(n int) Attributes {
	return a&^(nibble<<triesShift) | clamp4(n)<<triesShift
}

// WithSuccessful returns a with the successful bit set or cleared.
func (a Attributes) WithSuccessful(ok bool) Attributes {
	if ok {
		return a | AttrSuccessful
	}
	return a &^ AttrSuccessful
}

// String prints the value as 16 hex digits, the way sgdisk shows it.
func (a Attributes) String() string { return fmt.Sprintf("%016x", uint64(a)) }

// Partition is one non-empty entry of the partition entry array.
type Partition struct {
	Index      int // 1-based entry number (the "3" of /dev/sda3)
	Type       GUID
	GUID       GUID // unique partition GUID (PARTUUID)
	FirstLBA   uint64
	LastLBA    uint64 // inclusive
	Attributes Attributes
	Name       string // PARTLABEL; at most 36 UTF-16 code units on disk
}

// Sectors returns the partition length in sectors.
func (p Partition) Sectors() uint64 {
	if p.LastLBA < p.FirstLBA {
		return 0
	}
	return p.LastLBA - p.FirstLBA + 1
}

// Offset returns the byte offset of the partition. Read guarantees the
// result fits an int64 for tables it returns.
func (p Partition) Offset(sectorSize int) int64 { return int64(p.FirstLBA) * int64(sectorSize) }

// Size returns the partition length in bytes.
func (p Partition) Size(sectorSize int) int64 { return int64(p.Sectors()) * int64(sectorSize) }

// IsUSR reports whether p has the Flatcar /usr partition type.
func (p Partition) IsUSR() bool { return p.Type == TypeUSR }

// Table is a parsed GPT. Partitions holds the non-empty entries sorted by
// Index. The unexported fields carry what Read saw but Table does not model,
// so Write can preserve it.
type Table struct {
	DiskGUID       GUID
	SectorSize     int
	TotalSectors   uint64
	FirstUsableLBA uint64
	LastUsableLBA  uint64
	NumEntries     uint32
	EntrySize      uint32
	Partitions     []Partition
	// Which on-disk copies passed all checks when the table was read. Write
	// sets both to true after writing both copies.
	PrimaryValid, BackupValid bool

	// mismatch is set when both copies were valid but disagree (e.g. a
	// crash between the backup and the primary write).
	mismatch bool
	// primaryEntryLBA is where the primary entry array lives (usually 2).
	primaryEntryLBA uint64
	// revision, headerSize and headerExtra (bytes 92..headerSize) of the
	// header that was read; covered by the CRC, so kept verbatim.
	revision    uint32
	headerSize  uint32
	headerExtra []byte
	// rawEntries is the entry array as read; bytes beyond the 128 we model
	// in larger entries are preserved from it.
	rawEntries []byte
}

// NeedsRepair reports whether writing the table back would change the disk
// even without edits: a copy is invalid or the two copies disagree.
func (t *Table) NeedsRepair() bool { return !t.PrimaryValid || !t.BackupValid || t.mismatch }

// Clone returns a deep copy, so a caller can edit it and keep the original.
func (t *Table) Clone() *Table {
	c := *t
	c.Partitions = slices.Clone(t.Partitions)
	c.headerExtra = slices.Clone(t.headerExtra)
	c.rawEntries = slices.Clone(t.rawEntries)
	return &c
}

// ByIndex returns the partition with entry number i.
func (t *Table) ByIndex(i int) (Partition, bool) {
	for _, p := range t.Partitions {
		if p.Index == i {
			return p, true
		}
	}
	return Partition{}, false
}

// ByGUID returns the partition with unique GUID g.
func (t *Table) ByGUID(g GUID) (Partition, bool) {
	for _, p := range t.Partitions {
		if p.GUID == g {
			return p, true
		}
	}
	return Partition{}, false
}

// ByName returns all partitions labelled name, in table order.
func (t *Table) ByName(name string) []Partition {
	var out []Partition
	for _, p := range t.Partitions {
		if p.Name == name {
			out = append(out, p)
		}
	}
	return out
}

// Update replaces the partition with p.Index by p.
func (t *Table) Update(p Partition) error {
	for i := range t.Partitions {
		if t.Partitions[i].Index == p.Index {
			t.Partitions[i] = p
			return nil
		}
	}
	return fmt.Errorf("gpt: update: no partition %d", p.Index)
}

// SizeBytes returns the disk size the table describes.
func (t *Table) SizeBytes() int64 { return int64(t.TotalSectors) * int64(t.SectorSize) }

// Errors callers can test with errors.Is.
var (
	// ErrNoGPT: neither the primary nor the backup header is valid.
	ErrNoGPT = errors.New("no valid GPT")
	// ErrNoBootableSlot: no USR partition has priority > 0 and (tries > 0 or successful).
	ErrNoBootableSlot = errors.New("no bootable USR slot")
	// ErrSlot: a USR slot is missing, duplicated or not a USR partition.
	ErrSlot = errors.New("bad USR slot")
	// ErrOutOfRange: a write outside the partition was refused.
	ErrOutOfRange = errors.New("write outside the partition")
	// ErrLocked: another process holds the disk's lock.
	ErrLocked = errors.New("disk is locked by another process")
)

// Little-endian field helpers; GUIDs are stored in on-disk order already.
func getGUID(b []byte) GUID { return GUID(b[:16]) }

func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }
func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }

// describe is a short human summary used in error messages.
func (p Partition) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "partition %d", p.Index)
	if p.Name != "" {
		fmt.Fprintf(&b, " (%s)", p.Name)
	}
	return b.String()
}
