package rebootlock

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultGroup is the group FleetLock clients use when they name none.
const DefaultGroup = "default"

// Defaults for Config fields left zero.
const (
	DefaultPrefix        = "/flotilla/rebootlock/"
	DefaultWaiterTTL     = 10 * time.Minute // Zincati polls every 5 minutes
	DefaultMax           = 1
	DefaultHoldDeadline  = time.Hour
	DefaultSweepInterval = 15 * time.Second

	// MaxSlots bounds GroupConfig.Max; a bigger number is a typo, not a
	// reboot policy.
	MaxSlots = 1000
)

// Holder phases.
const (
	PhaseGranted   = "granted"   // the slot is taken; the machine has not started rebooting
	PhaseRebooting = "rebooting" // MarkRebooting succeeded: the reboot was authorised
)

// Event kinds passed to OnEvent handlers.
const (
	EventGranted       = "lock-granted"
	EventReleased      = "lock-released"
	EventForceReleased = "lock-force-released"
	EventOverdue       = "lock-overdue"
	EventAutoReleased  = "lock-auto-released"
	EventMaxChanged    = "lock-max-changed"
)

// Sentinel errors. Returned errors wrap them; branch with errors.Is.
var (
	// ErrFull means the caller was not granted a slot now: the group is at
	// its max, or other machines are ahead in the queue. Ask again later.
	ErrFull = errors.New("no reboot slot available")
	// ErrNotHolder means the machine holds no slot in the group.
	ErrNotHolder = errors.New("not a holder")
	// ErrTokenMismatch means the machine's slot was released and (possibly)
	// taken again since the caller's grant: the caller's token is stale.
	ErrTokenMismatch = errors.New("fencing token mismatch")
	// ErrInvalidGroup means a group name breaks the FleetLock rule.
	ErrInvalidGroup = errors.New("invalid group")
	// ErrInvalidID means a machine id is empty, too long or unprintable.
	ErrInvalidID = errors.New("invalid id")
	// ErrInvalidConfig means a Config or GroupConfig is out of range, or
	// a stored group config cannot be decoded.
	ErrInvalidConfig = errors.New("invalid config")
)

// Config configures a Manager. Zero fields take the defaults above.
type Config struct {
	// Prefix is the etcd key prefix; a trailing "/" is added if missing.
	Prefix string
	// WaiterTTL is the lease of a waiter entry, renewed by each Lock
	// request: a machine that stops asking leaves the queue after it.
	WaiterTTL time.Duration
	// DefaultMax is the max of a group nobody configured (zero means 1; use
	// SetConfig or SetMax to set a group's max to 0).
	DefaultMax int
	// DefaultHoldDeadline applies to groups whose config has none.
	DefaultHoldDeadline time.Duration
	// SweepInterval is how often Run looks for overdue holders.
	SweepInterval time.Duration
}

func (c Config) withDefaults() (Config, error) {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(c.Prefix, "/") {
		c.Prefix += "/"
	}
	if c.WaiterTTL == 0 {
		c.WaiterTTL = DefaultWaiterTTL
	}
	if c.DefaultMax == 0 {
		c.DefaultMax = DefaultMax
	}
	if c.DefaultHoldDeadline == 0 {
		c.DefaultHoldDeadline = DefaultHoldDeadline
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = DefaultSweepInterval
	}
	switch {
	case c.WaiterTTL < time.Second:
		return c, fmt.Errorf("waiter TTL %v below 1s: %w", c.WaiterTTL, ErrInvalidConfig)
	case c.DefaultMax < 0 || c.DefaultMax > MaxSlots:
		return c, fmt.Errorf("default max %d outside 0..%d: %w", c.DefaultMax, MaxSlots, ErrInvalidConfig)
	case c.DefaultHoldDeadline < 0:
		return c, fmt.Errorf("default hold deadline %v negative: %w", c.DefaultHoldDeadline, ErrInvalidConfig)
	case c.SweepInterval < 0:
		return c, fmt.Errorf("sweep interval %v negative: %w", c.SweepInterval, ErrInvalidConfig)
	}
	return c, nil
}

// GroupConfig is a group's policy, stored at groups/<group>/config and read
// on every decision (never cached, so a change applies at once).
type GroupConfig struct {
	// Max is the number of machines that may hold a slot at once; 0 stops
	// all reboots in the group.
	Max int `json:"max"`
	// HoldDeadline is how long a holder may keep its slot before it is
	// reported overdue; 0 means the Manager's DefaultHoldDeadline.
	HoldDeadline time.Duration `json:"hold_deadline"`
	// AutoRelease opts the group into releasing overdue holders
	// automatically. Off by default: a machine that does not come back
	// usually means a bad update, which should not spread.
	AutoRelease bool `json:"auto_release"`
}

// Validate checks the ranges SetConfig accepts.
func (c GroupConfig) Validate() error {
	if c.Max < 0 || c.Max > MaxSlots {
		return fmt.Errorf("max %d outside 0..%d: %w", c.Max, MaxSlots, ErrInvalidConfig)
	}
	if c.HoldDeadline < 0 {
		return fmt.Errorf("hold deadline %v negative: %w", c.HoldDeadline, ErrInvalidConfig)
	}
	return nil
}

// LockInfo is what a machine tells about itself when asking for a slot.
type LockInfo struct {
	BootID      string // /proc/sys/kernel/random/boot_id: a changed boot id proves the reboot
	VersionFrom string
	VersionTo   string
}

// Holder is a machine holding a slot.
type Holder struct {
	ID     string `json:"id"`
	Group  string `json:"group"`
	BootID string `json:"boot_id,omitempty"` // boot id the machine had when it was granted
	// Token is the holder key's create revision: the fencing token.
	Token       int64     `json:"token"`
	AcquiredAt  time.Time `json:"acquired_at"`
	Phase       string    `json:"phase"` // PhaseGranted or PhaseRebooting
	RebootingAt time.Time `json:"rebooting_at,omitzero"`
	VersionFrom string    `json:"version_from,omitempty"`
	VersionTo   string    `json:"version_to,omitempty"`
	// Overdue is computed when read: the slot was held longer than the
	// group's hold deadline.
	Overdue bool `json:"overdue"`
}

// Waiter is a machine queued for a slot.
type Waiter struct {
	ID       string    `json:"id"`
	Since    time.Time `json:"since"`    // when it joined the queue
	Position int       `json:"position"` // 1-based; the first Available waiters may take a slot
}

// GroupStatus is a group's state at one revision.
type GroupStatus struct {
	Group        string        `json:"group"`
	Max          int           `json:"max"`
	Available    int           `json:"available"`
	HoldDeadline time.Duration `json:"hold_deadline"`
	AutoRelease  bool          `json:"auto_release"`
	Holders      []Holder      `json:"holders"` // by token (grant order)
	Waiters      []Waiter      `json:"waiters"` // by position
}

// Event reports a committed change, for the server's activity log.
type Event struct {
	Kind    string // one of the Event* constants
	Group   string
	ID      string // machine id; empty for group-wide events
	Message string
}

var groupRE = regexp.MustCompile(`^[a-zA-Z0-9.-]+$`)

// ValidateGroup checks a group name against the FleetLock rule
// ^[a-zA-Z0-9.-]+$ (and a 253-character limit, as for DNS names).
func ValidateGroup(group string) error {
	if len(group) > 253 || !groupRE.MatchString(group) {
		return fmt.Errorf("group %q: want 1-253 characters of [a-zA-Z0-9.-]: %w", group, ErrInvalidGroup)
	}
	return nil
}

// ValidateID checks a machine id: non-empty, at most 253 bytes of
// printable UTF-8, no '/' (it is a key segment).
func ValidateID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("empty id: %w", ErrInvalidID)
	case len(id) > 253:
		return fmt.Errorf("id of %d bytes, want at most 253: %w", len(id), ErrInvalidID)
	case !utf8.ValidString(id):
		return fmt.Errorf("id %q not UTF-8: %w", id, ErrInvalidID)
	case strings.ContainsRune(id, '/'):
		return fmt.Errorf("id %q contains '/': %w", id, ErrInvalidID)
	}
	for _, r := range id {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("id %q has unprintable character %U: %w", id, r, ErrInvalidID)
		}
	}
	return nil
}

// Manager is the semaphore over one etcd cluster. Its methods are safe for
// concurrent use; several Managers (several servers) may share the keys.
type Manager struct {
	cli     *clientv3.Client
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	// now is the clock for timestamps and overdue checks (tests move it).
	now func() time.Time

	mu       sync.Mutex
	handlers []func(Event)
	// overdueSeen remembers, per group and id, the token already reported
	// overdue, so "lock-overdue" is emitted once per grant (per Manager: a
	// restarted server reports a still-overdue holder once more).
	overdueSeen map[holderRef]int64
	// gaugeGroups are the groups that have gauge series, so the sweeper
	// can drop series of groups that disappeared.
	gaugeGroups map[string]bool
	// renewedAt is when this Manager last renewed each waiter lease: a
	// client polling much faster than WaiterTTL (a busy test, an impatient
	// script) then costs one read per poll, not a read and a lease renewal.
	renewedAt map[clientv3.LeaseID]time.Time
	lastPrune time.Time
}

type holderRef struct{ group, id string }

// New returns a Manager using cli. logger may be nil (no logging), reg may
// be nil (metrics not exported).
func New(cli *clientv3.Client, cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Manager, error) {
	if cli == nil {
		return nil, fmt.Errorf("rebootlock: new: nil etcd client: %w", ErrInvalidConfig)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("rebootlock: new: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	met, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("rebootlock: new: %w", err)
	}
	return &Manager{
		cli:         cli,
		cfg:         cfg,
		log:         logger.With("component", "rebootlock"),
		metrics:     met,
		now:         time.Now,
		overdueSeen: map[holderRef]int64{},
		gaugeGroups: map[string]bool{},
		renewedAt:   map[clientv3.LeaseID]time.Time{},
	}, nil
}

// OnEvent registers fn to be called, synchronously and after the write has
// committed, for every event this Manager causes. fn must not block.
func (m *Manager) OnEvent(fn func(Event)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.handlers = append(m.handlers, fn)
}

func (m *Manager) emit(e Event) {
	m.log.Info("rebootlock event", "kind", e.Kind, "group", e.Group, "id", e.ID, "message", e.Message)
	m.mu.Lock()
	hs := slices.Clone(m.handlers)
	m.mu.Unlock()
	for _, fn := range hs {
		fn(e)
	}
}

// Keys.

func (m *Manager) groupsPrefix() string            { return m.cfg.Prefix + "groups/" }
func (m *Manager) groupPrefix(group string) string { return m.groupsPrefix() + group + "/" }
func (m *Manager) configKey(group string) string   { return m.groupPrefix(group) + "config" }
func (m *Manager) holdersPrefix(group string) string {
	return m.groupPrefix(group) + "holders/"
}
func (m *Manager) waitersPrefix(group string) string {
	return m.groupPrefix(group) + "waiters/"
}
func (m *Manager) holderKey(group, id string) string { return m.holdersPrefix(group) + id }
func (m *Manager) waiterKey(group, id string) string { return m.waitersPrefix(group) + id }

// holderRecord is the stored form of a holder. The token is not stored: it
// is the key's create revision, unknown until the creating Txn commits.
type holderRecord struct {
	ID          string    `json:"id"`
	Group       string    `json:"group"`
	BootID      string    `json:"boot_id,omitempty"`
	AcquiredAt  time.Time `json:"acquired_at"`
	Phase       string    `json:"phase"`
	RebootingAt time.Time `json:"rebooting_at,omitzero"`
	VersionFrom string    `json:"version_from,omitempty"`
	VersionTo   string    `json:"version_to,omitempty"`
}

// waiterRecord is the stored form of a waiter.
type waiterRecord struct {
	ID    string    `json:"id"`
	Since time.Time `json:"since"`
}

// waiterEntry is a waiter key as read.
type waiterEntry struct {
	id        string
	since     time.Time
	createRev int64
	lease     clientv3.LeaseID
}

// snapshot is a group's keys at one revision.
type snapshot struct {
	rev          int64
	config       GroupConfig // effective: defaults applied
	holders      []Holder    // by token
	waiters      []waiterEntry
	configModRev int64
}

func (s *snapshot) holder(id string) (Holder, bool) {
	for _, h := range s.holders {
		if h.ID == id {
			return h, true
		}
	}
	return Holder{}, false
}

func (s *snapshot) waiter(id string) (waiterEntry, bool) {
	for _, w := range s.waiters {
		if w.id == id {
			return w, true
		}
	}
	return waiterEntry{}, false
}

func (s *snapshot) decide(id string) decision {
	hs := make([]string, len(s.holders))
	for i, h := range s.holders {
		hs[i] = h.ID
	}
	ws := make([]queued, len(s.waiters))
	for i, w := range s.waiters {
		ws[i] = queued{id: w.id, createRev: w.createRev}
	}
	return decide(s.config.Max, hs, ws, id)
}

// read returns the group's config, holders and waiters at one revision.
// A read-only Txn is served as one linearizable read.
func (m *Manager) read(ctx context.Context, group string) (snapshot, error) {
	resp, err := m.cli.Txn(ctx).Then(
		clientv3.OpGet(m.configKey(group)),
		clientv3.OpGet(m.holdersPrefix(group), clientv3.WithPrefix()),
		clientv3.OpGet(m.waitersPrefix(group), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return snapshot{}, err
	}
	s := snapshot{rev: resp.Header.Revision}
	cfgKVs := resp.Responses[0].GetResponseRange().Kvs
	var raw []byte
	if len(cfgKVs) > 0 {
		raw = cfgKVs[0].Value
		s.configModRev = cfgKVs[0].ModRevision
	}
	if s.config, err = m.decodeConfig(raw); err != nil {
		return snapshot{}, err
	}
	now := m.now()
	hp := m.holdersPrefix(group)
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		s.holders = append(s.holders, m.decodeHolder(group, strings.TrimPrefix(string(kv.Key), hp), kv.Value, kv.CreateRevision, s.config, now))
	}
	slices.SortFunc(s.holders, func(a, b Holder) int { return cmp.Compare(a.Token, b.Token) })
	wp := m.waitersPrefix(group)
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		w := waiterEntry{id: strings.TrimPrefix(string(kv.Key), wp), createRev: kv.CreateRevision, lease: clientv3.LeaseID(kv.Lease)}
		var rec waiterRecord
		if json.Unmarshal(kv.Value, &rec) == nil {
			w.since = rec.Since
		}
		s.waiters = append(s.waiters, w)
	}
	slices.SortFunc(s.waiters, func(a, b waiterEntry) int { return cmp.Compare(a.createRev, b.createRev) })
	return s, nil
}

// decodeConfig returns the effective config for a stored value (nil:
// none stored). An undecodable config is an error, never the defaults:
// falling back could raise the max someone lowered.
func (m *Manager) decodeConfig(raw []byte) (GroupConfig, error) {
	c := GroupConfig{Max: m.cfg.DefaultMax}
	if raw != nil {
		if err := json.Unmarshal(raw, &c); err != nil {
			return GroupConfig{}, fmt.Errorf("decode group config: %v: %w", err, ErrInvalidConfig)
		}
		if err := c.Validate(); err != nil {
			return GroupConfig{}, fmt.Errorf("stored group config: %w", err)
		}
	}
	if c.HoldDeadline == 0 {
		c.HoldDeadline = m.cfg.DefaultHoldDeadline
	}
	return c, nil
}

// decodeHolder builds a Holder from its key. An undecodable value still
// yields a holder (the slot counts as taken: fail closed) with phase
// "unknown", so an admin can see and remove it.
func (m *Manager) decodeHolder(group, id string, raw []byte, token int64, c GroupConfig, now time.Time) Holder {
	var rec holderRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		m.log.Warn("undecodable holder record", "group", group, "id", id, "error", err)
		rec = holderRecord{Phase: "unknown"}
	}
	return Holder{
		ID:          id,
		Group:       group,
		BootID:      rec.BootID,
		Token:       token,
		AcquiredAt:  rec.AcquiredAt,
		Phase:       rec.Phase,
		RebootingAt: rec.RebootingAt,
		VersionFrom: rec.VersionFrom,
		VersionTo:   rec.VersionTo,
		Overdue:     c.HoldDeadline > 0 && !rec.AcquiredAt.IsZero() && now.Sub(rec.AcquiredAt) > c.HoldDeadline,
	}
}

func validate(group, id string) error {
	if err := ValidateGroup(group); err != nil {
		return err
	}
	return ValidateID(id)
}
