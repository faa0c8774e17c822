package rollout

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	// Tests must not depend on the host's zoneinfo files.
	_ "time/tzdata"
)

func mustLoad(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func TestParseWindowCanonical(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Mon-Fri 09:00-17:00", "Mon-Fri 09:00-17:00"},
		{"mon-fri 9:00-17:00", "Mon-Fri 09:00-17:00"},
		{"MON-FRI   09:00-17:00", "Mon-Fri 09:00-17:00"},
		{" Monday 09:00-17:00 ", "Mon 09:00-17:00"},
		{"Monday,Wednesday,Friday 08:30-12:15", "Mon,Wed,Fri 08:30-12:15"},
		{"Mon,Tue,Wed 09:00-17:00", "Mon-Wed 09:00-17:00"},
		{"Wed,Mon,Tue 09:00-17:00", "Mon-Wed 09:00-17:00"},
		{"Sat,Sun 00:00-24:00", "Sat,Sun 00:00-24:00"},
		{"Sat-Sun 00:00-24:00", "Sat,Sun 00:00-24:00"},
		{"Sun,Mon 01:00-02:00", "Mon,Sun 01:00-02:00"},
		{"Fri-Mon 22:00-02:00", "Fri-Mon 22:00-02:00"},
		{"Mon-Wed,Sat 09:00-17:00", "Mon-Wed,Sat 09:00-17:00"},
		{"Wed,Fri-Mon 09:00-17:00", "Wed,Fri-Mon 09:00-17:00"},
		{"Mon-Sun 09:00-17:00", "daily 09:00-17:00"},
		{"Tue-Mon 09:00-17:00", "daily 09:00-17:00"},
		{"daily 09:00-17:00", "daily 09:00-17:00"},
		{"DAILY 09:00-17:00", "daily 09:00-17:00"},
		{"* 00:00-24:00", "daily 00:00-24:00"},
		{"Mon-Mon 09:00-17:00", "Mon 09:00-17:00"},
		{"Mon,Mon 09:00-17:00", "Mon 09:00-17:00"},
		{"Sun 22:00-02:00", "Sun 22:00-02:00"},
		{"Sun 22:00-00:00", "Sun 22:00-24:00"},
		{"Mon 00:00-00:00", "Mon 00:00-24:00"},
		{"Mon 09:00-09:00", "Mon 09:00-09:00"},
		{"thu 23:59-24:00", "Thu 23:59-24:00"},
	}
	for _, tt := range tests {
		w, err := ParseWindow(tt.in)
		if err != nil {
			t.Errorf("ParseWindow(%q): %v", tt.in, err)
			continue
		}
		if got := w.String(); got != tt.want {
			t.Errorf("ParseWindow(%q).String() = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseWindowErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Mon-Fry 09:00-17:00", `window "Mon-Fry 09:00-17:00": unknown day "Fry"`},
		{"Mo 09:00-17:00", `window "Mo 09:00-17:00": unknown day "Mo"`},
		{"Mon,,Wed 09:00-17:00", `window "Mon,,Wed 09:00-17:00": empty day in "Mon,,Wed"`},
		{"Mon- 09:00-17:00", `window "Mon- 09:00-17:00": empty day in "Mon-"`},
		{"", `window "": want "DAYS HH:MM-HH:MM", e.g. "Mon-Fri 09:00-17:00"`},
		{"09:00-17:00", `window "09:00-17:00": want "DAYS HH:MM-HH:MM", e.g. "Mon-Fri 09:00-17:00"`},
		{"Mon 09:00 17:00", `window "Mon 09:00 17:00": want "DAYS HH:MM-HH:MM", e.g. "Mon-Fri 09:00-17:00"`},
		{"Mon, Wed 09:00-17:00", `window "Mon, Wed 09:00-17:00": want "DAYS HH:MM-HH:MM", e.g. "Mon-Fri 09:00-17:00"`},
		{"Mon 09:00", `window "Mon 09:00": times "09:00": want HH:MM-HH:MM`},
		{"Mon 9-17", `window "Mon 9-17": start time "9": want HH:MM`},
		{"Mon 09:0-17:00", `window "Mon 09:0-17:00": start time "09:0": want HH:MM`},
		{"Mon 09:00-17:00-18:00", `window "Mon 09:00-17:00-18:00": end time "17:00-18:00": want HH:MM`},
		{"Mon 25:00-17:00", `window "Mon 25:00-17:00": start time "25:00": hour out of range`},
		{"Mon 24:00-17:00", `window "Mon 24:00-17:00": start time "24:00": hour out of range`},
		{"Mon 09:00-24:01", `window "Mon 09:00-24:01": end time "24:01": hour out of range`},
		{"Mon 09:60-17:00", `window "Mon 09:60-17:00": start time "09:60": minute out of range`},
		{"Mon +9:00-17:00", `window "Mon +9:00-17:00": start time "+9:00": want HH:MM`},
		{"Mon 009:00-17:00", `window "Mon 009:00-17:00": start time "009:00": want HH:MM`},
	}
	for _, tt := range tests {
		_, err := ParseWindow(tt.in)
		if err == nil {
			t.Errorf("ParseWindow(%q): no error, want %q", tt.in, tt.want)
			continue
		}
		if err.Error() != tt.want {
			t.Errorf("ParseWindow(%q) error:\n got %q\nwant %q", tt.in, err, tt.want)
		}
		if !errors.Is(err, ErrInvalidWindow) {
			t.Errorf("ParseWindow(%q) error does not match ErrInvalidWindow", tt.in)
		}
	}
}

// TestWindowRoundTrip checks that String is canonical: it parses back to
// the same Window for every day set and a spread of times.
func TestWindowRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for mask := uint8(1); mask <= allDays; mask++ {
		for i := 0; i < 20; i++ {
			w := Window{days: mask, start: r.IntN(minutesPerDay), end: 1 + r.IntN(minutesPerDay)}
			got, err := ParseWindow(w.String())
			if err != nil {
				t.Fatalf("ParseWindow(%q): %v", w.String(), err)
			}
			if got != w {
				t.Fatalf("round trip of %q: got %+v, want %+v", w.String(), got, w)
			}
		}
	}
}

func TestWindowContains(t *testing.T) {
	// 2024-03-04 is a Monday.
	at := func(day int, hh, mm int) time.Time {
		return time.Date(2024, 3, day, hh, mm, 0, 0, time.UTC)
	}
	const (
		sun = 3
		mon = 4
		tue = 5
		fri = 8
		sat = 9
	)
	tests := []struct {
		window string
		t      time.Time
		want   bool
	}{
		// Start inclusive, end exclusive, at minute granularity.
		{"Mon-Fri 09:00-17:00", at(mon, 8, 59), false},
		{"Mon-Fri 09:00-17:00", at(mon, 9, 0), true},
		{"Mon-Fri 09:00-17:00", at(mon, 16, 59), true},
		{"Mon-Fri 09:00-17:00", at(mon, 16, 59).Add(59*time.Second + 999*time.Millisecond), true},
		{"Mon-Fri 09:00-17:00", at(mon, 17, 0), false},
		{"Mon-Fri 09:00-17:00", at(fri, 12, 0), true},
		{"Mon-Fri 09:00-17:00", at(sat, 12, 0), false},
		{"Mon-Fri 09:00-17:00", at(sun, 12, 0), false},
		// Cross-midnight windows belong to their start day.
		{"Sun 22:00-02:00", at(sun, 21, 59), false},
		{"Sun 22:00-02:00", at(sun, 22, 0), true},
		{"Sun 22:00-02:00", at(sun, 23, 59), true},
		{"Sun 22:00-02:00", at(mon, 0, 0), true},
		{"Sun 22:00-02:00", at(mon, 1, 59), true},
		{"Sun 22:00-02:00", at(mon, 2, 0), false},
		{"Sun 22:00-02:00", at(mon, 22, 0), false},
		{"Sun 22:00-02:00", at(sun, 1, 0), false}, // Saturday night is not in it
		{"Sat 22:00-02:00", at(sun, 1, 0), true},
		{"Fri-Mon 22:00-02:00", at(tue, 1, 0), true}, // Monday night
		{"Fri-Mon 22:00-02:00", at(fri, 1, 0), false},
		{"Fri-Mon 22:00-02:00", at(sat, 1, 0), true},
		{"Mon 09:00-09:00", at(mon, 8, 59), false},
		{"Mon 09:00-09:00", at(mon, 9, 0), true},
		{"Mon 09:00-09:00", at(tue, 8, 59), true},
		{"Mon 09:00-09:00", at(tue, 9, 0), false},
		// 24:00 and 00:00 ends.
		{"Mon 22:00-24:00", at(mon, 23, 59), true},
		{"Mon 22:00-24:00", at(tue, 0, 0), false},
		{"Mon 22:00-00:00", at(tue, 0, 0), false},
		{"daily 00:00-24:00", at(sat, 0, 0), true},
		{"daily 00:00-24:00", at(sat, 23, 59), true},
		{"* 00:00-00:00", at(tue, 12, 0), true},
	}
	for _, tt := range tests {
		w, err := ParseWindow(tt.window)
		if err != nil {
			t.Fatal(err)
		}
		if got := w.Contains(tt.t); got != tt.want {
			t.Errorf("%q.Contains(%s) = %v, want %v", tt.window, tt.t.Format("Mon 15:04:05"), got, tt.want)
		}
	}
	if (Window{}).Contains(at(mon, 12, 0)) {
		t.Error("zero Window contains a time")
	}
}

func TestInWindows(t *testing.T) {
	mon10 := time.Date(2024, 3, 4, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		windows []string
		tz      string
		now     time.Time
		want    bool
		wantErr string
	}{
		{"no windows is always", nil, "", mon10, true, ""},
		{"empty tz is UTC", []string{"Mon 10:00-11:00"}, "", mon10, true, ""},
		{"explicit UTC", []string{"Mon 10:00-11:00"}, "UTC", mon10, true, ""},
		{"any window", []string{"Sat 00:00-24:00", "Mon 09:00-10:01"}, "", mon10, true, ""},
		{"none matches", []string{"Sat 00:00-24:00", "Mon 09:00-10:00"}, "", mon10, false, ""},
		// 10:00 UTC is 19:00 in Tokyo.
		{"time zone applied", []string{"Mon 19:00-20:00"}, "Asia/Tokyo", mon10, true, ""},
		{"time zone applied, outside", []string{"Mon 10:00-11:00"}, "Asia/Tokyo", mon10, false, ""},
		// The time zone is checked even without windows: it is a config error either way.
		{"bad tz without windows", nil, "Mars/Olympus", mon10, false, `time zone "Mars/Olympus"`},
		{"bad tz", []string{"Mon 10:00-11:00"}, "Mars/Olympus", mon10, false, `time zone "Mars/Olympus"`},
		{"Local refused", []string{"Mon 10:00-11:00"}, "Local", mon10, false, `time zone "Local": want an IANA name`},
		{"bad window", []string{"Mon 10:00-11:00", "Mon-Fry 09:00-17:00"}, "", mon10, false, `window "Mon-Fry 09:00-17:00": unknown day "Fry"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := InWindows(tt.windows, tt.tz, tt.now)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("InWindows error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("InWindows = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestInWindowsDST checks that a Berlin office-hours window follows the wall
// clock on both sides of both DST switches of 2024 (31 March, 27 October).
// An implementation that used a fixed offset would be an hour off on one
// side of each switch.
func TestInWindowsDST(t *testing.T) {
	windows := []string{"Mon-Fri 09:00-17:00"}
	utc := func(month time.Month, day, hh, mm int) time.Time {
		return time.Date(2024, month, day, hh, mm, 0, 0, time.UTC)
	}
	tests := []struct {
		now  time.Time
		want bool
	}{
		// Friday 29 March, CET (UTC+1): 09:00–17:00 local is 08:00–16:00 UTC.
		{utc(time.March, 29, 7, 59), false},
		{utc(time.March, 29, 8, 0), true},
		{utc(time.March, 29, 15, 59), true},
		{utc(time.March, 29, 16, 0), false},
		// Monday 1 April, CEST (UTC+2): 07:00–15:00 UTC.
		{utc(time.April, 1, 6, 59), false},
		{utc(time.April, 1, 7, 0), true},
		{utc(time.April, 1, 14, 59), true},
		{utc(time.April, 1, 15, 0), false},
		// Friday 25 October, CEST.
		{utc(time.October, 25, 6, 59), false},
		{utc(time.October, 25, 7, 0), true},
		{utc(time.October, 25, 15, 0), false},
		// Monday 28 October, CET again.
		{utc(time.October, 28, 7, 0), false},
		{utc(time.October, 28, 8, 0), true},
		{utc(time.October, 28, 15, 59), true},
		{utc(time.October, 28, 16, 0), false},
	}
	for _, tt := range tests {
		got, err := InWindows(windows, "Europe/Berlin", tt.now)
		if err != nil {
			t.Fatal(err)
		}
		if got != tt.want {
			t.Errorf("InWindows(%v) at %s = %v, want %v", windows, tt.now.Format(time.RFC3339), got, tt.want)
		}
	}
}

func TestNextWindowStart(t *testing.T) {
	utc := func(month time.Month, day, hh, mm int) time.Time {
		return time.Date(2024, month, day, hh, mm, 0, 0, time.UTC)
	}
	tests := []struct {
		name    string
		windows []string
		tz      string
		now     time.Time
		want    time.Time
		wantOK  bool
	}{
		{"no windows", nil, "", utc(3, 4, 10, 0), time.Time{}, false},
		{"inside returns now", []string{"Mon 09:00-17:00"}, "", utc(3, 4, 10, 0), utc(3, 4, 10, 0), true},
		{"later today", []string{"Mon 12:00-13:00"}, "", utc(3, 4, 10, 0), utc(3, 4, 12, 0), true},
		{"just after the end", []string{"Mon 09:00-10:00"}, "", utc(3, 4, 10, 0), utc(3, 11, 9, 0), true},
		{"earliest of several", []string{"Wed 09:00-10:00", "Tue 18:00-19:00"}, "", utc(3, 4, 10, 0), utc(3, 5, 18, 0), true},
		{"next week", []string{"Mon 09:00-10:00"}, "", utc(3, 4, 10, 0), utc(3, 11, 9, 0), true},
		// Saturday before the spring switch: Monday 09:00 CEST is 07:00 UTC.
		{"across spring switch", []string{"Mon-Fri 09:00-17:00"}, "Europe/Berlin", utc(3, 30, 12, 0), utc(4, 1, 7, 0), true},
		{"across autumn switch", []string{"Mon-Fri 09:00-17:00"}, "Europe/Berlin", utc(10, 26, 12, 0), utc(10, 28, 8, 0), true},
		// 02:30 does not exist on 31 March in Berlin; the clock jumps from
		// 02:00 CET (01:00 UTC) to 03:00 CEST, into the window.
		{"start in spring gap", []string{"Sun 02:30-04:00"}, "Europe/Berlin", utc(3, 31, 0, 0), utc(3, 31, 1, 0), true},
		// 02:30 happens twice on 27 October: first in CEST (00:30 UTC)…
		{"start in autumn overlap, first", []string{"Sun 02:30-02:45"}, "Europe/Berlin", utc(10, 27, 0, 0), utc(10, 27, 0, 30), true},
		// …and again in CET (01:30 UTC).
		{"start in autumn overlap, second", []string{"Sun 02:30-02:45"}, "Europe/Berlin", utc(10, 27, 0, 50), utc(10, 27, 1, 30), true},
		// A window entirely in the gap opens the next week only.
		{"window in spring gap", []string{"Sun 02:10-02:50"}, "Europe/Berlin", utc(3, 30, 12, 0), utc(4, 7, 0, 10), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := NextWindowStart(tt.windows, tt.tz, tt.now)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tt.wantOK || !got.Equal(tt.want) {
				t.Errorf("NextWindowStart = %v, %v, want %v, %v", got, ok, tt.want, tt.wantOK)
			}
			if ok && tt.tz == "Europe/Berlin" && got.Location().String() != "Europe/Berlin" {
				t.Errorf("result in %v, want Europe/Berlin", got.Location())
			}
		})
	}
	if _, _, err := NextWindowStart([]string{"Mon 09:00-17:00"}, "Mars/Olympus", utc(3, 4, 10, 0)); err == nil {
		t.Error("no error for an unknown time zone")
	}
	if _, _, err := NextWindowStart([]string{"Mon-Fry 09:00-17:00"}, "", utc(3, 4, 10, 0)); !errors.Is(err, ErrInvalidWindow) {
		t.Errorf("error %v does not match ErrInvalidWindow", err)
	}
}

// TestNextWindowStartBruteForce compares NextWindowStart with a minute-by-
// minute scan using InWindows, in zones with awkward transitions (half-hour
// DST, transitions at midnight, a skipped calendar day), around their
// transitions and at random times.
func TestNextWindowStartBruteForce(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	zones := []string{
		"UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe",
		"America/Havana", "America/Santiago", "Asia/Kolkata", "Pacific/Apia",
	}
	r := rand.New(rand.NewPCG(5, 6))
	randomWindow := func() string {
		w := Window{days: uint8(1 + r.IntN(allDays)), start: r.IntN(minutesPerDay), end: 1 + r.IntN(minutesPerDay)}
		if r.IntN(2) == 0 {
			// Short windows around typical transition hours make gaps and
			// overlaps likely to matter.
			w.start = r.IntN(5)*60 + 15*r.IntN(4)
			w.end = w.start + 15 + 15*r.IntN(8)
		}
		return w.String()
	}
	for _, zone := range zones {
		loc := mustLoad(t, zone)
		// Times to start from: near each transition in 2011 (Apia skipped
		// 30 December 2011) and 2024, and random times.
		var nows []time.Time
		for _, year := range []int{2011, 2024} {
			tt := time.Date(year, 1, 1, 0, 0, 0, 0, loc)
			for i := 0; i < 4; i++ {
				_, end := tt.ZoneBounds()
				if end.IsZero() || end.Year() > year {
					break
				}
				for _, d := range []time.Duration{-50 * time.Hour, -3 * time.Hour, -90 * time.Minute, -30 * time.Minute, -time.Minute, 0, time.Minute, 30 * time.Minute} {
					nows = append(nows, end.Add(d))
				}
				tt = end
			}
		}
		for i := 0; i < 10; i++ {
			nows = append(nows, time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(r.IntN(366*24*60))*time.Minute))
		}
		for _, now := range nows {
			windows := []string{randomWindow()}
			if r.IntN(3) == 0 {
				windows = append(windows, randomWindow())
			}
			got, ok, err := NextWindowStart(windows, zone, now)
			if err != nil {
				t.Fatal(err)
			}
			want, wantOK := bruteNextWindow(t, windows, zone, now)
			if ok != wantOK || !got.Equal(want) {
				t.Errorf("%s %v from %s: got %v, %v; brute force %v, %v", zone, windows, now.In(loc), got, ok, want.In(loc), wantOK)
			}
		}
	}
}

func bruteNextWindow(t *testing.T, windows []string, zone string, now time.Time) (time.Time, bool) {
	t.Helper()
	for m := 0; m <= searchDays*24*60; m++ {
		at := now.Add(time.Duration(m) * time.Minute)
		in, err := InWindows(windows, zone, at)
		if err != nil {
			t.Fatal(err)
		}
		if in {
			return at, true
		}
	}
	return time.Time{}, false
}

func ExampleParseWindow() {
	w, err := ParseWindow("sunday 22:00-02:00")
	if err != nil {
		panic(err)
	}
	mondayNight := time.Date(2024, 3, 4, 1, 30, 0, 0, time.UTC)
	fmt.Println(w, w.Contains(mondayNight))
	// Output: Sun 22:00-02:00 true
}
