package fleet

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/flotilla/flotilla/internal/fleet/unitfile"
)

// Driver runs units on one machine. The unit agent calls it from one
// goroutine at a time per unit, but State may be called concurrently with
// Start and Stop of other units.
type Driver interface {
	// Start makes the unit run with the given body. Starting a unit that
	// runs with the same body (Hash) does nothing; with another body the
	// driver restarts it.
	Start(ctx context.Context, f *unitfile.File) error
	// Stop stops the unit and waits until it has stopped (or ctx ends).
	// Stopping an unknown or stopped unit does nothing.
	Stop(ctx context.Context, name string) error
	// State reports the unit's state in systemd's terms; Load is
	// "not-found" for a unit the driver does not know.
	State(ctx context.Context, name string) (DriverState, error)
}

// Loader is implemented by drivers that distinguish a loaded unit (known
// to the init system, not started) from an unknown one, as systemd does.
// The agent loads units whose desired state is loaded and unloads units
// no longer assigned to the machine.
type Loader interface {
	Load(ctx context.Context, f *unitfile.File) error
	Unload(ctx context.Context, name string) error
}

// DriverState is a unit's state as a driver sees it.
type DriverState struct {
	Load   string // loaded, not-found
	Active string // active, activating, deactivating, inactive, failed
	Sub    string // running, start-pre, auto-restart, stop, dead, failed, ...
	Hash   string // hash of the body the unit runs with, if known
	Starts int    // times the main process was started, where known
}

// serviceSpec is what the process driver takes from a [Service] section.
type serviceSpec struct {
	pre         []execLine
	start       execLine
	stop        []execLine
	restart     string // no, always, on-failure, on-success
	restartSec  time.Duration
	stopTimeout time.Duration
	env         []string
	dir         string
}

type execLine struct {
	argv          []string
	ignoreFailure bool // "-" prefix
}

// parseService reads the [Service] options the process driver honours.
// Unsupported options are ignored: the driver is for development and
// hosts without systemd, not a systemd replacement.
func parseService(f *unitfile.File) (serviceSpec, error) {
	sp := serviceSpec{restart: "no", restartSec: 100 * time.Millisecond, stopTimeout: 10 * time.Second}
	env := map[string]string{}
	for _, e := range f.Values("Service", "Environment") {
		words, err := unitfile.SplitCommand(e)
		if err != nil {
			return sp, fmt.Errorf("Environment: %w", err)
		}
		for _, w := range words {
			if k, v, ok := strings.Cut(w, "="); ok {
				env[k] = v
				sp.env = append(sp.env, w)
			}
		}
	}
	parse := func(key, line string) (execLine, error) {
		var el execLine
		line = unitfile.Expand(strings.TrimSpace(line), f.Name)
		for len(line) > 0 && strings.ContainsRune("-@+!:", rune(line[0])) {
			if line[0] == '-' {
				el.ignoreFailure = true
			}
			line = line[1:]
		}
		argv, err := unitfile.SplitCommand(line)
		if err != nil {
			return el, fmt.Errorf("%s: %w", key, err)
		}
		if len(argv) == 0 {
			return el, fmt.Errorf("%s: empty command", key)
		}
		for i, a := range argv {
			argv[i] = expandEnv(a, env)
		}
		el.argv = argv
		return el, nil
	}
	starts := f.Values("Service", "ExecStart")
	if len(starts) != 1 {
		return sp, fmt.Errorf("want exactly one ExecStart, have %d", len(starts))
	}
	var err error
	if sp.start, err = parse("ExecStart", starts[0]); err != nil {
		return sp, err
	}
	for _, l := range f.Values("Service", "ExecStartPre") {
		el, err := parse("ExecStartPre", l)
		if err != nil {
			return sp, err
		}
		sp.pre = append(sp.pre, el)
	}
	for _, l := range f.Values("Service", "ExecStop") {
		el, err := parse("ExecStop", l)
		if err != nil {
			return sp, err
		}
		sp.stop = append(sp.stop, el)
	}
	if r, ok := f.Value("Service", "Restart"); ok {
		switch r {
		case "no", "always", "on-failure", "on-success":
			sp.restart = r
		case "on-abnormal", "on-abort", "on-watchdog":
			sp.restart = "on-failure"
		default:
			return sp, fmt.Errorf("Restart=%s: unknown policy", r)
		}
	}
	if v, ok := f.Value("Service", "RestartSec"); ok {
		if sp.restartSec, err = parseSeconds(v); err != nil {
			return sp, fmt.Errorf("RestartSec: %w", err)
		}
	}
	if v, ok := f.Value("Service", "TimeoutStopSec"); ok {
		if sp.stopTimeout, err = parseSeconds(v); err != nil {
			return sp, fmt.Errorf("TimeoutStopSec: %w", err)
		}
	}
	sp.dir, _ = f.Value("Service", "WorkingDirectory")
	return sp, nil
}

// expandEnv substitutes $NAME and ${NAME} for variables the unit defines
// with Environment=, and $$ with $. Other references are left alone so
// that shell scripts in ExecStart keep their own variables (systemd would
// replace unknown ones with nothing; scripts written for it use $$).
func expandEnv(s string, env map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		if s[i+1] == '$' {
			b.WriteByte('$')
			i++
			continue
		}
		name, width := "", 0
		if s[i+1] == '{' {
			if end := strings.IndexByte(s[i+2:], '}'); end >= 0 {
				name, width = s[i+2:i+2+end], end+3
			}
		} else {
			j := i + 1
			for j < len(s) && (s[j] == '_' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= 'a' && s[j] <= 'z' || s[j] >= '0' && s[j] <= '9') {
				j++
			}
			name, width = s[i+1:j], j-i
		}
		if v, ok := env[name]; ok && name != "" {
			b.WriteString(v)
			i += width - 1
			continue
		}
		b.WriteByte('$')
	}
	return b.String()
}

// parseSeconds parses systemd time spans: a bare number is seconds,
// otherwise Go duration syntax with "min" accepted for minutes.
func parseSeconds(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		return time.Duration(n * float64(time.Second)), nil
	}
	v = strings.ReplaceAll(strings.ReplaceAll(v, "min", "m"), " ", "")
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("parse time span %q: %w", v, err)
	}
	return d, nil
}
