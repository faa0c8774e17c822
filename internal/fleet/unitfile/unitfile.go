// Package unitfile parses the systemd unit files flotilla schedules:
// names (including templates and their instances), the unit body through
// go-systemd's parser, and the scheduling options of the [X-Fleet]
// section that fleet defined, plus flotilla's MoveBeforeReboot.
//
// Parsing is strict about what would make scheduling wrong (a malformed
// file, an unparsable boolean, a bad glob, contradictory options) and
// lenient about what cannot (an unknown [X-Fleet] key, a deprecated
// spelling): those become warnings, so a file written for a newer
// flotilla, or for fleet, still runs.
package unitfile

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/coreos/go-systemd/v22/unit"
)

// ErrInvalidUnit means a unit file cannot be parsed or its [X-Fleet]
// options are contradictory.
var ErrInvalidUnit = errors.New("invalid unit file")

// FleetSection is the section holding scheduling options.
const FleetSection = "X-Fleet"

// Options are a unit's scheduling constraints, with the specifiers %n %N
// %p %i already expanded for the unit's own name.
type Options struct {
	// MachineID pins the unit to one machine (the full id).
	MachineID string `json:"machine_id,omitempty"`
	// MachineOf lists units that must already be placed on a machine for
	// this unit to go there (and it follows them when they move).
	MachineOf []string `json:"machine_of,omitempty"`
	// MachineMetadata maps a key to the values it may have: any value of
	// a key matches (OR), every key must match (AND).
	MachineMetadata map[string][]string `json:"machine_metadata,omitempty"`
	// Conflicts are path.Match globs of units that must not share a
	// machine with this one; checked in both directions.
	Conflicts []string `json:"conflicts,omitempty"`
	// Replaces are globs of units this one displaces: it takes their
	// machine and they are moved elsewhere.
	Replaces []string `json:"replaces,omitempty"`
	// Global runs the unit on every machine that matches MachineMetadata
	// and Conflicts.
	Global bool `json:"global,omitempty"`
	// MoveBeforeReboot asks for the unit to be moved off a machine before
	// it takes a coordinated reboot, instead of going down with it.
	MoveBeforeReboot bool `json:"move_before_reboot,omitempty"`
}

// File is a parsed unit file.
type File struct {
	Name Name
	// Raw is the file as submitted.
	Raw string
	// Hash is the hex SHA-256 of Raw; agents compare it to decide whether
	// a running unit must be restarted with a new body.
	Hash     string
	Sections []*unit.UnitSection
	Options  Options
	// Warnings are problems that do not stop the unit from being
	// scheduled: unknown or deprecated [X-Fleet] keys and the like.
	Warnings []string
}

// Hash returns the hash Parse records for raw.
func Hash(raw string) string {
	sum := sha256.Sum256([]byte(raw))
	return hex.EncodeToString(sum[:])
}

// Parse parses the unit file raw under the given name. For an instance of
// a template, pass the instance name and the template's body: specifiers
// are expanded for the instance.
func Parse(name, raw string) (*File, error) {
	n, err := ParseName(name)
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(raw) == "" {
		return nil, fmt.Errorf("parse unit %s: empty file: %w", name, ErrInvalidUnit)
	}
	sections, err := unit.DeserializeSections(strings.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parse unit %s: %w: %w", name, ErrInvalidUnit, err)
	}
	f := &File{Name: n, Raw: raw, Hash: Hash(raw), Sections: sections}
	if err := f.parseFleet(); err != nil {
		return nil, fmt.Errorf("parse unit %s: %w", name, err)
	}
	return f, nil
}

// Values returns every value of key in section, in file order; systemd's
// rule that an empty assignment resets a list is applied.
func (f *File) Values(section, key string) []string {
	var vs []string
	for _, s := range f.Sections {
		if s.Section != section {
			continue
		}
		for _, e := range s.Entries {
			if e.Name != key {
				continue
			}
			if e.Value == "" {
				vs = vs[:0]
				continue
			}
			vs = append(vs, e.Value)
		}
	}
	return vs
}

// Value returns the last value of key in section (later assignments
// override earlier ones in systemd) and whether there was one.
func (f *File) Value(section, key string) (string, bool) {
	vs := f.Values(section, key)
	if len(vs) == 0 {
		return "", false
	}
	return vs[len(vs)-1], true
}

// Description returns [Unit] Description, for listings.
func (f *File) Description() string {
	d, _ := f.Value("Unit", "Description")
	return d
}

// deprecated maps fleet's old spellings to the current keys.
var deprecated = map[string]string{
	"X-ConditionMachineID":       "MachineID",
	"X-ConditionMachineOf":       "MachineOf",
	"X-ConditionMachineMetadata": "MachineMetadata",
	"X-Conflicts":                "Conflicts",
}

func (f *File) parseFleet() error {
	o := &f.Options
	for _, s := range f.Sections {
		if s.Section != FleetSection {
			continue
		}
		for _, e := range s.Entries {
			key := e.Name
			if cur, ok := deprecated[key]; ok {
				f.Warnings = append(f.Warnings, fmt.Sprintf("[X-Fleet] %s is deprecated, use %s", key, cur))
				key = cur
			}
			val := Expand(strings.TrimSpace(e.Value), f.Name)
			switch key {
			case "MachineID":
				if o.MachineID != "" && val != o.MachineID {
					f.Warnings = append(f.Warnings, fmt.Sprintf("[X-Fleet] MachineID set more than once; %q wins", val))
				}
				o.MachineID = val
			case "MachineOf":
				o.MachineOf = appendList(o.MachineOf, val)
			case "Conflicts":
				o.Conflicts = appendList(o.Conflicts, val)
			case "Replaces":
				o.Replaces = appendList(o.Replaces, val)
			case "MachineMetadata":
				if val == "" {
					o.MachineMetadata = nil
					continue
				}
				if err := addMetadata(o, val); err != nil {
					return err
				}
			case "Global":
				b, err := parseBool(key, val)
				if err != nil {
					return err
				}
				o.Global = b
			case "MoveBeforeReboot":
				b, err := parseBool(key, val)
				if err != nil {
					return err
				}
				o.MoveBeforeReboot = b
			case "X-ConditionMachineBootID":
				f.Warnings = append(f.Warnings, "[X-Fleet] X-ConditionMachineBootID is not supported and ignored")
			default:
				f.Warnings = append(f.Warnings, fmt.Sprintf("[X-Fleet] unknown option %s ignored", e.Name))
			}
		}
	}
	return f.validate()
}

// appendList adds the whitespace-separated words of val to list; an empty
// value resets the list, as in systemd.
func appendList(list []string, val string) []string {
	if val == "" {
		return nil
	}
	return append(list, strings.Fields(val)...)
}

func addMetadata(o *Options, val string) error {
	words, err := splitWords(val)
	if err != nil {
		return fmt.Errorf("[X-Fleet] MachineMetadata: %w: %w", ErrInvalidUnit, err)
	}
	for _, w := range words {
		k, v, ok := strings.Cut(w, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" || v == "" {
			return fmt.Errorf("[X-Fleet] MachineMetadata %q: want key=value: %w", w, ErrInvalidUnit)
		}
		if o.MachineMetadata == nil {
			o.MachineMetadata = map[string][]string{}
		}
		if !slices.Contains(o.MachineMetadata[k], v) {
			o.MachineMetadata[k] = append(o.MachineMetadata[k], v)
		}
	}
	return nil
}

func parseBool(key, val string) (bool, error) {
	switch strings.ToLower(val) {
	case "1", "yes", "true", "on":
		return true, nil
	case "0", "no", "false", "off", "":
		return false, nil
	}
	return false, fmt.Errorf("[X-Fleet] %s=%q: not a boolean: %w", key, val, ErrInvalidUnit)
}

func (f *File) validate() error {
	o := &f.Options
	for _, list := range [][]string{o.Conflicts, o.Replaces, o.MachineOf} {
		for _, g := range list {
			if _, err := path.Match(g, ""); err != nil {
				return fmt.Errorf("[X-Fleet] glob %q: %w: %w", g, ErrInvalidUnit, err)
			}
		}
	}
	if o.Global {
		switch {
		case o.MachineID != "":
			return fmt.Errorf("[X-Fleet] Global cannot be combined with MachineID: %w", ErrInvalidUnit)
		case len(o.MachineOf) > 0:
			return fmt.Errorf("[X-Fleet] Global cannot be combined with MachineOf: %w", ErrInvalidUnit)
		case len(o.Replaces) > 0:
			return fmt.Errorf("[X-Fleet] Global cannot be combined with Replaces: %w", ErrInvalidUnit)
		}
		if o.MoveBeforeReboot {
			f.Warnings = append(f.Warnings, "[X-Fleet] MoveBeforeReboot has no effect on a Global unit")
		}
	}
	if len(o.Replaces) > 0 && len(o.Conflicts) > 0 {
		return fmt.Errorf("[X-Fleet] Replaces cannot be combined with Conflicts: %w", ErrInvalidUnit)
	}
	if slices.Contains(o.MachineOf, f.Name.Full) {
		return fmt.Errorf("[X-Fleet] MachineOf names the unit itself: %w", ErrInvalidUnit)
	}
	return nil
}

// splitWords splits s at unquoted whitespace, honouring double and single
// quotes and backslash escapes, the way systemd splits list values such
// as MachineMetadata="region=us east" "disk=ssd".
func splitWords(s string) ([]string, error) {
	var (
		words []string
		cur   bytes.Buffer
		quote byte
		in    bool // inside a word
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && quote != '\'':
			if i+1 == len(s) {
				return nil, errors.New("trailing backslash")
			}
			i++
			cur.WriteByte(s[i])
			in = true
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
		case c == '"' || c == '\'':
			quote, in = c, true
		case c == ' ' || c == '\t' || c == '\n':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote", quote)
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}

// SplitCommand splits an Exec*= command line into argv the way systemd
// does for the common cases: whitespace separates words, double and
// single quotes group, backslash escapes the next character. Variable
// expansion is left to the caller.
func SplitCommand(s string) ([]string, error) {
	words, err := splitWords(s)
	if err != nil {
		return nil, fmt.Errorf("split command %q: %w", s, err)
	}
	return words, nil
}
