package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/flotilla/flotilla/internal/gpt"
)

// runDisk runs the CLI in-process through Run.
func runDisk(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Run(context.Background(), args, strings.NewReader(""), &out, &errb, nil)
	return code, out.String(), errb.String()
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := runDisk(t, args...)
	if code != 0 {
		t.Fatalf("%v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
	}
	return out
}

// smallImage creates a small test image through the CLI.
func smallImage(t *testing.T) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "node.img")
	mustRun(t, "disk", "init", img, "--size", "100MiB", "--usr-size", "8MiB", "--esp-size", "4MiB", "--oem-size", "4MiB")
	return img
}

func TestDiskInit(t *testing.T) {
	img := filepath.Join(t.TempDir(), "node.img")
	out := mustRun(t, "disk", "init", img, "--size", "3GiB")
	if fi, err := os.Stat(img); err != nil || fi.Size() != 3<<30 {
		t.Fatalf("image: %v", err)
	}
	if !strings.Contains(out, "created "+img+": 3 GiB sparse image") {
		t.Errorf("summary line missing:\n%s", out)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^1\s+EFI-SYSTEM\s+efi\s+4096\s+128 MiB\s`),
		regexp.MustCompile(`(?m)^3\s+USR-A\s+flatcar-usr\s+270336\s+1 GiB\s+7130c94a-213a-4e5a-8e26-6cce9662f132\s+1\s+0\s+yes\s+yes$`),
		regexp.MustCompile(`(?m)^4\s+USR-B\s+flatcar-usr\s+2367488\s+1 GiB\s+e03dd35c-7c2d-4a47-b3fe-27f15780a57c\s+0\s+0\s+no\s+no$`),
		regexp.MustCompile(`(?m)^9\s+ROOT\s+flatcar-resize\s+4857856\s`),
	} {
		if !want.MatchString(out) {
			t.Errorf("output lacks %s:\n%s", want, out)
		}
	}

	code, _, errOut := runDisk(t, "disk", "init", img, "--size", "3GiB")
	if code != 1 || !strings.Contains(errOut, "already exists; pass --force") {
		t.Errorf("existing file: exit %d, %s", code, errOut)
	}
	mustRun(t, "disk", "init", img, "--size", "4GiB", "--force")
	if fi, _ := os.Stat(img); fi.Size() != 4<<30 {
		t.Errorf("forced size %d", fi.Size())
	}
	code, _, errOut = runDisk(t, "disk", "init", filepath.Join(t.TempDir(), "small.img"), "--size", "1GiB")
	if code != 1 || !strings.Contains(errOut, "needs at least") {
		t.Errorf("too small: exit %d, %s", code, errOut)
	}
	for _, args := range [][]string{
		{"disk", "init", img},
		{"disk", "init", img, "--size", "3 parsecs"},
		{"disk", "init", img, "--size", "1000"},
		{"disk", "init", "--size", "3GiB"},
	} {
		if code, _, errOut := runDisk(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errOut)
		}
	}
}

func TestDiskShow(t *testing.T) {
	img := smallImage(t)
	out := mustRun(t, "disk", "show", img)
	for _, want := range []string{"Primary header:  valid", "Backup header:   valid", "Next boot:       USR-A (7130c94a-213a-4e5a-8e26-6cce9662f132)", "100 MiB (204800 sectors of 512 bytes)"} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	header := regexp.MustCompile(`(?m)^NUMBER\s+LABEL\s+TYPE\s+START\s+SIZE\s+PARTUUID\s+PRIORITY\s+TRIES\s+SUCCESSFUL\s+BOOTABLE$`)
	if !header.MatchString(out) {
		t.Errorf("no table header:\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^6\s+OEM\s+linux-data\s+49152\s+4 MiB\s+\S+\s+-\s+-\s+-\s+-$`).MatchString(out) {
		t.Errorf("OEM row wrong:\n%s", out)
	}

	var v diskJSON
	js := mustRun(t, "disk", "show", img, "-o", "json")
	if err := json.Unmarshal([]byte(js), &v); err != nil {
		t.Fatalf("%v\n%s", err, js)
	}
	if !v.PrimaryValid || !v.BackupValid || v.SizeBytes != 100<<20 || len(v.Partitions) != 7 || v.NextBoot == nil || v.NextBoot.Label != "USR-A" {
		t.Errorf("json %+v", v)
	}
	usrA := v.Partitions[2]
	if usrA.Label != "USR-A" || usrA.PartUUID != gpt.USRAGUID || usrA.Type != "flatcar-usr" || usrA.Attributes != "0x0101000000000000" ||
		usrA.Gptprio == nil || *usrA.Gptprio != (gptprioJSON{1, 0, true, true}) {
		t.Errorf("USR-A json %+v", usrA)
	}
	if v.Partitions[0].Gptprio != nil || !v.Partitions[0].LegacyBIOSBootable {
		t.Errorf("ESP json %+v", v.Partitions[0])
	}
	for _, key := range []string{`"primary_header_valid"`, `"partuuid"`, `"type_guid"`, `"next_boot"`} {
		if !strings.Contains(js, key) {
			t.Errorf("json lacks %s", key)
		}
	}

	// A broken primary header shows up, and a missing file is an error.
	f, _ := os.OpenFile(img, os.O_RDWR, 0)
	f.WriteAt([]byte("XX"), 512)
	f.Close()
	if out := mustRun(t, "disk", "show", img); !strings.Contains(out, "Primary header:  INVALID") {
		t.Errorf("corrupt primary not shown:\n%s", out)
	}
	if code, _, _ := runDisk(t, "disk", "show", filepath.Join(t.TempDir(), "nope.img")); code != 1 {
		t.Errorf("missing file: exit %d", code)
	}
}

// slotsOf reads the USR slots of img.
func slotsOf(t *testing.T, img string) (a, b gpt.Attributes) {
	t.Helper()
	d, err := gpt.OpenReadOnly(img)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tb, err := d.Table()
	if err != nil {
		t.Fatal(err)
	}
	pa, pb, err := gpt.FindUSR(tb)
	if err != nil {
		t.Fatal(err)
	}
	return pa.Attributes, pb.Attributes
}

func TestBootSelect(t *testing.T) {
	img := smallImage(t)
	if out := mustRun(t, "boot", "select", "--disk", img); out != "USR-A 7130c94a-213a-4e5a-8e26-6cce9662f132\n" {
		t.Errorf("fresh image selects %q", out)
	}
	// An update is committed to USR-B (what the agent's postinst step does).
	d, err := gpt.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	tb, _ := d.Table()
	if err := gpt.CommitUpdate(tb, gpt.USRBGUID); err != nil {
		t.Fatal(err)
	}
	if err := d.Commit(tb); err != nil {
		t.Fatal(err)
	}
	d.Close()

	// First boot: B, using up its one try.
	var sel struct {
		Label      string `json:"label"`
		PartUUID   string `json:"partuuid"`
		Priority   int    `json:"priority"`
		Tries      int    `json:"tries"`
		Successful bool   `json:"successful"`
		GPTUpdated bool   `json:"gpt_updated"`
	}
	js := mustRun(t, "boot", "select", "--disk", img, "-o", "json")
	if err := json.Unmarshal([]byte(js), &sel); err != nil {
		t.Fatalf("%v\n%s", err, js)
	}
	if sel.Label != "USR-B" || sel.PartUUID != "e03dd35c-7c2d-4a47-b3fe-27f15780a57c" || sel.Priority != 2 || sel.Tries != 0 || sel.Successful || !sel.GPTUpdated {
		t.Errorf("first boot %+v", sel)
	}
	if _, b := slotsOf(t, img); b.Tries() != 0 || b.Priority() != 2 {
		t.Errorf("tries not decremented on disk: %s", b)
	}
	// B was never marked good: the second boot rolls back to A, unchanged.
	if out := mustRun(t, "boot", "select", "--disk", img); out != "USR-A 7130c94a-213a-4e5a-8e26-6cce9662f132\n" {
		t.Errorf("second boot selects %q, want rollback to USR-A", out)
	}
	if a, b := slotsOf(t, img); a != 0x0101000000000000 || b != 0x0002000000000000 {
		t.Errorf("after rollback A %s B %s", a, b)
	}
}

func TestBootSelectDecrementsTries(t *testing.T) {
	img := smallImage(t)
	d, err := gpt.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	tb, _ := d.Table()
	_, b, _ := gpt.FindUSR(tb)
	b.Attributes = b.Attributes.WithPriority(3).WithTries(2)
	if err := tb.Update(b); err != nil {
		t.Fatal(err)
	}
	if err := d.Commit(tb); err != nil {
		t.Fatal(err)
	}
	d.Close()
	for i, wantTries := range []int{1, 0} {
		if out := mustRun(t, "boot", "select", "--disk", img); !strings.HasPrefix(out, "USR-B ") {
			t.Fatalf("boot %d: %q", i, out)
		}
		if _, b := slotsOf(t, img); b.Tries() != wantTries {
			t.Errorf("boot %d: tries %d, want %d", i, b.Tries(), wantTries)
		}
	}
}

func TestBootSelectNoBootableSlot(t *testing.T) {
	img := smallImage(t)
	d, err := gpt.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	tb, _ := d.Table()
	if err := gpt.ClearSlot(tb, gpt.USRAGUID); err != nil {
		t.Fatal(err)
	}
	if err := d.Commit(tb); err != nil {
		t.Fatal(err)
	}
	d.Close()
	code, out, errOut := runDisk(t, "boot", "select", "--disk", img)
	if code != 1 || out != "" || !strings.Contains(errOut, "no bootable USR slot") {
		t.Errorf("exit %d stdout %q stderr %q", code, out, errOut)
	}
	if out := mustRun(t, "disk", "show", img); !strings.Contains(out, "none: no bootable USR slot") {
		t.Errorf("show:\n%s", out)
	}
	if code, _, _ := runDisk(t, "boot", "select"); code != 2 {
		t.Errorf("missing --disk: exit %d", code)
	}
}

func TestDiskPrioritize(t *testing.T) {
	img := smallImage(t)
	out := mustRun(t, "disk", "prioritize", img, "--slot", "USR-B")
	if !strings.Contains(out, "USR-B will boot next") || !strings.Contains(out, "USR-B  priority 2, tries 1, successful no") {
		t.Errorf("output:\n%s", out)
	}
	if a, b := slotsOf(t, img); a.Priority() != 1 || !a.Successful() || b.Priority() != 2 || b.Tries() != 1 || b.Successful() {
		t.Errorf("A %s B %s", a, b)
	}
	if out := mustRun(t, "boot", "select", "--disk", img); !strings.HasPrefix(out, "USR-B ") {
		t.Errorf("boot after prioritize: %q", out)
	}
	// Back to A (already good: no try needed), JSON output.
	var res struct {
		NextBoot slotState   `json:"next_boot"`
		Slots    []slotState `json:"slots"`
	}
	js := mustRun(t, "disk", "prioritize", img, "--slot", "usr-a", "-o", "json")
	if err := json.Unmarshal([]byte(js), &res); err != nil {
		t.Fatal(err)
	}
	if res.NextBoot.Label != "USR-A" || res.NextBoot.Priority != 2 || res.NextBoot.Tries != 0 || len(res.Slots) != 2 || res.Slots[1].Priority != 1 {
		t.Errorf("json %+v", res)
	}
	for _, args := range [][]string{{"disk", "prioritize", img}, {"disk", "prioritize", img, "--slot", "ROOT"}} {
		if code, _, _ := runDisk(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"4096", 4096, true},
		{"512B", 512, true},
		{"3GiB", 3 << 30, true},
		{"3gib", 3 << 30, true},
		{"3G", 3 << 30, true},
		{"1.5GiB", 3 << 29, true},
		{"128MiB", 128 << 20, true},
		{"128 MiB", 128 << 20, true},
		{"64K", 64 << 10, true},
		{"2TiB", 2 << 40, true},
		{"1GB", 1e9, true},
		{"500MB", 5e8, true},
		{"1.5", 0, false}, // not a whole byte
		{"0", 0, false},
		{"-1GiB", 0, false},
		{"", 0, false},
		{"GiB", 0, false},
		{"3 parsecs", 0, false},
		{"1.2.3G", 0, false},
		{"9999999TiB", 0, false},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for in, want := range map[int64]string{
		512: "512 B", 4 << 20: "4 MiB", 3 << 30: "3 GiB", 1536 << 20: "1536 MiB", 1433567 * 512: "700.0 MiB", 1000: "1000 B", 1500: "1.5 KiB",
	} {
		if got := formatSize(in); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", in, got, want)
		}
	}
}
