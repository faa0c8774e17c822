package fleet

import (
	"encoding/json"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"
)

// cache mirrors the registry keys in memory. Snapshot fills one from a
// single read; the engine keeps one current from a watch, which is what
// lets it reconcile without re-reading etcd.
type cache struct {
	prefix   string
	log      *slog.Logger
	units    map[string]UnitInfo // parsed; unparsable units are dropped
	presence map[string]Machine
	known    map[string]knownRecord
	draining map[string]bool
	assign   map[string]map[string]Assignment // machine -> unit -> assignment
	states   map[string]map[string]UnitState  // machine -> unit -> state
	unsched  map[string]string
}

func newCache(prefix string, logger *slog.Logger) *cache {
	return &cache{
		prefix:   prefix,
		log:      logger,
		units:    map[string]UnitInfo{},
		presence: map[string]Machine{},
		known:    map[string]knownRecord{},
		draining: map[string]bool{},
		assign:   map[string]map[string]Assignment{},
		states:   map[string]map[string]UnitState{},
		unsched:  map[string]string{},
	}
}

// split returns the directory ("units/") and the rest of key, or "" for
// keys the cache does not track.
func (c *cache) split(key string) (dir, rest string) {
	k, ok := strings.CutPrefix(key, c.prefix)
	if !ok {
		return "", ""
	}
	i := strings.IndexByte(k, '/')
	if i < 0 {
		return "", ""
	}
	return k[:i+1], k[i+1:]
}

// put applies a created or updated key and reports whether the engine
// cares (state reports usually do not).
func (c *cache) put(key string, val []byte) (dir string) {
	dir, rest := c.split(key)
	switch dir {
	case unitsDir:
		u, err := decodeUnit(val)
		if err != nil {
			c.log.Error("skipping stored unit", "key", key, "err", err)
			delete(c.units, rest)
			return dir
		}
		c.units[rest] = u
	case machinesDir:
		var m Machine
		if json.Unmarshal(val, &m) == nil {
			c.presence[rest] = m
		}
	case knownDir:
		var k knownRecord
		if json.Unmarshal(val, &k) == nil {
			c.known[rest] = k
		}
	case drainingDir:
		c.draining[rest] = true
	case assignDir, statesDir:
		machine, unit, ok := strings.Cut(rest, "/")
		if !ok {
			return ""
		}
		if dir == assignDir {
			var a Assignment
			if json.Unmarshal(val, &a) == nil {
				inner(c.assign, machine)[unit] = a
			}
		} else {
			var s UnitState
			if json.Unmarshal(val, &s) == nil {
				inner(c.states, machine)[unit] = s
			}
		}
	case unschedulableDir:
		c.unsched[rest] = string(val)
	default:
		return ""
	}
	return dir
}

func (c *cache) del(key string) (dir string) {
	dir, rest := c.split(key)
	switch dir {
	case unitsDir:
		delete(c.units, rest)
	case machinesDir:
		delete(c.presence, rest)
	case knownDir:
		delete(c.known, rest)
	case drainingDir:
		delete(c.draining, rest)
	case assignDir, statesDir:
		machine, unit, _ := strings.Cut(rest, "/")
		if dir == statesDir {
			deleteInner(c.states, machine, unit)
		} else {
			deleteInner(c.assign, machine, unit)
		}
	case unschedulableDir:
		delete(c.unsched, rest)
	default:
		return ""
	}
	return dir
}

func inner[V any](m map[string]map[string]V, k string) map[string]V {
	if m[k] == nil {
		m[k] = map[string]V{}
	}
	return m[k]
}

func deleteInner[V any](m map[string]map[string]V, k, k2 string) {
	delete(m[k], k2)
	if len(m[k]) == 0 {
		delete(m, k)
	}
}

// machines derives every machine's state at now: alive while its presence
// key exists, unknown until grace after the engine noticed it lapse (or if
// no engine has yet), lost afterwards.
func (c *cache) machines(now time.Time, grace time.Duration) []Machine {
	ids := map[string]bool{}
	for id := range c.presence {
		ids[id] = true
	}
	for id := range c.known {
		ids[id] = true
	}
	out := make([]Machine, 0, len(ids))
	for _, id := range slices.Sorted(maps.Keys(ids)) {
		var m Machine
		if p, ok := c.presence[id]; ok {
			m = p
			m.State = MachineAlive
		} else {
			k := c.known[id]
			m = k.Machine
			m.LapsedAt = k.LapsedAt
			if k.LapsedAt.IsZero() || now.Before(k.LapsedAt.Add(grace)) {
				m.State = MachineUnknown
			} else {
				m.State = MachineLost
			}
		}
		m.ID = id
		m.Draining = c.draining[id]
		out = append(out, m)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
