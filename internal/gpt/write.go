package gpt

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"unicode/utf16"
)

// WriterAtSyncer is where Write puts a table: an *os.File, or anything that
// can make its writes durable.
type WriterAtSyncer interface {
	io.WriterAt
	Sync() error
}

// Write stores both GPT copies of t. It is the single commit primitive:
//
//  1. backup entry array and backup header (at the end of the disk), Sync;
//  2. protective MBR, only if sector 0 has none (a hybrid MBR is kept);
//  3. primary entry array and primary header, Sync.
//
// Until the final primary write lands, the old primary stays valid, so a
// crash at any point leaves a readable GPT, and Read (which prefers the
// primary) sees either the old or the new table, never a mix. The backup is
// always written at the disk's last LBA as given by t.TotalSectors, which
// also moves a stale backup after the disk grew.
//
// If w is also an io.ReaderAt, sector 0 is read to decide whether a
// protective MBR is present; otherwise one is written. On success t's
// PrimaryValid and BackupValid are set to true.
func Write(w WriterAtSyncer, t *Table) error {
	if err := t.validate(); err != nil {
		return fmt.Errorf("gpt: write: %w", err)
	}
	ss := uint64(t.SectorSize)
	es := entrySectors(t.NumEntries, t.EntrySize, t.SectorSize)
	// One serialization for both copies, padded to whole sectors so no
	// stale bytes remain in the array's last sector.
	entries := make([]byte, es*ss)
	t.encodeEntries(entries)
	entriesCRC := crc32.ChecksumIEEE(entries[:int(t.NumEntries)*int(t.EntrySize)])

	primEntryLBA := t.primaryEntryLBA
	if primEntryLBA == 0 {
		primEntryLBA = defaultEntryLBA
	}
	last := t.TotalSectors - 1
	backupEntryLBA := last - es

	if _, err := w.WriteAt(entries, int64(backupEntryLBA*ss)); err != nil {
		return fmt.Errorf("gpt: write backup entries: %w", err)
	}
	if _, err := w.WriteAt(t.encodeHeader(last, 1, backupEntryLBA, entriesCRC), int64(last*ss)); err != nil {
		return fmt.Errorf("gpt: write backup header: %w", err)
	}
	if err := w.Sync(); err != nil {
		return fmt.Errorf("gpt: sync backup: %w", err)
	}
	if err := writeProtectiveMBR(w, t.TotalSectors); err != nil {
		return fmt.Errorf("gpt: write protective MBR: %w", err)
	}
	if _, err := w.WriteAt(entries, int64(primEntryLBA*ss)); err != nil {
		return fmt.Errorf("gpt: write primary entries: %w", err)
	}
	if _, err := w.WriteAt(t.encodeHeader(1, last, primEntryLBA, entriesCRC), int64(ss)); err != nil {
		return fmt.Errorf("gpt: write primary header: %w", err)
	}
	if err := w.Sync(); err != nil {
		return fmt.Errorf("gpt: sync primary: %w", err)
	}
	t.PrimaryValid, t.BackupValid, t.mismatch = true, true, false
	t.primaryEntryLBA = primEntryLBA
	t.rawEntries = entries[:int(t.NumEntries)*int(t.EntrySize)]
	return nil
}

// encodeEntries fills buf (zeroed, at least NumEntries×EntrySize bytes).
func (t *Table) encodeEntries(buf []byte) {
	es := int(t.EntrySize)
	for _, p := range t.Partitions {
		e := buf[(p.Index-1)*es:][:es]
		// Keep bytes past the 128 we model (larger entry sizes) as read.
		if len(t.rawEntries) == int(t.NumEntries)*es {
			copy(e, t.rawEntries[(p.Index-1)*es:][:es])
		}
		clear(e[:minEntrySize])
		copy(e[0:], p.Type[:])
		copy(e[16:], p.GUID[:])
		binary.LittleEndian.PutUint64(e[32:], p.FirstLBA)
		binary.LittleEndian.PutUint64(e[40:], p.LastLBA)
		binary.LittleEndian.PutUint64(e[48:], uint64(p.Attributes))
		for i, u := range utf16.Encode([]rune(p.Name)) {
			binary.LittleEndian.PutUint16(e[56+2*i:], u) // length checked by validate
		}
	}
}

// encodeHeader returns one full header sector with its CRC.
func (t *Table) encodeHeader(myLBA, altLBA, entryLBA uint64, entriesCRC uint32) []byte {
	sec := make([]byte, t.SectorSize)
	size, rev := t.headerSize, t.revision
	if size == 0 {
		size = minHeaderSize
	}
	if rev == 0 {
		rev = revision1
	}
	copy(sec, signature)
	binary.LittleEndian.PutUint32(sec[8:], rev)
	binary.LittleEndian.PutUint32(sec[12:], size)
	// 16: CRC (below); 20: reserved, must be zero.
	binary.LittleEndian.PutUint64(sec[24:], myLBA)
	binary.LittleEndian.PutUint64(sec[32:], altLBA)
	binary.LittleEndian.PutUint64(sec[40:], t.FirstUsableLBA)
	binary.LittleEndian.PutUint64(sec[48:], t.LastUsableLBA)
	copy(sec[56:], t.DiskGUID[:])
	binary.LittleEndian.PutUint64(sec[72:], entryLBA)
	binary.LittleEndian.PutUint32(sec[80:], t.NumEntries)
	binary.LittleEndian.PutUint32(sec[84:], t.EntrySize)
	binary.LittleEndian.PutUint32(sec[88:], entriesCRC)
	copy(sec[minHeaderSize:size], t.headerExtra)
	binary.LittleEndian.PutUint32(sec[16:], crc32.ChecksumIEEE(sec[:size]))
	return sec
}

// MBR layout.
const (
	mbrRecords   = 446
	mbrSigOffset = 510
	mbrTypeGPT   = 0xee
)

// hasProtectiveMBR reports whether sector 0 is an MBR with a GPT-protective
// (0xEE) record. Hybrid MBRs (Flatcar puts the ESP in one) qualify.
func hasProtectiveMBR(sec []byte) bool {
	if sec[mbrSigOffset] != 0x55 || sec[mbrSigOffset+1] != 0xaa {
		return false
	}
	for i := range 4 {
		if sec[mbrRecords+16*i+4] == mbrTypeGPT {
			return true
		}
	}
	return false
}

// writeProtectiveMBR writes the four partition records and the signature
// (bytes 446–511) unless a protective MBR is present. Boot code and the
// disk signature in bytes 0–445 are left alone.
func writeProtectiveMBR(w io.WriterAt, total uint64) error {
	if r, ok := w.(io.ReaderAt); ok {
		sec := make([]byte, 512)
		if _, err := r.ReadAt(sec, 0); err == nil && hasProtectiveMBR(sec) {
			return nil
		}
	}
	rec := make([]byte, 512-mbrRecords)
	// One record covering LBA 1..end (capped at 2^32-1 sectors), CHS
	// fields at their "beyond CHS" values as UEFI specifies.
	rec[1], rec[2], rec[3] = 0x00, 0x02, 0x00 // start CHS
	rec[4] = mbrTypeGPT
	rec[5], rec[6], rec[7] = 0xff, 0xff, 0xff // end CHS
	binary.LittleEndian.PutUint32(rec[8:], 1)
	binary.LittleEndian.PutUint32(rec[12:], uint32(min(total-1, 0xffffffff)))
	rec[64], rec[65] = 0x55, 0xaa
	_, err := w.WriteAt(rec, mbrRecords)
	return err
}
