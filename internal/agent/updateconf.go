package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// Keys of update.conf that the agent reads. They are CoreOS's names, so an
// existing /etc/coreos/update.conf can be copied over unchanged.
const (
	KeyServer            = "SERVER"
	KeyGroup             = "GROUP"
	KeyRebootStrategy    = "REBOOT_STRATEGY"
	KeyRebootWindowStart = "LOCKSMITHD_REBOOT_WINDOW_START"
	KeyRebootWindowLen   = "LOCKSMITHD_REBOOT_WINDOW_LENGTH"
	KeyMachineAlias      = "MACHINE_ALIAS"
	// KeyRebootGroup is locksmith's reboot group (it read LOCKSMITHD_GROUP
	// from the same environment files).
	KeyRebootGroup = "LOCKSMITHD_GROUP"
	// KeyRebootWindows lists more windows than locksmith's one pair:
	// "Thu 23:00 1h30m; Sat 02:00 4h".
	KeyRebootWindows = "REBOOT_WINDOWS"
	// KeyRebootTimezone is the IANA zone of all windows (default local).
	KeyRebootTimezone = "REBOOT_TIMEZONE"
)

// ServerDisabled as SERVER turns update checks off (the health gate still
// runs, as update_engine's setgoodroot does).
const ServerDisabled = "disabled"

// DefaultUpdateConfPaths is the lookup order: the first file that sets a key
// wins, so /etc overrides the image's defaults in /usr.
var DefaultUpdateConfPaths = []string{"/etc/flotilla/update.conf", "/usr/share/flotilla/update.conf"}

// UpdateConf is the merged content of the update.conf files: key → value,
// plus where each value came from (shown by `flotilla agent status` so an
// operator can tell which file to edit).
type UpdateConf struct {
	Values map[string]string
	Source map[string]string
}

// Get returns the value of key, "" when unset.
func (c UpdateConf) Get(key string) string { return c.Values[key] }

// ReadUpdateConf reads the files in order; a missing file is skipped, any
// other read error fails. The first file to set a key wins.
func ReadUpdateConf(paths []string) (UpdateConf, error) {
	c := UpdateConf{Values: map[string]string{}, Source: map[string]string{}}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return UpdateConf{}, fmt.Errorf("read update.conf: %w", err)
		}
		kv, err := ParseUpdateConf(string(b))
		if err != nil {
			return UpdateConf{}, fmt.Errorf("read update.conf %s: %w", p, err)
		}
		for k, v := range kv {
			if _, ok := c.Values[k]; !ok {
				c.Values[k] = v
				c.Source[k] = p
			}
		}
	}
	return c, nil
}

// ParseUpdateConf parses one file in systemd EnvironmentFile style, which is
// how locksmithd consumed the same file: KEY=VALUE lines, '#' or ';'
// comments, optional "export ", values optionally in single or double
// quotes. Within one file the last assignment of a key wins, as a shell
// would have it. A line without '=' is an error that names the line: a typo
// silently ignored is how machines end up on the wrong channel.
func ParseUpdateConf(text string) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64*1024), 64*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" || strings.ContainsAny(k, " \t\"'") {
			return nil, fmt.Errorf("line %d: want KEY=VALUE, got %q", n, sc.Text())
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') {
			if v[len(v)-1] != v[0] {
				return nil, fmt.Errorf("line %d: unterminated quote in %s", n, k)
			}
			v = v[1 : len(v)-1]
		}
		out[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("scan: %w", err)
	}
	return out, nil
}
