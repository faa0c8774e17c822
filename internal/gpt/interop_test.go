package gpt

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Interop tests: our images must satisfy the Debian GPT tools (gdisk's
// sgdisk, util-linux's sfdisk), and tables they write must read correctly.
// They are skipped where the tools are not installed.

func tool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	// /usr/sbin is often not in a non-root PATH.
	p, err := exec.LookPath("/usr/sbin/" + name)
	if err != nil {
		t.Skipf("%s not installed (%v): skipping interop test", name, err)
	}
	return p
}

func run(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(tool(t, name), args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// sgdiskVerify fails the test unless `sgdisk -v` finds the GPT clean.
func sgdiskVerify(t *testing.T, img string) {
	t.Helper()
	out := run(t, "", "sgdisk", "-v", img)
	if !strings.Contains(out, "No problems found") {
		t.Fatalf("sgdisk -v found problems:\n%s", out)
	}
	for _, bad := range []string{"ERROR", "Warning", "corrupt", "nvalid", "mismatch"} {
		if strings.Contains(out, bad) {
			t.Fatalf("sgdisk -v output contains %q:\n%s", bad, out)
		}
	}
}

// sgdiskInfo returns the "Key: value" lines of `sgdisk -i N`.
func sgdiskInfo(t *testing.T, img string, n int) map[string]string {
	t.Helper()
	info := map[string]string{}
	for _, l := range strings.Split(run(t, "", "sgdisk", "-i", strconv.Itoa(n), img), "\n") {
		if k, v, ok := strings.Cut(l, ": "); ok {
			info[k] = strings.TrimSpace(v)
		}
	}
	return info
}

func checkSgdiskPartition(t *testing.T, img string, p Partition) {
	t.Helper()
	info := sgdiskInfo(t, img, p.Index)
	want := map[string]string{
		"Partition name":        "'" + p.Name + "'",
		"Partition unique GUID": strings.ToUpper(p.GUID.String()),
		"Attribute flags":       fmt.Sprintf("%016x", uint64(p.Attributes)),
		"First sector":          strconv.FormatUint(p.FirstLBA, 10),
		"Last sector":           strconv.FormatUint(p.LastLBA, 10),
	}
	for k, v := range want {
		got := info[k]
		if k == "First sector" || k == "Last sector" {
			got, _, _ = strings.Cut(got, " ") // "270336 (at 132.0 MiB)"
		}
		if got != v {
			t.Errorf("sgdisk -i %d: %s = %q, want %q", p.Index, k, got, v)
		}
	}
	if code, _, _ := strings.Cut(info["Partition GUID code"], " "); code != strings.ToUpper(p.Type.String()) {
		t.Errorf("sgdisk -i %d: type %q, want %s", p.Index, info["Partition GUID code"], p.Type)
	}
}

type sfdiskDump struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		FirstLBA   uint64 `json:"firstlba"`
		LastLBA    uint64 `json:"lastlba"`
		SectorSize int    `json:"sectorsize"`
		Partitions []struct {
			Node  string `json:"node"`
			Start uint64 `json:"start"`
			Size  uint64 `json:"size"`
			Type  string `json:"type"`
			UUID  string `json:"uuid"`
			Name  string `json:"name"`
			Attrs string `json:"attrs"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

// sfdiskAttrs renders attributes the way sfdisk prints them.
func sfdiskAttrs(a Attributes) string {
	var words []string
	for bit, name := range []string{"RequiredPartition", "NoBlockIOProtocol", "LegacyBIOSBootable"} {
		if a&(1<<bit) != 0 {
			words = append(words, name)
		}
	}
	var bits []string
	for bit := 48; bit < 64; bit++ {
		if a&(1<<bit) != 0 {
			bits = append(bits, strconv.Itoa(bit))
		}
	}
	if len(bits) > 0 {
		words = append(words, "GUID:"+strings.Join(bits, ","))
	}
	return strings.Join(words, " ")
}

func checkSfdisk(t *testing.T, img string, tb *Table) {
	t.Helper()
	var d sfdiskDump
	out := run(t, "", "sfdisk", "--json", img)
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("sfdisk --json: %v\n%s", err, out)
	}
	pt := d.PartitionTable
	if pt.Label != "gpt" || !strings.EqualFold(pt.ID, tb.DiskGUID.String()) || pt.FirstLBA != tb.FirstUsableLBA ||
		pt.LastLBA != tb.LastUsableLBA || pt.SectorSize != tb.SectorSize {
		t.Errorf("sfdisk table header %+v", pt)
	}
	if len(pt.Partitions) != len(tb.Partitions) {
		t.Fatalf("sfdisk lists %d partitions, we have %d", len(pt.Partitions), len(tb.Partitions))
	}
	for i, sp := range pt.Partitions {
		p := tb.Partitions[i]
		if !strings.HasSuffix(sp.Node, strconv.Itoa(p.Index)) || sp.Name != p.Name || !strings.EqualFold(sp.Type, p.Type.String()) ||
			!strings.EqualFold(sp.UUID, p.GUID.String()) || sp.Start != p.FirstLBA || sp.Size != p.Sectors() || sp.Attrs != sfdiskAttrs(p.Attributes) {
			t.Errorf("sfdisk partition %+v\nours %+v (attrs %q)", sp, p, sfdiskAttrs(p.Attributes))
		}
	}
}

func TestInteropOurImage(t *testing.T) {
	tool(t, "sgdisk")
	tool(t, "sfdisk")
	img := filepath.Join(t.TempDir(), "flatcar.img")
	if err := CreateImage(img, ImageOptions{Size: 3 << 30}); err != nil {
		t.Fatal(err)
	}
	sgdiskVerify(t, img)
	d, err := Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tb, err := d.Table()
	if err != nil {
		t.Fatal(err)
	}
	// Literal values, so the check does not only compare us with ourselves.
	if info := sgdiskInfo(t, img, 3); info["Partition name"] != "'USR-A'" || info["Attribute flags"] != "0101000000000000" ||
		info["Partition unique GUID"] != "7130C94A-213A-4E5A-8E26-6CCE9662F132" {
		t.Errorf("sgdisk -i 3: %v", info)
	}
	if info := sgdiskInfo(t, img, 1); info["Attribute flags"] != "0000000000000004" {
		t.Errorf("ESP attribute flags %q", info["Attribute flags"])
	}
	for _, p := range tb.Partitions {
		checkSgdiskPartition(t, img, p)
	}
	checkSfdisk(t, img, tb)

	// The commit point as postinst does it, then one GRUB boot.
	if err := CommitUpdate(tb, USRBGUID); err != nil {
		t.Fatal(err)
	}
	if err := d.Commit(tb); err != nil {
		t.Fatal(err)
	}
	sgdiskVerify(t, img)
	if got := sgdiskInfo(t, img, 4)["Attribute flags"]; got != "0012000000000000" {
		t.Errorf("USR-B after commit: %s, want 0012000000000000", got)
	}
	if _, _, err := BootNext(tb); err != nil {
		t.Fatal(err)
	}
	if err := d.Commit(tb); err != nil {
		t.Fatal(err)
	}
	sgdiskVerify(t, img)
	for _, p := range tb.Partitions {
		checkSgdiskPartition(t, img, p)
	}
	checkSfdisk(t, img, tb)
	var d2 sfdiskDump
	_ = json.Unmarshal([]byte(run(t, "", "sfdisk", "--json", img)), &d2)
	if got := d2.PartitionTable.Partitions[3].Attrs; got != "GUID:49" {
		t.Errorf("sfdisk USR-B attrs after boot %q, want GUID:49 (priority 2)", got)
	}
}

func TestInteropRepairSeenBySgdisk(t *testing.T) {
	tool(t, "sgdisk")
	img := newImageFile(t)
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0xff}, 512+40) // break the primary header CRC
	f.Close()
	if out := run(t, "", "sgdisk", "-v", img); !strings.Contains(out, "Main header: ERROR") {
		t.Fatalf("sgdisk did not notice the corrupt header:\n%s", out)
	}
	d, err := Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tb, err := d.Table()
	if err != nil || tb.PrimaryValid {
		t.Fatalf("read: %v primary valid %v", err, tb != nil && tb.PrimaryValid)
	}
	if err := d.Commit(tb); err != nil {
		t.Fatal(err)
	}
	sgdiskVerify(t, img)
}

func TestInteropReadSgdiskTable(t *testing.T) {
	tool(t, "sgdisk")
	img := filepath.Join(t.TempDir(), "sgdisk.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	run(t, "", "sgdisk", "-o",
		"-n", "1:2048:+8M", "-t", "1:"+TypeUSR.String(), "-c", "1:USR-A", "-u", "1:"+USRAGUID.String(),
		"-A", "1:set:48", "-A", "1:set:56", "-A", "1:set:60",
		"-n", "2:0:+8M", "-t", "2:"+TypeUSR.String(), "-c", "2:USR-B", "-u", "2:"+USRBGUID.String(),
		"-n", "3:0:+4M", "-t", "3:"+TypeLinuxData.String(), "-c", "3:OEM", "-A", "3:set:2",
		img)
	d, err := Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tb, err := d.Table()
	if err != nil {
		t.Fatal(err)
	}
	if !tb.PrimaryValid || !tb.BackupValid || tb.NeedsRepair() || len(tb.Partitions) != 3 {
		t.Fatalf("table %+v", tb)
	}
	a, b, err := FindUSR(tb)
	if err != nil {
		t.Fatal(err)
	}
	if a.Index != 1 || a.FirstLBA != 2048 || a.LastLBA != 2048+16384-1 || a.GUID != USRAGUID ||
		a.Attributes != 1<<48|1<<56|1<<60 || !a.Attributes.Bootable() {
		t.Errorf("USR-A %+v", a)
	}
	if b.Index != 2 || b.FirstLBA != 2048+16384 || b.Attributes != 0 || b.GUID != USRBGUID {
		t.Errorf("USR-B %+v", b)
	}
	if oem, _ := tb.ByIndex(3); oem.Name != "OEM" || !oem.Attributes.LegacyBIOSBootable() || oem.Type != TypeLinuxData {
		t.Errorf("OEM %+v", oem)
	}
	if got, ok := SelectBoot(tb.Partitions); !ok || got.GUID != USRAGUID {
		t.Errorf("boots %s", got.Name)
	}
	// Our write of sgdisk's table stays clean for sgdisk, bit 60 survives.
	if err := CommitUpdate(tb, USRBGUID); err != nil {
		t.Fatal(err)
	}
	if err := d.Commit(tb); err != nil {
		t.Fatal(err)
	}
	sgdiskVerify(t, img)
	if got := sgdiskInfo(t, img, 1)["Attribute flags"]; got != "1101000000000000" {
		t.Errorf("USR-A flags %s, want 1101000000000000", got)
	}
	if got := sgdiskInfo(t, img, 2)["Attribute flags"]; got != "0012000000000000" {
		t.Errorf("USR-B flags %s, want 0012000000000000", got)
	}
}

func TestInteropReadSfdiskTable(t *testing.T) {
	tool(t, "sfdisk")
	img := filepath.Join(t.TempDir(), "sfdisk.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`label: gpt
label-id: 0b2e2a9c-3f1d-4f6e-9a55-41c1d4f0b7a1
start=4096, size=16384, type=%s, uuid=%s, name="USR-A", attrs="GUID:48,56"
start=20480, size=16384, type=%s, uuid=%s, name="USR-B", attrs="GUID:49,52"
`, TypeUSR, USRAGUID, TypeUSR, USRBGUID)
	run(t, script, "sfdisk", "--no-reread", "--no-tell-kernel", "-q", img)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	tb, err := Read(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	if tb.DiskGUID.String() != "0b2e2a9c-3f1d-4f6e-9a55-41c1d4f0b7a1" {
		t.Errorf("disk GUID %s", tb.DiskGUID)
	}
	a, b, err := FindUSR(tb)
	if err != nil {
		t.Fatal(err)
	}
	if slotOf(a.Attributes) != (slot{1, 0, true}) || slotOf(b.Attributes) != (slot{2, 1, false}) || a.FirstLBA != 4096 || b.Sectors() != 16384 {
		t.Errorf("A %+v B %+v", a, b)
	}
	if got, _, _ := BootNext(tb); got.GUID != USRBGUID {
		t.Errorf("boots %s, want USR-B", got.Name)
	}
}
