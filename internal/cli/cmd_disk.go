package cli

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/big"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/flotilla/flotilla/internal/gpt"
)

// Commands for Flatcar-layout disks: images for tests and VMs (disk init),
// inspecting the GPT and the A/B slots (disk show), a manual rollback
// (disk prioritize) and GRUB's boot-time slot choice (boot select). They
// work on image files and block devices alike.

func newDiskCmd(g *globals) *cobra.Command {
	return parentCmd("disk", "Create and inspect Flatcar-layout disks and their A/B /usr slots",
		newDiskInitCmd(g), newDiskShowCmd(g), newDiskPrioritizeCmd(g))
}

func newBootCmd(g *globals) *cobra.Command {
	return parentCmd("boot", "Boot-time A/B slot selection (what GRUB gptprio does)",
		newBootSelectCmd(g))
}

type diskInitOptions struct {
	size, usrSize, espSize, oemSize string
	force                           bool
}

func newDiskInitCmd(g *globals) *cobra.Command {
	var o diskInitOptions
	cmd := &cobra.Command{
		Use:   "init FILE --size SIZE [--usr-size SIZE] [--force]",
		Short: "Create a sparse disk image with the Flatcar partition layout",
		Long: `Create a sparse disk image with Flatcar's "base" GPT layout: EFI-SYSTEM,
BIOS-BOOT, USR-A, USR-B, OEM, OEM-CONFIG and ROOT (the rest of the disk),
aligned to 2 MiB. USR-A is the booted, good slot (priority 1, successful);
USR-B is empty. Partitions are not formatted.

Sizes take binary units (B, KiB, MiB, GiB, TiB; K, M, G, T mean the same),
decimal units (KB, MB, GB, TB) or plain bytes; fractions like 1.5GiB work.`,
		Example: `  flotilla disk init node.img --size 8GiB
  flotilla disk init node.img --size 12GiB --usr-size 2GiB --esp-size 1GiB --oem-size 1GiB --force`,
		Args: exactArgs("FILE"),
		RunE: func(_ *cobra.Command, args []string) error {
			return runDiskInit(g, args[0], o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.size, "size", "", "disk size, e.g. 8GiB (required)")
	f.StringVar(&o.usrSize, "usr-size", "", "size of each /usr slot (default 1GiB)")
	f.StringVar(&o.espSize, "esp-size", "", "size of EFI-SYSTEM (default 128MiB)")
	f.StringVar(&o.oemSize, "oem-size", "", "size of OEM (default 128MiB)")
	f.BoolVar(&o.force, "force", false, "overwrite an existing image file")
	return cmd
}

func runDiskInit(g *globals, path string, o diskInitOptions) error {
	if err := g.checkOutput(); err != nil {
		return err
	}
	if err := requireFlags("size", o.size); err != nil {
		return err
	}
	opts := gpt.ImageOptions{Force: o.force}
	for _, s := range []struct {
		flag, val string
		dst       *int64
	}{{"size", o.size, &opts.Size}, {"usr-size", o.usrSize, &opts.USRSize}, {"esp-size", o.espSize, &opts.ESPSize}, {"oem-size", o.oemSize, &opts.OEMSize}} {
		if s.val == "" {
			continue
		}
		n, err := parseSize(s.val)
		if err != nil {
			return usagef("--%s: %v", s.flag, err)
		}
		if n%512 != 0 {
			return usagef("--%s %s: must be a multiple of 512 bytes", s.flag, s.val)
		}
		*s.dst = n
	}
	if err := gpt.CreateImage(path, opts); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s already exists; pass --force to overwrite it", path)
		}
		return err
	}
	d, err := gpt.OpenReadOnly(path)
	if err != nil {
		return err
	}
	defer d.Close()
	t, err := d.Table()
	if err != nil {
		return err
	}
	if g.jsonOutput() {
		return printJSON(g.stdout, diskView(path, t))
	}
	fmt.Fprintf(g.stdout, "created %s: %s sparse image, Flatcar layout, disk GUID %s\n\n",
		path, formatSize(t.SizeBytes()), t.DiskGUID)
	return printPartitions(g, t)
}

func newDiskShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show FILE",
		Short: "Show a disk's GPT: partitions, A/B slot attributes and header health",
		Long: `Show a disk's GPT like "cgpt show": every partition with its label, type,
start, size and unique GUID (PARTUUID), and for the /usr slots the gptprio
attributes (priority, tries, successful) and whether GRUB would boot them.
Also reports whether the primary and backup GPT headers are valid and which
slot boots next. Reads only; takes no lock.`,
		Example: `  flotilla disk show node.img
  flotilla disk show /dev/vda -o json`,
		Args: exactArgs("FILE"),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := g.checkOutput(); err != nil {
				return err
			}
			d, err := gpt.OpenReadOnly(args[0])
			if err != nil {
				return err
			}
			defer d.Close()
			t, err := d.Table()
			if err != nil {
				return err
			}
			if g.jsonOutput() {
				return printJSON(g.stdout, diskView(args[0], t))
			}
			f := newFields(g.stdout)
			f.add("Disk", args[0])
			f.add("Size", fmt.Sprintf("%s (%d sectors of %d bytes)", formatSize(t.SizeBytes()), t.TotalSectors, t.SectorSize))
			f.add("Disk GUID", t.DiskGUID.String())
			f.add("Primary header", validWord(t.PrimaryValid))
			f.add("Backup header", validWord(t.BackupValid))
			if next, ok := gpt.SelectBoot(t.Partitions); ok {
				f.add("Next boot", fmt.Sprintf("%s (%s)", next.Name, next.GUID))
			} else {
				f.add("Next boot", "none: no bootable USR slot")
			}
			if err := f.flush(); err != nil {
				return err
			}
			fmt.Fprintln(g.stdout)
			return printPartitions(g, t)
		},
	}
}

func validWord(ok bool) string {
	if ok {
		return "valid"
	}
	return "INVALID (repaired by the next GPT write)"
}

func newDiskPrioritizeCmd(g *globals) *cobra.Command {
	var slot string
	cmd := &cobra.Command{
		Use:   "prioritize FILE --slot USR-A|USR-B",
		Short: "Make a /usr slot boot next (manual rollback)",
		Long: `Make a /usr slot the one GRUB boots next, like the manual rollback of
Flatcar's documentation: give it the highest priority (cgpt prioritize) and,
if it never booted successfully, one try. The change is written at once.

On a running node, a slot that boots and stays up is marked good again by
the update agent, so prioritizing the running slot undoes a pending update.`,
		Example: `  flotilla disk prioritize /dev/vda --slot USR-A`,
		Args:    exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDiskPrioritize(cmd.Context(), g, args[0], slot)
		},
	}
	cmd.Flags().StringVar(&slot, "slot", "", "USR-A or USR-B (required)")
	return cmd
}

func runDiskPrioritize(ctx context.Context, g *globals, path, slot string) error {
	if err := g.checkOutput(); err != nil {
		return err
	}
	if err := requireFlags("slot", slot); err != nil {
		return err
	}
	label := strings.ToUpper(slot)
	if label != gpt.LabelUSRA && label != gpt.LabelUSRB {
		return usagef("--slot %q: want USR-A or USR-B", slot)
	}
	d, err := openLocked(ctx, path)
	if err != nil {
		return err
	}
	defer d.Close()
	t, err := d.Table()
	if err != nil {
		return err
	}
	target, err := gpt.FindSlot(t, label)
	if err != nil {
		return err
	}
	if err := gpt.SetNextBoot(t, target.GUID); err != nil {
		return err
	}
	// Refuse to write a table that would not do what was asked.
	if next, ok := gpt.SelectBoot(t.Partitions); !ok || next.GUID != target.GUID {
		return fmt.Errorf("prioritize %s: GRUB would still not boot it (another USR slot keeps a higher priority); nothing written", label)
	}
	if err := d.Commit(t); err != nil {
		return err
	}
	a, b, err := gpt.FindUSR(t)
	if err != nil {
		return err
	}
	if g.jsonOutput() {
		next, _ := t.ByGUID(target.GUID)
		return printJSON(g.stdout, struct {
			NextBoot slotState   `json:"next_boot"`
			Slots    []slotState `json:"slots"`
		}{newSlotState(next), []slotState{newSlotState(a), newSlotState(b)}})
	}
	fmt.Fprintf(g.stdout, "%s will boot next on %s\n", label, path)
	for _, p := range []gpt.Partition{a, b} {
		at := p.Attributes
		fmt.Fprintf(g.stdout, "  %s  priority %d, tries %d, successful %s\n", p.Name, at.Priority(), at.Tries(), yesNo(at.Successful()))
	}
	return nil
}

func newBootSelectCmd(g *globals) *cobra.Command {
	var disk string
	cmd := &cobra.Command{
		Use:   "select --disk DISK",
		Short: "Choose the /usr slot to boot, as GRUB gptprio.next does, and print it",
		Long: `Choose the /usr slot to boot exactly like GRUB's gptprio.next: among the USR
partitions with priority > 0 and (tries > 0 or successful), the highest
priority wins; ties go to the first in the table. If the chosen slot has
tries left, one is used up and the GPT written (both copies, backup first)
before the choice is printed; an invalid GPT copy is repaired too.

Prints "LABEL PARTUUID" on one line, e.g.
  USR-B e03dd35c-7c2d-4a47-b3fe-27f15780a57c
Exits 1 when no slot is bootable.`,
		Example: `  flotilla boot select --disk /dev/vda
  flotilla boot select --disk node.img -o json`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBootSelect(cmd.Context(), g, disk)
		},
	}
	cmd.Flags().StringVar(&disk, "disk", "", "disk image or block device (required)")
	return cmd
}

func runBootSelect(ctx context.Context, g *globals, path string) error {
	if err := g.checkOutput(); err != nil {
		return err
	}
	if err := requireFlags("disk", path); err != nil {
		return err
	}
	d, err := openLocked(ctx, path)
	if err != nil {
		return err
	}
	defer d.Close()
	t, err := d.Table()
	if err != nil {
		return err
	}
	repair := t.NeedsRepair()
	chosen, changed, err := gpt.BootNext(t)
	if errors.Is(err, gpt.ErrNoBootableSlot) {
		return fmt.Errorf("no bootable USR slot on %s: every USR partition has priority 0, or no tries left and not marked successful", path)
	}
	if err != nil {
		return err
	}
	if changed || repair {
		if err := d.Commit(t); err != nil {
			return err
		}
		if repair {
			fmt.Fprintf(g.stderr, "repaired the GPT of %s (a header copy was invalid or stale)\n", path)
		}
	}
	if g.jsonOutput() {
		// The state after the boot attempt: "bootable" is left out, it
		// would describe the boot after this one.
		a := chosen.Attributes
		return printJSON(g.stdout, struct {
			Label      string   `json:"label"`
			PartUUID   gpt.GUID `json:"partuuid"`
			Number     int      `json:"number"`
			Priority   int      `json:"priority"`
			Tries      int      `json:"tries"`
			Successful bool     `json:"successful"`
			GPTUpdated bool     `json:"gpt_updated"`
		}{chosen.Name, chosen.GUID, chosen.Index, a.Priority(), a.Tries(), a.Successful(), changed || repair})
	}
	fmt.Fprintf(g.stdout, "%s %s\n", chosen.Name, chosen.GUID)
	return nil
}

// openLocked opens a disk for writing, waiting for another flotilla
// process's lock for a few seconds (or until ctx ends).
func openLocked(ctx context.Context, path string) (*gpt.Disk, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, gpt.DefaultLockWait)
	defer cancel()
	return gpt.OpenContext(ctx, path)
}

// slotState is a USR slot in JSON output.
type slotState struct {
	Label      string   `json:"label"`
	PartUUID   gpt.GUID `json:"partuuid"`
	Number     int      `json:"number"`
	Priority   int      `json:"priority"`
	Tries      int      `json:"tries"`
	Successful bool     `json:"successful"`
	Bootable   bool     `json:"bootable"`
}

func newSlotState(p gpt.Partition) slotState {
	a := p.Attributes
	return slotState{p.Name, p.GUID, p.Index, a.Priority(), a.Tries(), a.Successful(), a.Bootable()}
}

// gptprioJSON holds the A/B attributes of a USR partition.
type gptprioJSON struct {
	Priority   int  `json:"priority"`
	Tries      int  `json:"tries"`
	Successful bool `json:"successful"`
	Bootable   bool `json:"bootable"`
}

type partitionJSON struct {
	Number             int          `json:"number"`
	Label              string       `json:"label"`
	Type               string       `json:"type"`
	TypeGUID           gpt.GUID     `json:"type_guid"`
	PartUUID           gpt.GUID     `json:"partuuid"`
	StartLBA           uint64       `json:"start_lba"`
	EndLBA             uint64       `json:"end_lba"`
	SizeBytes          int64        `json:"size_bytes"`
	Attributes         string       `json:"attributes"`
	LegacyBIOSBootable bool         `json:"legacy_bios_bootable"`
	Gptprio            *gptprioJSON `json:"gptprio,omitempty"`
}

type diskJSON struct {
	Path           string          `json:"path"`
	SizeBytes      int64           `json:"size_bytes"`
	SectorSize     int             `json:"sector_size"`
	TotalSectors   uint64          `json:"total_sectors"`
	DiskGUID       gpt.GUID        `json:"disk_guid"`
	FirstUsableLBA uint64          `json:"first_usable_lba"`
	LastUsableLBA  uint64          `json:"last_usable_lba"`
	PrimaryValid   bool            `json:"primary_header_valid"`
	BackupValid    bool            `json:"backup_header_valid"`
	NextBoot       *slotState      `json:"next_boot"` // null: nothing bootable
	Partitions     []partitionJSON `json:"partitions"`
}

func diskView(path string, t *gpt.Table) diskJSON {
	v := diskJSON{
		Path: path, SizeBytes: t.SizeBytes(), SectorSize: t.SectorSize, TotalSectors: t.TotalSectors,
		DiskGUID: t.DiskGUID, FirstUsableLBA: t.FirstUsableLBA, LastUsableLBA: t.LastUsableLBA,
		PrimaryValid: t.PrimaryValid, BackupValid: t.BackupValid, Partitions: []partitionJSON{},
	}
	if next, ok := gpt.SelectBoot(t.Partitions); ok {
		s := newSlotState(next)
		v.NextBoot = &s
	}
	for _, p := range t.Partitions {
		pj := partitionJSON{
			Number: p.Index, Label: p.Name, Type: typeName(p.Type), TypeGUID: p.Type, PartUUID: p.GUID,
			StartLBA: p.FirstLBA, EndLBA: p.LastLBA, SizeBytes: p.Size(t.SectorSize),
			Attributes: "0x" + p.Attributes.String(), LegacyBIOSBootable: p.Attributes.LegacyBIOSBootable(),
		}
		if p.IsUSR() {
			a := p.Attributes
			pj.Gptprio = &gptprioJSON{a.Priority(), a.Tries(), a.Successful(), a.Bootable()}
		}
		v.Partitions = append(v.Partitions, pj)
	}
	return v
}

// printPartitions writes the partition table; gptprio columns are filled
// for USR slots only.
func printPartitions(g *globals, t *gpt.Table) error {
	tw := newTable(g.stdout, "NUMBER", "LABEL", "TYPE", "START", "SIZE", "PARTUUID", "PRIORITY", "TRIES", "SUCCESSFUL", "BOOTABLE")
	for _, p := range t.Partitions {
		prio, tries, succ, boot := "", "", "", ""
		if p.IsUSR() {
			a := p.Attributes
			prio, tries, succ, boot = strconv.Itoa(a.Priority()), strconv.Itoa(a.Tries()), yesNo(a.Successful()), yesNo(a.Bootable())
		}
		tw.row(strconv.Itoa(p.Index), p.Name, typeName(p.Type), strconv.FormatUint(p.FirstLBA, 10),
			formatSize(p.Size(t.SectorSize)), p.GUID.String(), prio, tries, succ, boot)
	}
	return tw.flush()
}

func typeName(t gpt.GUID) string {
	if n, ok := gpt.TypeName(t); ok {
		return n
	}
	return t.String()
}

// sizeUnits maps a size suffix (lower case) to its multiplier. Single
// letters are binary, as in sgdisk and qemu-img.
var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
	"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
}

// parseSize parses "3GiB", "1.5G", "512MB", "4096" into bytes. The result
// must be a positive whole number of bytes that fits an int64.
func parseSize(s string) (int64, error) {
	in := strings.TrimSpace(s)
	i := strings.IndexFunc(in, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := in, ""
	if i >= 0 {
		num, unit = in[:i], strings.TrimSpace(in[i:])
	}
	mult, ok := sizeUnits[strings.ToLower(unit)]
	if num == "" || !ok {
		return 0, fmt.Errorf("size %q: want a number with an optional unit (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)", s)
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("size %q: bad number %q", s, num)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() {
		return 0, fmt.Errorf("size %q is not a whole number of bytes", s)
	}
	if r.Sign() <= 0 || r.Num().Cmp(big.NewInt(math.MaxInt64)) > 0 {
		return 0, fmt.Errorf("size %q out of range", s)
	}
	return r.Num().Int64(), nil
}

// formatSize prints bytes in the largest binary unit that divides them
// exactly ("3 GiB", "700 MiB"), else in the largest unit not above them with
// one decimal ("1.4 GiB").
func formatSize(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	for i := len(units) - 1; i > 0; i-- {
		if u := int64(1) << (10 * i); n >= u && n%u == 0 {
			return strconv.FormatInt(n/u, 10) + " " + units[i]
		}
	}
	for i := len(units) - 1; i > 0; i-- {
		if u := int64(1) << (10 * i); n >= u {
			return strconv.FormatFloat(float64(n)/float64(u), 'f', 1, 64) + " " + units[i]
		}
	}
	return strconv.FormatInt(n, 10) + " B"
}
