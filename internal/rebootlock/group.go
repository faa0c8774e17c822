package rebootlock

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// SetConfig stores group's config. It applies at once: Lock reads the config
// on every call. Lowering Max below the current holders revokes nothing; it
// stops new grants until enough holders have released.
func (m *Manager) SetConfig(ctx context.Context, group string, c GroupConfig) error {
	if err := ValidateGroup(group); err != nil {
		return fmt.Errorf("rebootlock: set config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("rebootlock: set config: %w", err)
	}
	val, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("rebootlock: set config: %w", err)
	}
	ck := m.configKey(group)
	// Get then Put in one Txn: the Get sees the value the Put replaced.
	resp, err := m.cli.Txn(ctx).Then(clientv3.OpGet(ck), clientv3.OpPut(ck, string(val))).Commit()
	if err != nil {
		return fmt.Errorf("rebootlock: set config: %w", err)
	}
	var old []byte
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		old = kvs[0].Value
	}
	// An undecodable old config is being replaced; report it as the default.
	prev, err := m.decodeConfig(old)
	if err != nil {
		prev = GroupConfig{Max: m.cfg.DefaultMax}
	}
	m.log.Info("group config set", "group", group, "max", c.Max, "hold_deadline", c.HoldDeadline, "auto_release", c.AutoRelease)
	if prev.Max != c.Max {
		m.emit(Event{Kind: EventMaxChanged, Group: group, Message: fmt.Sprintf("max changed from %d to %d", prev.Max, c.Max)})
	}
	return nil
}

// SetMax changes only group's max (read-modify-write of its config,
// retried on conflicts); see SetConfig.
func (m *Manager) SetMax(ctx context.Context, group string, limit int) error {
	if err := ValidateGroup(group); err != nil {
		return fmt.Errorf("rebootlock: set max: %w", err)
	}
	if err := (GroupConfig{Max: limit}).Validate(); err != nil {
		return fmt.Errorf("rebootlock: set max: %w", err)
	}
	ck := m.configKey(group)
	for attempt := 1; ; attempt++ {
		resp, err := m.cli.Get(ctx, ck)
		if err != nil {
			return fmt.Errorf("rebootlock: set max: %w", err)
		}
		// Stored as found, except for max: a zero hold deadline keeps
		// meaning "the default".
		c := GroupConfig{Max: m.cfg.DefaultMax}
		var modRev int64
		if len(resp.Kvs) > 0 {
			modRev = resp.Kvs[0].ModRevision
			if err := json.Unmarshal(resp.Kvs[0].Value, &c); err != nil {
				return fmt.Errorf("rebootlock: set max: decode group config: %v: %w", err, ErrInvalidConfig)
			}
		}
		old := c.Max
		c.Max = limit
		val, err := json.Marshal(c)
		if err != nil {
			return fmt.Errorf("rebootlock: set max: %w", err)
		}
		tresp, err := m.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(ck), "=", modRev),
		).Then(clientv3.OpPut(ck, string(val))).Commit()
		if err != nil {
			return fmt.Errorf("rebootlock: set max: %w", err)
		}
		if tresp.Succeeded {
			m.log.Info("group max set", "group", group, "old_max", old, "max", limit)
			if old != limit {
				m.emit(Event{Kind: EventMaxChanged, Group: group, Message: fmt.Sprintf("max changed from %d to %d", old, limit)})
			}
			return nil
		}
		m.metrics.conflicts.Inc()
		if attempt >= maxAttempts {
			return fmt.Errorf("rebootlock: set max: gave up after %d conflicting attempts", attempt)
		}
		if err := backoff(ctx, attempt); err != nil {
			return fmt.Errorf("rebootlock: set max: %w", err)
		}
	}
}

// Status returns group's config, holders and queue at one revision. A group
// without any key is reported with the default config and no holders.
func (m *Manager) Status(ctx context.Context, group string) (GroupStatus, error) {
	if err := ValidateGroup(group); err != nil {
		return GroupStatus{}, fmt.Errorf("rebootlock: status: %w", err)
	}
	s, err := m.read(ctx, group)
	if err != nil {
		return GroupStatus{}, fmt.Errorf("rebootlock: status: %w", err)
	}
	return s.status(group), nil
}

func (s *snapshot) status(group string) GroupStatus {
	st := GroupStatus{
		Group:        group,
		Max:          s.config.Max,
		Available:    max(0, s.config.Max-len(s.holders)),
		HoldDeadline: s.config.HoldDeadline,
		AutoRelease:  s.config.AutoRelease,
		Holders:      slices.Clone(s.holders),
		Waiters:      []Waiter{},
	}
	if st.Holders == nil {
		st.Holders = []Holder{}
	}
	for _, w := range s.waiters {
		if _, held := s.holder(w.id); held {
			continue // stale entry; decide ignores it too
		}
		st.Waiters = append(st.Waiters, Waiter{ID: w.id, Since: w.since, Position: len(st.Waiters) + 1})
	}
	return st
}

// Groups returns the names of groups that have any key (config, holder or
// waiter), sorted.
func (m *Manager) Groups(ctx context.Context) ([]string, error) {
	gp := m.groupsPrefix()
	resp, err := m.cli.Get(ctx, gp, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("rebootlock: groups: %w", err)
	}
	groups := []string{}
	for _, kv := range resp.Kvs {
		name, _, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), gp), "/")
		if !ok || ValidateGroup(name) != nil {
			continue
		}
		groups = append(groups, name)
	}
	// Key order is not name order ("a-b/x" sorts before "a/x").
	slices.Sort(groups)
	return slices.Compact(groups), nil
}
