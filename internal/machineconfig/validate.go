package machineconfig

import (
	"bytes"
	"cmp"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/unit"
)

// Validate detects the format of doc, parses it into a Config and checks
// it. The Config is only meaningful when the report has no errors.
//
// Detection follows coreos-cloudinit: a gzip-compressed document is
// decompressed first; a document whose first non-blank byte is "{" is
// Ignition JSON; one whose first line is "#cloud-config" is cloud-config;
// a "#!" script is rejected; anything else is an error.
func Validate(doc []byte) (Config, Report) {
	if bytes.HasPrefix(doc, []byte{0x1f, 0x8b}) {
		raw, err := gunzip(doc)
		if err != nil {
			return Config{}, Report{Entries: []Entry{{Severity: SeverityError, Message: fmt.Sprintf("document looks gzip-compressed but does not decompress: %v", err)}}}
		}
		doc = raw
	}
	doc = bytes.TrimPrefix(doc, []byte("\xef\xbb\xbf")) // UTF-8 byte order mark
	trimmed := bytes.TrimLeft(doc, " \t\r\n")
	if len(trimmed) == 0 {
		return Config{}, Report{Entries: []Entry{{Severity: SeverityWarning, Message: "empty document: nothing to apply"}}}
	}
	var cfg Config
	var rep Report
	firstLine, _, _ := bytes.Cut(doc, []byte("\n"))
	firstLine = bytes.TrimRight(firstLine, " \t\r")
	switch {
	case trimmed[0] == '{':
		cfg, rep = parseIgnition(doc)
	case string(firstLine) == "#cloud-config":
		cfg, rep = parseCloudConfig(doc)
	case bytes.HasPrefix(firstLine, []byte("#!")):
		return Config{}, Report{Entries: []Entry{{Severity: SeverityError, Line: 1, Column: 1,
			Message: "scripts (#!) are not supported: flotilla applies declarative configs only; ship the script with write_files (or storage.files) and run it from a unit"}}}
	default:
		return Config{}, Report{Entries: []Entry{{Severity: SeverityError, Line: 1, Column: 1,
			Message: "unrecognized format: a cloud-config starts with the line \"#cloud-config\", an Ignition config is JSON starting with \"{\""}}}
	}
	checkModel(&cfg, &rep)
	if cfg.Format == FormatCloudConfig {
		// Findings in document order read like a compiler's.
		slices.SortStableFunc(rep.Entries, func(a, b Entry) int { return cmp.Or(a.Line-b.Line, a.Column-b.Column) })
	}
	return cfg, rep
}

// checkModel runs the checks that do not depend on the format. Ignition's
// own validator already covered paths, duplicates and unit contents for
// Ignition configs, so those are only checked for other formats.
func checkModel(cfg *Config, rep *Report) {
	ign := cfg.Format == FormatIgnition
	seen := map[string]string{}
	node := func(kind, p string, at pos) {
		if err := checkNodePath(p); err != nil {
			rep.errorf(at, "%s %q: %v", kind, p, err)
			return
		}
		if prev, dup := seen[p]; dup && !ign {
			rep.errorf(at, "%s %q: path already used by a %s entry", kind, p, prev)
		}
		seen[p] = kind
	}
	for _, f := range cfg.Files {
		node("file", f.Path, f.at)
		for _, c := range append([]Content{derefContent(f.Contents)}, f.Append...) {
			if c.Hash != "" {
				if _, _, err := parseHash(c.Hash); err != nil {
					rep.errorf(f.at, "file %q: %v", f.Path, err)
				}
			}
		}
	}
	for _, d := range cfg.Directories {
		node("directory", d.Path, d.at)
	}
	for _, l := range cfg.Links {
		node("link", l.Path, l.at)
		if l.Target == "" {
			rep.errorf(l.at, "link %q: target is required", l.Path)
		}
		if l.Hard && !path.IsAbs(l.Target) {
			rep.errorf(l.at, "hard link %q: target %q must be an absolute path", l.Path, l.Target)
		}
	}
	users := map[string]bool{}
	for _, u := range cfg.Users {
		if err := checkAccountName(u.Name); err != nil {
			rep.errorf(u.at, "user %q: %v", u.Name, err)
		}
		if users[u.Name] {
			rep.errorf(u.at, "user %q: defined twice", u.Name)
		}
		users[u.Name] = true
		for field, v := range map[string]string{"gecos": u.Gecos, "home directory": u.HomeDir, "shell": u.Shell, "primary group": u.PrimaryGroup} {
			if strings.ContainsAny(v, ":\n") {
				rep.errorf(u.at, "user %q: %s must not contain ':' or a line break", u.Name, field)
			}
		}
		if u.HomeDir != "" && !path.IsAbs(u.HomeDir) {
			rep.errorf(u.at, "user %q: home directory %q must be absolute", u.Name, u.HomeDir)
		}
		if u.PasswordHash != nil && strings.ContainsAny(*u.PasswordHash, ":\n") {
			rep.errorf(u.at, "user %q: password hash must not contain ':' or a line break", u.Name)
		}
		for _, k := range u.SSHAuthorizedKeys {
			if strings.ContainsAny(strings.TrimRight(k, "\n"), "\n\r") {
				rep.errorf(u.at, "user %q: an SSH key spans several lines; give each key as its own list item", u.Name)
			}
		}
		for _, g := range u.Groups {
			if checkAccountName(g) != nil {
				rep.errorf(u.at, "user %q: group %q is not a valid group name", u.Name, g)
			}
		}
	}
	groups := map[string]bool{}
	for _, g := range cfg.Groups {
		if err := checkAccountName(g.Name); err != nil {
			rep.errorf(g.at, "group %q: %v", g.Name, err)
		}
		if groups[g.Name] {
			rep.errorf(g.at, "group %q: defined twice", g.Name)
		}
		groups[g.Name] = true
	}
	units := map[string]bool{}
	for _, u := range cfg.Units {
		checkUnit(u, rep, ign)
		if units[u.Name] && !ign {
			rep.errorf(u.at, "unit %q: defined twice", u.Name)
		}
		units[u.Name] = true
	}
	if cfg.Hostname != "" && ign {
		if err := checkHostname(cfg.Hostname); err != nil {
			rep.errorf(pos{}, "hostname: %v", err)
		}
	}
	if cfg.ManageEtcHosts == "localhost" && cfg.Hostname == "" {
		rep.warnf(pos{}, "manage_etc_hosts without hostname: /etc/hosts gets the host name from the root's /etc/hostname")
	}
}

func derefContent(c *Content) Content {
	if c == nil {
		return Content{}
	}
	return *c
}

var unitSuffixes = []string{".service", ".socket", ".device", ".mount", ".automount", ".swap", ".target", ".path", ".timer", ".snapshot", ".slice", ".scope", ".network", ".netdev", ".link"}

func checkUnit(u Unit, rep *Report, ign bool) {
	if err := checkUnitName(u.Name); err != nil {
		rep.errorf(u.at, "unit %q: %v", u.Name, err)
		return
	}
	for _, d := range u.DropIns {
		switch {
		case strings.Contains(d.Name, "/") || d.Name == "." || d.Name == "..":
			rep.errorf(u.at, "unit %q: drop-in name %q must be a plain file name", u.Name, d.Name)
		case !strings.HasSuffix(d.Name, ".conf") && !ign:
			rep.warnf(u.at, "unit %q: drop-in %q does not end in .conf, so systemd ignores it", u.Name, d.Name)
		}
	}
	if isNetworkUnit(u.Name) && u.Enable != nil && *u.Enable {
		rep.warnf(u.at, "unit %q: network units cannot be enabled; systemd-networkd reads them on its own", u.Name)
	}
	if ign || u.Contents == nil {
		return
	}
	opts, err := unit.DeserializeOptions(strings.NewReader(*u.Contents))
	if err != nil {
		rep.errorf(u.at, "unit %q: contents do not parse: %v", u.Name, err)
		return
	}
	if u.Enable != nil && *u.Enable && !isNetworkUnit(u.Name) && !hasInstall(opts) {
		rep.warnf(u.at, "unit %q: enable is set but the unit has no [Install] section, so enabling does nothing", u.Name)
	}
}

func checkUnitName(name string) error {
	if name == "" {
		return fmt.Errorf("name is required")
	}
	if strings.ContainsAny(name, "/\n") || name == "." || name == ".." {
		return fmt.Errorf("name must be a plain file name")
	}
	for _, s := range unitSuffixes {
		if strings.HasSuffix(name, s) && len(name) > len(s) {
			return nil
		}
	}
	return fmt.Errorf("name must end in a unit type suffix (.service, .socket, .timer, .mount, .target, .path, … or .network, .netdev, .link)")
}

func isNetworkUnit(name string) bool {
	return strings.HasSuffix(name, ".network") || strings.HasSuffix(name, ".netdev") || strings.HasSuffix(name, ".link")
}

func hasInstall(opts []*unit.UnitOption) bool {
	for _, o := range opts {
		if o.Section == "Install" {
			return true
		}
	}
	return false
}

// checkNodePath keeps writes out of places Apply must never touch: the
// root itself, and /usr, which is the read-only, A/B-updated OS image.
func checkNodePath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("path is required")
	case !path.IsAbs(p):
		return fmt.Errorf("path must be absolute")
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("path contains a NUL byte")
	case path.Clean(p) != p:
		return fmt.Errorf("path is not clean (want %q)", path.Clean(p))
	case p == "/":
		return fmt.Errorf("cannot replace the root directory")
	case p == "/usr" || strings.HasPrefix(p, "/usr/"):
		return fmt.Errorf("/usr is the read-only OS image (updated as a whole by the agent); put the file under /etc, /opt or /var")
	}
	return nil
}

var accountNameRE = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,31}\$?$`)

func checkAccountName(name string) error {
	if name == "" {
		return fmt.Errorf("name is required")
	}
	if !accountNameRE.MatchString(name) {
		return fmt.Errorf("not a valid account name (letters, digits, '_', '.', '-', at most 32 characters)")
	}
	return nil
}

var hostLabelRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$`)

func checkHostname(s string) error {
	if s == "" {
		return nil
	}
	if len(s) > 64 {
		return fmt.Errorf("%q is longer than 64 characters", s)
	}
	for _, label := range strings.Split(s, ".") {
		if !hostLabelRE.MatchString(label) || len(label) > 63 {
			return fmt.Errorf("%q is not a valid host name (labels of letters, digits and '-', separated by '.')", s)
		}
	}
	return nil
}

// rebootStrategies are the REBOOT_STRATEGY values the flotilla agent
// understands.
var rebootStrategies = []string{"reboot", "etcd-lock", "fleetlock", "off"}

func checkStrategy(rep *Report, s string, at pos) {
	if s == "best-effort" {
		rep.warnf(at, "reboot_strategy best-effort is CoreOS's legacy default; the flotilla agent treats it as unknown: use etcd-lock, fleetlock, reboot or off")
		return
	}
	if !contains(rebootStrategies, s) {
		rep.errorf(at, "reboot_strategy %q: want one of %s", s, strings.Join(rebootStrategies, ", "))
	}
}

var windowStartRE = regexp.MustCompile(`^((?i:mon|tue|wed|thu|fri|sat|sun) )?([01]?[0-9]|2[0-3]):[0-5][0-9]$`)

// checkWindow validates locksmith's reboot window: start is an optional
// weekday and a clock time, length a Go duration; both or neither.
func checkWindow(rep *Report, start, length string, startAt, lengthAt, sectionAt pos) {
	if start == "" && length == "" {
		return
	}
	if start == "" || length == "" {
		rep.errorf(sectionAt, "coreos.locksmith: set both window_start and window_length, or neither")
		return
	}
	if !windowStartRE.MatchString(start) {
		rep.errorf(startAt, "coreos.locksmith.window_start %q: want an optional weekday and a time, like \"Thu 23:00\" or \"04:30\"", start)
	}
	if d, err := time.ParseDuration(length); err != nil || d <= 0 {
		rep.errorf(lengthAt, "coreos.locksmith.window_length %q: want a positive duration, like \"1h30m\"", length)
	}
}

// modeFromUnix converts a numeric mode (as in chmod) to an fs.FileMode,
// keeping the setuid, setgid and sticky bits.
func modeFromUnix(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// modeString formats a mode the way chmod takes it ("0644", "4755").
func modeString(m fs.FileMode) string {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return fmt.Sprintf("%04o", u)
}

// permBits keeps the bits Apply manages: permissions plus setuid, setgid
// and sticky.
func permBits(m fs.FileMode) fs.FileMode {
	return m & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}
