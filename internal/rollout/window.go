package rollout

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrInvalidWindow is wrapped by every error ParseWindow returns, so callers
// can tell a bad window from, say, an unknown time zone.
var ErrInvalidWindow = errors.New("invalid update window")

// minutesPerDay is also the largest end of a window ("24:00").
const minutesPerDay = 24 * 60

// Window is a weekly update window such as "Mon-Fri 09:00-17:00". It is a
// comparable value; the zero Window contains no time at all.
//
// A window that ends at or before its start crosses midnight and belongs to
// its start day: "Sun 22:00-02:00" is Sunday 22:00 to Monday 02:00.
type Window struct {
	days  uint8 // bit i set: starts on time.Weekday(i)
	start int   // minutes after midnight, 0–1439
	end   int   // minutes after midnight, 1–1440; end <= start crosses midnight
}

// windowError names the window and what is wrong with it, and matches
// ErrInvalidWindow under errors.Is without repeating its text.
type windowError struct {
	window string
	msg    string
}

func (e *windowError) Error() string        { return fmt.Sprintf("window %q: %s", e.window, e.msg) }
func (e *windowError) Is(target error) bool { return target == ErrInvalidWindow }

// dayNames maps the accepted spellings (lower case) to weekdays.
var dayNames = map[string]time.Weekday{
	"sun": time.Sunday, "sunday": time.Sunday,
	"mon": time.Monday, "monday": time.Monday,
	"tue": time.Tuesday, "tuesday": time.Tuesday,
	"wed": time.Wednesday, "wednesday": time.Wednesday,
	"thu": time.Thursday, "thursday": time.Thursday,
	"fri": time.Friday, "friday": time.Friday,
	"sat": time.Saturday, "saturday": time.Saturday,
}

const allDays = 1<<7 - 1

// ParseWindow parses a weekly update window "DAYS HH:MM-HH:MM". Case does
// not matter. DAYS is one of:
//
//   - a day: "Mon" or "Monday";
//   - a range: "Mon-Fri"; ranges may wrap around the week: "Fri-Mon" is
//     Friday, Saturday, Sunday and Monday;
//   - a comma-separated list whose items are days or ranges: "Mon,Wed,Fri",
//     "Mon-Wed,Sat";
//   - "daily" or "*": every day.
//
// Times are 24-hour wall-clock times; the end may be "24:00". The start is
// inclusive and the end exclusive. An end at or before the start makes the
// window cross midnight into the next day: "Sun 22:00-02:00" is Sunday 22:00
// to Monday 02:00, and "Mon 09:00-09:00" is 24 hours from Monday 09:00.
//
// Errors name the bad part, e.g.
// window "Mon-Fry 09:00-17:00": unknown day "Fry".
func ParseWindow(s string) (Window, error) {
	bad := func(format string, args ...any) (Window, error) {
		return Window{}, &windowError{window: s, msg: fmt.Sprintf(format, args...)}
	}
	fields := strings.Fields(s)
	if len(fields) != 2 {
		return bad(`want "DAYS HH:MM-HH:MM", e.g. "Mon-Fri 09:00-17:00"`)
	}
	days, err := parseDays(fields[0])
	if err != nil {
		return bad("%s", err)
	}
	from, to, ok := strings.Cut(fields[1], "-")
	if !ok {
		return bad("times %q: want HH:MM-HH:MM", fields[1])
	}
	start, err := parseClock(from, false)
	if err != nil {
		return bad("start %s", err)
	}
	end, err := parseClock(to, true)
	if err != nil {
		return bad("end %s", err)
	}
	if end == 0 {
		// Ending at 00:00 is ending at midnight, i.e. 24:00 of the start day;
		// one spelling keeps Window values (and String) canonical.
		end = minutesPerDay
	}
	return Window{days: days, start: start, end: end}, nil
}

func parseDays(s string) (uint8, error) {
	ls := strings.ToLower(s)
	if ls == "daily" || ls == "*" {
		return allDays, nil
	}
	day := func(name string) (time.Weekday, error) {
		d, ok := dayNames[strings.ToLower(name)]
		if !ok {
			if name == "" {
				return 0, fmt.Errorf("empty day in %q", s)
			}
			return 0, fmt.Errorf("unknown day %q", name)
		}
		return d, nil
	}
	var mask uint8
	for _, item := range strings.Split(s, ",") {
		first, last, isRange := strings.Cut(item, "-")
		a, err := day(first)
		if err != nil {
			return 0, err
		}
		b := a
		if isRange {
			if b, err = day(last); err != nil {
				return 0, err
			}
		}
		// Walk forward from a to b, wrapping after Saturday, so "Fri-Mon"
		// covers the weekend.
		for d := a; ; d = (d + 1) % 7 {
			mask |= 1 << d
			if d == b {
				break
			}
		}
	}
	return mask, nil
}

// parseClock parses "H:MM" or "HH:MM" into minutes after midnight. "24:00"
// is only valid as an end.
func parseClock(s string, isEnd bool) (int, error) {
	hh, mm, ok := strings.Cut(s, ":")
	if !ok || len(hh) < 1 || len(hh) > 2 || len(mm) != 2 || !digits(hh) || !digits(mm) {
		return 0, fmt.Errorf("time %q: want HH:MM", s)
	}
	h, _ := strconv.Atoi(hh)
	m, _ := strconv.Atoi(mm)
	switch {
	case h == 24 && m == 0 && isEnd:
		return minutesPerDay, nil
	case h > 23:
		return 0, fmt.Errorf("time %q: hour out of range", s)
	case m > 59:
		return 0, fmt.Errorf("time %q: minute out of range", s)
	}
	return h*60 + m, nil
}

func digits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func (w Window) has(d time.Weekday) bool { return w.days&(1<<d) != 0 }

// crossesMidnight reports whether the window ends on the day after it starts.
func (w Window) crossesMidnight() bool { return w.end <= w.start }

// Contains reports whether t falls inside the window, judged by t's wall
// clock in t's own location; convert t to the policy's time zone first.
// Judging by the wall clock is what makes windows follow daylight saving
// time. Seconds are ignored, so the start minute is inside and the end
// minute outside.
func (w Window) Contains(t time.Time) bool {
	m := t.Hour()*60 + t.Minute()
	wd := t.Weekday()
	if !w.crossesMidnight() {
		return w.has(wd) && m >= w.start && m < w.end
	}
	if w.has(wd) && m >= w.start {
		return true
	}
	// The tail of a window that started yesterday.
	return w.has((wd+6)%7) && m < w.end
}

// String returns the canonical form of a window from ParseWindow, which
// ParseWindow parses back to the same Window: three-letter day names in Monday-first order,
// runs of three or more days as ranges ("Mon-Fri", "Fri-Mon"), every day as
// "daily", zero-padded times, and a midnight end as "24:00".
func (w Window) String() string {
	return w.daysString() + " " + clock(w.start) + "-" + clock(w.end)
}

func clock(m int) string { return fmt.Sprintf("%02d:%02d", m/60, m%60) }

var shortDay = [7]string{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}

func (w Window) daysString() string {
	switch w.days & allDays {
	case 0:
		return "none"
	case allDays:
		return "daily"
	}
	// Work in Monday-first positions 0–6 so the output reads like a week.
	set := func(pos int) bool { return w.has(time.Weekday((pos + 1) % 7)) }
	name := func(pos int) string { return shortDay[(pos+1)%7] }
	type item struct{ first, n int }
	var items []item
	for pos := 0; pos < 7; pos++ {
		// A run starts at a set day whose predecessor (circularly) is unset;
		// not every day is set, so each run has exactly one such start.
		if !set(pos) || set((pos+6)%7) {
			continue
		}
		n := 1
		for set((pos + n) % 7) {
			n++
		}
		if n == 2 {
			// "Sat,Sun" reads better than "Sat-Sun".
			items = append(items, item{pos, 1}, item{(pos + 1) % 7, 1})
		} else {
			items = append(items, item{pos, n})
		}
	}
	sort.Slice(items, func(i, j int) bool { return items[i].first < items[j].first })
	parts := make([]string, len(items))
	for i, it := range items {
		parts[i] = name(it.first)
		if it.n > 1 {
			parts[i] += "-" + name((it.first+it.n-1)%7)
		}
	}
	return strings.Join(parts, ",")
}

// parseWindows parses every window, naming the first bad one.
func parseWindows(windows []string) ([]Window, error) {
	ws := make([]Window, len(windows))
	for i, s := range windows {
		w, err := ParseWindow(s)
		if err != nil {
			return nil, err
		}
		ws[i] = w
	}
	return ws, nil
}

func anyContains(ws []Window, t time.Time) bool {
	for _, w := range ws {
		if w.Contains(t) {
			return true
		}
	}
	return false
}

// locations caches loaded time zones by name. time.LoadLocation reads and
// parses a zoneinfo file on every call, and InWindows runs on every update
// check; a *time.Location is immutable, so sharing one is safe. Only
// successful loads are cached, which bounds the cache by the tz database.
var locations sync.Map // string → *time.Location

// loadLocation resolves a policy time zone: "" and "UTC" are UTC, anything
// else an IANA name. "Local" is refused because it would make the policy's
// meaning depend on the server's configuration, and differ between replicas.
func loadLocation(name string) (*time.Location, error) {
	if name == "" || name == "UTC" {
		return time.UTC, nil
	}
	if name == "Local" {
		return nil, fmt.Errorf("time zone %q: want an IANA name such as \"Europe/Berlin\"", name)
	}
	if v, ok := locations.Load(name); ok {
		return v.(*time.Location), nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("time zone %q: %w", name, err)
	}
	locations.Store(name, loc)
	return loc, nil
}

// InWindows reports whether now falls inside at least one of windows,
// interpreted in the IANA time zone timeZone ("" means UTC). No windows
// means no restriction, so the result is true. An unknown time zone (even
// without windows) or an unparsable window is an error, never silently
// "open" or "closed".
func InWindows(windows []string, timeZone string, now time.Time) (bool, error) {
	loc, err := loadLocation(timeZone)
	if err != nil {
		return false, err
	}
	if len(windows) == 0 {
		return true, nil
	}
	ws, err := parseWindows(windows)
	if err != nil {
		return false, err
	}
	return anyContains(ws, now.In(loc)), nil
}

// searchDays bounds NextWindowStart's search. One week covers every weekly
// window; the second week covers a window whose only weekly occurrence fell
// into a daylight-saving gap this week.
const searchDays = 15

// NextWindowStart returns the earliest time at or after now at which an
// update window is open, in the windows' time zone: now itself when now is
// inside a window, otherwise the moment the next window opens. It is what
// an operator wants to see as "next window opens at …".
//
// ok is false when there are no windows (there is nothing to wait for) or,
// in pathological cases, no window opens within the next two weeks.
//
// Openings are exact across daylight-saving changes: a window whose start
// falls into a spring-forward gap opens when the clock jumps past its
// start, and a start that occurs twice in a fall-back hour opens at the
// first occurrence after now.
func NextWindowStart(windows []string, tz string, now time.Time) (time.Time, bool, error) {
	loc, err := loadLocation(tz)
	if err != nil {
		return time.Time{}, false, err
	}
	if len(windows) == 0 {
		return time.Time{}, false, nil
	}
	ws, err := parseWindows(windows)
	if err != nil {
		return time.Time{}, false, err
	}
	local := now.In(loc)
	if anyContains(ws, local) {
		return local, true, nil
	}
	// now is outside every window, so the first time after now at which one
	// is open is an opening: the wall clock either runs through a window's
	// start, or a zone transition makes it jump into a window. Collect both
	// kinds of candidate and take the earliest.
	horizon := now.Add(searchDays * 24 * time.Hour)
	var best time.Time
	consider := func(t time.Time) {
		if t.After(now) && !t.After(horizon) && (best.IsZero() || t.Before(best)) {
			best = t
		}
	}
	y, m, d := local.Date()
	// Start a day early: a zone that falls back across midnight repeats part
	// of yesterday after now.
	for i := -1; i <= searchDays; i++ {
		day := time.Date(y, m, d+i, 0, 0, 0, 0, time.UTC) // calendar only
		for _, w := range ws {
			if w.has(day.Weekday()) {
				for _, t := range wallInstants(day, w.start, loc) {
					consider(t)
				}
			}
		}
	}
	for t := local; ; {
		_, end := t.ZoneBounds()
		if end.IsZero() || end.After(horizon) {
			break
		}
		if anyContains(ws, end.In(loc)) && !anyContains(ws, end.Add(-time.Nanosecond).In(loc)) {
			consider(end)
		}
		t = end.In(loc)
	}
	if best.IsZero() {
		return time.Time{}, false, nil
	}
	return best.In(loc), true, nil
}

// wallInstants returns every instant at which loc's wall clock reads the
// given minute of the given calendar day: none in a spring-forward gap, two
// in a fall-back overlap, one otherwise. time.Date alone picks just one of
// two overlapping instants, so the neighbouring zones' offsets are tried
// as well.
func wallInstants(day time.Time, minute int, loc *time.Location) []time.Time {
	y, m, d := day.Date()
	hh, mm := minute/60, minute%60
	matches := func(t time.Time) bool {
		ty, tm, td := t.Date()
		return ty == y && tm == m && td == d && t.Hour() == hh && t.Minute() == mm && t.Second() == 0
	}
	c := time.Date(y, m, d, hh, mm, 0, 0, loc)
	_, off := c.Zone()
	cands := []time.Time{c}
	start, end := c.ZoneBounds()
	if !start.IsZero() {
		_, o := start.Add(-time.Nanosecond).In(loc).Zone()
		cands = append(cands, c.Add(time.Duration(off-o)*time.Second))
	}
	if !end.IsZero() {
		_, o := end.In(loc).Zone()
		cands = append(cands, c.Add(time.Duration(off-o)*time.Second))
	}
	var out []time.Time
	for _, t := range cands {
		t = t.In(loc)
		if !matches(t) {
			continue
		}
		dup := false
		for _, u := range out {
			dup = dup || u.Equal(t)
		}
		if !dup {
			out = append(out, t)
		}
	}
	return out
}
