package unitfile

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidName means a unit name breaks systemd's naming rules as fleet
// applied them.
var ErrInvalidName = errors.New("invalid unit name")

// maxNameLen is systemd's UNIT_NAME_MAX minus the terminating NUL.
const maxNameLen = 255

// suffixes are the unit types fleet accepted. Device, scope and slice units
// are on the list because fleet accepted them, even though scheduling them
// rarely makes sense.
var suffixes = map[string]bool{
	"automount": true, "busname": true, "device": true, "mount": true, "path": true,
	"scope": true, "service": true, "slice": true, "snapshot": true, "socket": true,
	"swap": true, "target": true, "timer": true,
}

// templateSuffixes are the unit types systemd can instantiate from a
// template.
var templateSuffixes = map[string]bool{
	"path": true, "service": true, "socket": true, "target": true, "timer": true,
}

// Name is a parsed unit name: "web@1.service" has Prefix "web", Instance
// "1" and Suffix "service"; the template "web@.service" has an empty
// Instance and Template set.
type Name struct {
	Full     string
	Prefix   string
	Instance string
	Suffix   string
	// Templated is true for both templates and their instances (the name
	// contains "@").
	Templated bool
}

// IsTemplate reports whether the name is a template ("web@.service"),
// which is stored but never scheduled.
func (n Name) IsTemplate() bool { return n.Templated && n.Instance == "" }

// IsInstance reports whether the name is an instance of a template
// ("web@1.service").
func (n Name) IsInstance() bool { return n.Templated && n.Instance != "" }

// Template returns the template name of an instance ("web@.service" for
// "web@1.service"), or "" for a name that is not templated.
func (n Name) Template() string {
	if !n.Templated {
		return ""
	}
	return n.Prefix + "@." + n.Suffix
}

// String returns the full name.
func (n Name) String() string { return n.Full }

// ParseName validates a unit name and splits it into its parts. Allowed
// characters are [a-zA-Z0-9:_.@-] plus "\" (systemd's escapes), the suffix
// must be a known unit type, and only path, service, socket, target and
// timer units may be templates.
func ParseName(s string) (Name, error) {
	if s == "" {
		return Name{}, fmt.Errorf("parse unit name: empty: %w", ErrInvalidName)
	}
	if len(s) > maxNameLen {
		return Name{}, fmt.Errorf("parse unit name %.40q...: longer than %d bytes: %w", s, maxNameLen, ErrInvalidName)
	}
	for _, r := range s {
		if !validNameRune(r) {
			return Name{}, fmt.Errorf("parse unit name %q: character %q not allowed: %w", s, r, ErrInvalidName)
		}
	}
	dot := strings.LastIndexByte(s, '.')
	if dot <= 0 || dot == len(s)-1 {
		return Name{}, fmt.Errorf("parse unit name %q: want name.type: %w", s, ErrInvalidName)
	}
	base, suffix := s[:dot], s[dot+1:]
	if !suffixes[suffix] {
		return Name{}, fmt.Errorf("parse unit name %q: unknown unit type %q: %w", s, suffix, ErrInvalidName)
	}
	n := Name{Full: s, Prefix: base, Suffix: suffix}
	if at := strings.IndexByte(base, '@'); at >= 0 {
		n.Templated = true
		n.Prefix, n.Instance = base[:at], base[at+1:]
		if n.Prefix == "" {
			return Name{}, fmt.Errorf("parse unit name %q: empty template prefix: %w", s, ErrInvalidName)
		}
		if strings.IndexByte(n.Instance, '@') >= 0 {
			return Name{}, fmt.Errorf("parse unit name %q: more than one '@': %w", s, ErrInvalidName)
		}
		if !templateSuffixes[suffix] {
			return Name{}, fmt.Errorf("parse unit name %q: %s units cannot be templates: %w", s, suffix, ErrInvalidName)
		}
	}
	return n, nil
}

func validNameRune(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	}
	return strings.ContainsRune(":_.@-\\", r)
}

// Expand replaces systemd's name specifiers in s as systemd would for the
// unit n: %n (full name), %N (name without the type suffix), %p (prefix),
// %i (instance) and %% (a literal %). Other specifiers are left as they
// are, since their values (host name, boot id, ...) are only known on the
// machine that runs the unit.
func Expand(s string, n Name) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' || i+1 == len(s) {
			b.WriteByte(c)
			continue
		}
		i++
		switch s[i] {
		case 'n':
			b.WriteString(n.Full)
		case 'N':
			b.WriteString(strings.TrimSuffix(n.Full, "."+n.Suffix))
		case 'p':
			b.WriteString(n.Prefix)
		case 'i':
			b.WriteString(n.Instance)
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(s[i])
		}
	}
	return b.String()
}
