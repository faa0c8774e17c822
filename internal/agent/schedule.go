package agent

import (
	"fmt"
	"strings"
	"time"
)

// MaxBackoff caps the wait after repeated failed checks, as the issue and
// update_engine's scheduler do: a broken server must not be hammered, and a
// repaired one must be found again within hours.
const MaxBackoff = 4 * time.Hour

// NextCheckDelay is the pure scheduling rule. With no failures it is the
// interval with ±1/9 jitter (±5 min of update_engine's 45 min), so machines
// booted together spread out. After n consecutive failures it doubles n
// times, capped at MaxBackoff. rnd is uniform in [0,1); a pollInterval from
// the server's last answer replaces the interval once it is positive.
func NextCheckDelay(interval time.Duration, failures int, pollInterval time.Duration, rnd float64) time.Duration {
	if pollInterval > 0 {
		interval = pollInterval
	}
	d := interval
	for i := 0; i < failures && d < MaxBackoff; i++ {
		d *= 2
	}
	if d > MaxBackoff {
		d = MaxBackoff
	}
	jitter := time.Duration((rnd*2 - 1) * float64(d) / 9)
	d += jitter
	if d < time.Second {
		d = time.Second
	}
	return d
}

// RebootWindow is a locksmith reboot window: a start (daily, or on one
// weekday) and a length. Times are in the location of the instant passed in.
type RebootWindow struct {
	// Weekday is the day the window opens; Daily when every day.
	Weekday time.Weekday
	Daily   bool
	// Start is the offset from midnight.
	Start  time.Duration
	Length time.Duration
}

var weekdays = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// ParseRebootWindow parses LOCKSMITHD_REBOOT_WINDOW_START ("23:00" daily or
// "Thu 23:00") and _LENGTH (a Go duration such as "1h30m"). Both empty means
// no window (nil, nil); one without the other is an error, as in locksmith.
func ParseRebootWindow(start, length string) (*RebootWindow, error) {
	start, length = strings.TrimSpace(start), strings.TrimSpace(length)
	if start == "" && length == "" {
		return nil, nil
	}
	if start == "" || length == "" {
		return nil, fmt.Errorf("reboot window: set both %s and %s", KeyRebootWindowStart, KeyRebootWindowLen)
	}
	w := &RebootWindow{Daily: true}
	clock := start
	if day, rest, ok := strings.Cut(start, " "); ok {
		wd, known := weekdays[strings.ToLower(day)]
		if !known || len(day) != 3 {
			return nil, fmt.Errorf("reboot window: start %q: unknown day %q (want Mon…Sun)", start, day)
		}
		w.Weekday, w.Daily = wd, false
		clock = strings.TrimSpace(rest)
	}
	t, err := time.Parse("15:04", clock)
	if err != nil {
		return nil, fmt.Errorf("reboot window: start %q: want HH:MM, optionally after a day (\"Thu 23:00\")", start)
	}
	w.Start = time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute
	w.Length, err = time.ParseDuration(length)
	if err != nil || w.Length <= 0 {
		return nil, fmt.Errorf("reboot window: length %q: want a positive duration such as 1h30m", length)
	}
	period := 24 * time.Hour
	if !w.Daily {
		period *= 7
	}
	if w.Length > period {
		return nil, fmt.Errorf("reboot window: length %s is longer than the %s period", w.Length, period)
	}
	return w, nil
}

// lastOpening is the latest window opening at or before now.
func (w *RebootWindow) lastOpening(now time.Time) time.Time {
	y, m, d := now.Date()
	back := 0
	if !w.Daily {
		back = (int(now.Weekday()) - int(w.Weekday) + 7) % 7
	}
	open := w.at(now.Location(), y, m, d-back)
	if open.After(now) {
		if w.Daily {
			back++
		} else {
			back += 7
		}
		open = w.at(now.Location(), y, m, d-back)
	}
	return open
}

// Contains reports whether now is inside the window. A nil window allows
// any time.
func (w *RebootWindow) Contains(now time.Time) bool {
	if w == nil {
		return true
	}
	return now.Before(w.lastOpening(now).Add(w.Length))
}

// Next returns now when the window is open, else when it opens next.
func (w *RebootWindow) Next(now time.Time) time.Time {
	if w.Contains(now) {
		return now
	}
	open := w.lastOpening(now)
	y, m, d := open.Date()
	days := 1
	if !w.Daily {
		days = 7
	}
	return w.at(now.Location(), y, m, d+days)
}

// at is the opening on the given calendar day, by wall clock, so that a
// 23:00 window stays at 23:00 across daylight-saving changes.
func (w *RebootWindow) at(loc *time.Location, y int, m time.Month, d int) time.Time {
	return time.Date(y, m, d, int(w.Start/time.Hour), int(w.Start%time.Hour/time.Minute), 0, 0, loc)
}

// RebootWindows is every window a machine may reboot in, in one time zone.
// No window means any time.
type RebootWindows struct {
	Windows []*RebootWindow
	Loc     *time.Location
}

// ParseRebootWindows reads the windows of an update.conf: locksmith's
// LOCKSMITHD_REBOOT_WINDOW_START/_LENGTH pair, plus any number in
// REBOOT_WINDOWS ("Thu 23:00 1h30m; Sat 02:00 4h"), in REBOOT_TIMEZONE (an
// IANA name; default the machine's local time).
func ParseRebootWindows(c UpdateConf) (RebootWindows, error) {
	rw := RebootWindows{Loc: time.Local}
	if tz := strings.TrimSpace(c.Get(KeyRebootTimezone)); tz != "" {
		loc, err := time.LoadLocation(tz)
		if err != nil {
			return rw, fmt.Errorf("reboot window: %s=%q: %w", KeyRebootTimezone, tz, err)
		}
		rw.Loc = loc
	}
	w, err := ParseRebootWindow(c.Get(KeyRebootWindowStart), c.Get(KeyRebootWindowLen))
	if err != nil {
		return rw, err
	}
	if w != nil {
		rw.Windows = append(rw.Windows, w)
	}
	for _, item := range strings.Split(c.Get(KeyRebootWindows), ";") {
		f := strings.Fields(item)
		if len(f) == 0 {
			continue
		}
		if len(f) < 2 {
			return rw, fmt.Errorf("reboot window %q in %s: want START LENGTH, e.g. \"Thu 23:00 1h30m\"", strings.TrimSpace(item), KeyRebootWindows)
		}
		w, err := ParseRebootWindow(strings.Join(f[:len(f)-1], " "), f[len(f)-1])
		if err != nil {
			return rw, err
		}
		rw.Windows = append(rw.Windows, w)
	}
	return rw, nil
}

// Contains reports whether now is inside any window.
func (rw RebootWindows) Contains(now time.Time) bool {
	if len(rw.Windows) == 0 {
		return true
	}
	now = now.In(rw.Loc)
	for _, w := range rw.Windows {
		if w.Contains(now) {
			return true
		}
	}
	return false
}

// Next is now when a window is open, else the earliest opening.
func (rw RebootWindows) Next(now time.Time) time.Time {
	if rw.Contains(now) {
		return now
	}
	now = now.In(rw.Loc)
	var best time.Time
	for _, w := range rw.Windows {
		if n := w.Next(now); best.IsZero() || n.Before(best) {
			best = n
		}
	}
	return best
}
