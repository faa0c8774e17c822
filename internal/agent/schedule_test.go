package agent

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestNextCheckDelay(t *testing.T) {
	const iv = 45 * time.Minute
	tests := []struct {
		name     string
		failures int
		poll     time.Duration
		rnd      float64
		want     time.Duration
	}{
		{"no jitter at the midpoint", 0, 0, 0.5, iv},
		{"earliest is -1/9", 0, 0, 0, iv - 5*time.Minute},
		{"latest approaches +1/9", 0, 0, 1, iv + 5*time.Minute},
		{"one failure doubles", 1, 0, 0.5, 90 * time.Minute},
		{"two failures", 2, 0, 0.5, 180 * time.Minute},
		{"capped at 4h", 3, 0, 0.5, MaxBackoff},
		{"cap holds for many failures", 40, 0, 0.5, MaxBackoff},
		{"server PollInterval replaces the interval", 0, 2 * time.Hour, 0.5, 2 * time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := NextCheckDelay(iv, tc.failures, tc.poll, tc.rnd); got != tc.want {
				t.Fatalf("NextCheckDelay = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestRebootWindow(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time {
		v, err := time.ParseInLocation("2006-01-02 15:04", s, berlin)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		start, length string
		now           string
		in            bool
		next          string
	}{
		// 2026-11-26 is a Thursday.
		{"Thu 23:00", "1h30m", "2026-11-26 23:30", true, "2026-11-26 23:30"},
		{"Thu 23:00", "1h30m", "2026-11-27 00:29", true, "2026-11-27 00:29"},
		{"Thu 23:00", "1h30m", "2026-11-27 00:30", false, "2026-12-03 23:00"},
		{"Thu 23:00", "1h30m", "2026-11-26 22:59", false, "2026-11-26 23:00"},
		{"Mon 01:00", "2h", "2026-11-26 12:00", false, "2026-11-30 01:00"},
		{"04:00", "1h", "2026-11-26 04:59", true, "2026-11-26 04:59"},
		{"04:00", "1h", "2026-11-26 05:00", false, "2026-11-27 04:00"},
		{"23:30", "1h", "2026-11-27 00:15", true, "2026-11-27 00:15"},
		// Across the end of daylight saving time (2026-10-25 in Berlin)
		// the window stays at 02:30 wall clock.
		{"02:30", "10m", "2026-10-25 12:00", false, "2026-10-26 02:30"},
	}
	for _, tc := range tests {
		w, err := ParseRebootWindow(tc.start, tc.length)
		if err != nil {
			t.Fatalf("%s/%s: %v", tc.start, tc.length, err)
		}
		now := at(tc.now)
		if got := w.Contains(now); got != tc.in {
			t.Errorf("%s+%s at %s: Contains = %v, want %v", tc.start, tc.length, tc.now, got, tc.in)
		}
		if got, want := w.Next(now), at(tc.next); !got.Equal(want) {
			t.Errorf("%s+%s at %s: Next = %s, want %s", tc.start, tc.length, tc.now, got, want)
		}
	}
	var none *RebootWindow
	if !none.Contains(time.Now()) {
		t.Error("no window must allow any time")
	}
	for _, bad := range [][2]string{{"Thu 23:00", ""}, {"", "1h"}, {"Thursday 23:00", "1h"}, {"25:00", "1h"}, {"23:00", "-1h"}, {"23:00", "25h"}, {"Thu 23:00", "200h"}} {
		if _, err := ParseRebootWindow(bad[0], bad[1]); err == nil {
			t.Errorf("ParseRebootWindow(%q, %q) accepted", bad[0], bad[1])
		}
	}
	if w, err := ParseRebootWindow("", ""); w != nil || err != nil {
		t.Errorf("empty window: %v, %v", w, err)
	}
}

func TestUpdateConfPrecedence(t *testing.T) {
	dir := t.TempDir()
	etc := filepath.Join(dir, "etc.conf")
	usr := filepath.Join(dir, "usr.conf")
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(etc, "# operator settings\nGROUP=\"beta\"\nexport REBOOT_STRATEGY='off'\nSERVER=https://a.example/v1/update/\nSERVER=https://b.example/v1/update/\n")
	write(usr, "SERVER=https://image-default.example/v1/update/\nGROUP=stable\nMACHINE_ALIAS=web-1\n")
	c, err := ReadUpdateConf([]string{etc, filepath.Join(dir, "missing.conf"), usr})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		KeyGroup: "beta", KeyRebootStrategy: "off", KeyServer: "https://b.example/v1/update/", KeyMachineAlias: "web-1",
	}
	for k, v := range want {
		if c.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, c.Get(k), v)
		}
	}
	if c.Source[KeyMachineAlias] != usr || c.Source[KeyGroup] != etc {
		t.Errorf("sources: %v", c.Source)
	}
	write(etc, "GROUP beta\n")
	if _, err := ReadUpdateConf([]string{etc}); err == nil {
		t.Error("a line without '=' was accepted")
	}
	write(etc, "GROUP=\"beta\n")
	if _, err := ReadUpdateConf([]string{etc}); err == nil {
		t.Error("an unterminated quote was accepted")
	}
}

func TestIdentityHelpers(t *testing.T) {
	cmd := "BOOT_IMAGE=/flatcar/vmlinuz-b mount.usr=/dev/mapper/usr verity.usr=PARTUUID=E03DD35C-7C2D-4A47-B3FE-27F15780A57C rootflags=rw"
	if got := BootedPartUUIDFromCmdline(cmd); got != "e03dd35c-7c2d-4a47-b3fe-27f15780a57c" {
		t.Errorf("verity cmdline: %q", got)
	}
	if got := BootedPartUUIDFromCmdline("mount.usr=PARTUUID=7130c94a-213a-4e5a-8e26-6cce9662f132"); got != "7130c94a-213a-4e5a-8e26-6cce9662f132" {
		t.Errorf("plain cmdline: %q", got)
	}
	if got := BootedPartUUIDFromCmdline("root=/dev/sda1"); got != "" {
		t.Errorf("no usr: %q", got)
	}
	hexSum := "de2b6998a30e854138258ac8a5a6a217765c0a3d9dcbedb7ff5aa8f8fb88ee4a"
	for _, in := range []string{hexSum, "3itpmKMOhUE4JYrIpaaiF3ZcCj2dy+23/1qo+PuI7ko="} {
		got, err := decodeSHA256(in)
		if err != nil || got != hexSum {
			t.Errorf("decodeSHA256(%q) = %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "abc", "AAAA"} {
		if _, err := decodeSHA256(bad); err == nil {
			t.Errorf("decodeSHA256(%q) accepted", bad)
		}
	}
}

func TestRebootWindows(t *testing.T) {
	conf := func(kv ...string) UpdateConf {
		c := UpdateConf{Values: map[string]string{}}
		for i := 0; i < len(kv); i += 2 {
			c.Values[kv[i]] = kv[i+1]
		}
		return c
	}
	rw, err := ParseRebootWindows(conf(KeyRebootWindowStart, "Thu 23:00", KeyRebootWindowLen, "1h",
		KeyRebootWindows, "Sat 02:00 4h;  ; 12:00 30m", KeyRebootTimezone, "America/New_York"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rw.Windows) != 3 {
		t.Fatalf("windows: %d", len(rw.Windows))
	}
	ny, _ := time.LoadLocation("America/New_York")
	at := func(s string) time.Time {
		v, err := time.ParseInLocation("2006-01-02 15:04", s, ny)
		if err != nil {
			t.Fatal(err)
		}
		return v.UTC() // the zone comes from the config, not the instant
	}
	for _, tc := range []struct {
		now  string
		in   bool
		next string
	}{
		{"2026-11-26 23:30", true, "2026-11-26 23:30"},  // Thursday window
		{"2026-11-28 05:59", true, "2026-11-28 05:59"},  // Saturday window
		{"2026-11-27 12:10", true, "2026-11-27 12:10"},  // daily noon window
		{"2026-11-27 13:00", false, "2026-11-28 02:00"}, // Saturday 02:00 opens before Saturday noon
		{"2026-11-28 07:00", false, "2026-11-28 12:00"},
	} {
		now := at(tc.now)
		if got := rw.Contains(now); got != tc.in {
			t.Errorf("%s: Contains = %v", tc.now, got)
		}
		if got := rw.Next(now); !got.Equal(at(tc.next)) {
			t.Errorf("%s: Next = %s, want %s", tc.now, got.In(ny), tc.next)
		}
	}
	if rw, err := ParseRebootWindows(conf()); err != nil || !rw.Contains(time.Now()) {
		t.Errorf("no windows: %v %v", rw, err)
	}
	for _, bad := range []UpdateConf{
		conf(KeyRebootWindows, "Thu 23:00"),
		conf(KeyRebootWindows, "Thu 25:00 1h"),
		conf(KeyRebootTimezone, "Mars/Olympus"),
	} {
		if _, err := ParseRebootWindows(bad); err == nil {
			t.Errorf("accepted %v", bad.Values)
		}
	}
}
