package rebootlock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// maxAttempts bounds the optimistic retry loops. A conflict needs another
// grant, MarkRebooting or config write in the same group between our read
// and our Txn; only the first few waiters ever try to grant, so twenty
// consecutive conflicts mean something is hammering the group.
const maxAttempts = 20

// backoff sleeps a short, jittered, growing time before retry attempt
// (1-based), or returns the context's error.
func backoff(ctx context.Context, attempt int) error {
	d := time.Duration(attempt)*time.Millisecond + rand.N(time.Duration(attempt)*2*time.Millisecond+time.Millisecond)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Lock is FleetLock's RecursiveLock. If id holds a slot in group it returns
// that holder without writing. Otherwise id is queued as a waiter (or its
// waiter lease renewed) and granted a slot if one is free and no earlier
// waiter is entitled to it; the error wraps ErrFull when not granted, with
// the max, the holder count and id's queue position in its message.
//
// Txn conflicts with concurrent grants are retried here, never returned.
// Callers should bound ctx: while etcd has no quorum, calls block until it
// ends.
func (m *Manager) Lock(ctx context.Context, group, id string, info LockInfo) (Holder, error) {
	if err := validate(group, id); err != nil {
		return Holder{}, fmt.Errorf("rebootlock: lock: %w", err)
	}
	h, err := m.lock(ctx, group, id, info)
	if err != nil {
		return Holder{}, fmt.Errorf("rebootlock: lock: %w", err)
	}
	return h, nil
}

func (m *Manager) lock(ctx context.Context, group, id string, info LockInfo) (Holder, error) {
	renewed := false
	var last decision
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		s, err := m.read(ctx, group)
		if err != nil {
			return Holder{}, err
		}
		if h, ok := s.holder(id); ok {
			if _, stale := s.waiter(id); stale {
				// Left by an unlucky interleaving of two concurrent calls
				// for the same id; decide ignores it, but tidy up.
				if _, err := m.cli.Delete(ctx, m.waiterKey(group, id)); err != nil {
					m.log.Debug("delete stale waiter", "group", group, "id", id, "error", err)
				}
			}
			return h, nil
		}
		w, queued := s.waiter(id)
		if !queued && len(s.waiters) == 0 && len(s.holders) < s.config.Max {
			// Uncontended: nobody waits and a slot is free, so grant at
			// once without a queue entry (one write instead of three). A
			// conflict falls back to queueing.
			h, ok, err := m.grant(ctx, group, id, info, s, waiterEntry{id: id})
			if err != nil {
				return Holder{}, err
			}
			if ok {
				return h, nil
			}
			m.metrics.conflicts.Inc()
		}
		if !queued {
			if err := m.enqueue(ctx, group, id, 0); err != nil {
				return Holder{}, err
			}
			renewed = true
			continue // read again to learn our position
		}
		if !renewed {
			if err := m.renew(ctx, group, w); err != nil {
				return Holder{}, err
			}
			renewed = true
		}
		last = s.decide(id)
		if !last.Grant {
			return Holder{}, &FullError{Group: group, Held: len(s.holders), Max: s.config.Max, Position: last.Position, Queue: last.Queue}
		}
		h, ok, err := m.grant(ctx, group, id, info, s, w)
		if err != nil {
			return Holder{}, err
		}
		if ok {
			return h, nil
		}
		m.metrics.conflicts.Inc()
		if err := backoff(ctx, attempt); err != nil {
			return Holder{}, err
		}
	}
	// Not a failure of the caller's request as such: it was not granted this
	// time and should ask again, exactly as when the group is full.
	return Holder{}, fmt.Errorf("group %q: gave up after %d conflicting attempts (queue position %d): %w",
		group, maxAttempts, last.Position, ErrFull)
}

// enqueue creates id's waiter key with a fresh lease, unless id is already
// waiting or holding (then it does nothing). With createRev > 0 it instead
// re-puts the existing key, which keeps its create revision and therefore
// its queue position, under the new lease.
func (m *Manager) enqueue(ctx context.Context, group, id string, createRev int64) error {
	lease, err := m.cli.Grant(ctx, int64((m.cfg.WaiterTTL+time.Second-1)/time.Second))
	if err != nil {
		return fmt.Errorf("grant waiter lease: %w", err)
	}
	val, err := json.Marshal(waiterRecord{ID: id, Since: m.now().UTC()})
	if err != nil {
		return err
	}
	wk := m.waiterKey(group, id)
	put := clientv3.OpPut(wk, string(val), clientv3.WithLease(lease.ID))
	if createRev > 0 {
		// Keep the original "since".
		put = clientv3.OpPut(wk, "", clientv3.WithIgnoreValue(), clientv3.WithLease(lease.ID))
	}
	resp, err := m.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(wk), "=", createRev),
		clientv3.Compare(clientv3.CreateRevision(m.holderKey(group, id)), "=", 0),
	).Then(put).Commit()
	if err != nil {
		return fmt.Errorf("enqueue: %w", err)
	}
	if !resp.Succeeded {
		// Someone (another call for the same id) changed it first; the
		// unused lease would expire by itself, but free it now.
		m.revoke(ctx, lease.ID)
		return nil
	}
	m.noteRenewed(lease.ID)
	return nil
}

// revoke frees a lease nobody needs; failure only means it lives until
// its TTL ends.
func (m *Manager) revoke(ctx context.Context, id clientv3.LeaseID) {
	if _, err := m.cli.Revoke(ctx, id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		m.log.Debug("revoke unused lease", "lease", int64(id), "error", err)
	}
}

// renew extends w's lease for another WaiterTTL. If the lease is already
// gone (the machine did not ask for longer than WaiterTTL and the key is
// about to vanish), the key is re-put under a new lease, keeping its
// position if it still exists.
func (m *Manager) renew(ctx context.Context, group string, w waiterEntry) error {
	if w.lease != clientv3.NoLease {
		if m.renewedRecently(w.lease) {
			return nil
		}
		_, err := m.cli.KeepAliveOnce(ctx, w.lease)
		if err == nil {
			m.noteRenewed(w.lease)
			return nil
		}
		if !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return fmt.Errorf("renew waiter lease: %w", err)
		}
	}
	return m.enqueue(ctx, group, w.id, w.createRev)
}

// renewedRecently reports whether this Manager renewed lease less than a
// third of WaiterTTL ago, so that at least two thirds of the TTL remain.
// Lease TTLs run on real time, hence time.Now rather than m.now.
func (m *Manager) renewedRecently(lease clientv3.LeaseID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	at, ok := m.renewedAt[lease]
	return ok && time.Since(at) < m.cfg.WaiterTTL/3
}

func (m *Manager) noteRenewed(lease clientv3.LeaseID) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.renewedAt[lease] = now
	if now.Sub(m.lastPrune) > m.cfg.WaiterTTL {
		maps.DeleteFunc(m.renewedAt, func(_ clientv3.LeaseID, at time.Time) bool { return now.Sub(at) > m.cfg.WaiterTTL })
		m.lastPrune = now
	}
}

// grant tries to turn waiter w into a holder in one Txn that requires the
// snapshot s to be current as far as the decision is concerned, and ok is
// false (a conflict) otherwise:
//
//   - no holder key created after s.rev. The decision depends only on which
//     ids hold slots; holders deleted since only lower the count, and a
//     holder rewriting its record (MarkRebooting) changes nothing, so
//     comparing CreateRevision over the prefix is exact where ModRevision
//     would add conflicts with every MarkRebooting;
//   - the config not written after s.rev (max may have been lowered);
//   - id not holding (covered by the first compare, kept for clarity) and
//     w still queued under the same create revision.
func (m *Manager) grant(ctx context.Context, group, id string, info LockInfo, s snapshot, w waiterEntry) (Holder, bool, error) {
	now := m.now().UTC()
	rec := holderRecord{
		ID:          id,
		Group:       group,
		BootID:      info.BootID,
		AcquiredAt:  now,
		Phase:       PhaseGranted,
		VersionFrom: info.VersionFrom,
		VersionTo:   info.VersionTo,
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return Holder{}, false, err
	}
	hk, wk := m.holderKey(group, id), m.waiterKey(group, id)
	resp, err := m.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(m.holdersPrefix(group)), "<", s.rev+1).WithPrefix(),
		clientv3.Compare(clientv3.ModRevision(m.configKey(group)), "<", s.rev+1),
		clientv3.Compare(clientv3.CreateRevision(hk), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(wk), "=", w.createRev),
	).Then(
		clientv3.OpPut(hk, string(val)),
		clientv3.OpDelete(wk),
	).Commit()
	if err != nil {
		return Holder{}, false, fmt.Errorf("grant: %w", err)
	}
	if !resp.Succeeded {
		return Holder{}, false, nil
	}
	// The holder key was created by this Txn, so its create revision, the
	// fencing token, is the Txn's revision.
	h := m.decodeHolder(group, id, val, resp.Header.Revision, s.config, now)
	m.metrics.grants.WithLabelValues(group).Inc()
	// The waiter lease has no key left; it would expire by itself.
	if w.lease != clientv3.NoLease {
		m.revoke(ctx, w.lease)
	}
	m.emit(Event{Kind: EventGranted, Group: group, ID: id,
		Message: fmt.Sprintf("granted slot (token %d, %d of max %d held)", h.Token, len(s.holders)+1, s.config.Max)})
	return h, true, nil
}

// Unlock is FleetLock's UnlockIfHeld: it releases id's slot if it holds
// one (released reports whether it did) and drops id from the queue. It
// takes no token: it is what a FleetLock client calls at steady state,
// and it is idempotent.
func (m *Manager) Unlock(ctx context.Context, group, id string) (bool, error) {
	if err := validate(group, id); err != nil {
		return false, fmt.Errorf("rebootlock: unlock: %w", err)
	}
	resp, err := m.cli.Txn(ctx).Then(
		clientv3.OpDelete(m.holderKey(group, id), clientv3.WithPrevKV()),
		clientv3.OpDelete(m.waiterKey(group, id)),
	).Commit()
	if err != nil {
		return false, fmt.Errorf("rebootlock: unlock: %w", err)
	}
	del := resp.Responses[0].GetResponseDeleteRange()
	if del.Deleted == 0 {
		return false, nil
	}
	var token int64
	if len(del.PrevKvs) > 0 {
		token = del.PrevKvs[0].CreateRevision
	}
	m.emit(Event{Kind: EventReleased, Group: group, ID: id, Message: fmt.Sprintf("released slot (token %d)", token)})
	return true, nil
}

// Release gives back id's slot if its token is still token: what the agent
// calls once the machine is back and healthy. A slot that is already gone
// counts as released (the call may be a retry, or an admin freed it); a
// slot held under another token returns ErrTokenMismatch and stays.
func (m *Manager) Release(ctx context.Context, group, id string, token int64) error {
	if err := validate(group, id); err != nil {
		return fmt.Errorf("rebootlock: release: %w", err)
	}
	if token <= 0 {
		return fmt.Errorf("rebootlock: release: token %d: %w", token, ErrTokenMismatch)
	}
	hk := m.holderKey(group, id)
	resp, err := m.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(hk), "=", token),
	).Then(
		clientv3.OpDelete(hk),
		clientv3.OpDelete(m.waiterKey(group, id)),
	).Else(
		clientv3.OpGet(hk),
	).Commit()
	if err != nil {
		return fmt.Errorf("rebootlock: release: %w", err)
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return nil
		}
		return fmt.Errorf("rebootlock: release: %s holds token %d, not %d: %w", id, kvs[0].CreateRevision, token, ErrTokenMismatch)
	}
	m.emit(Event{Kind: EventReleased, Group: group, ID: id, Message: fmt.Sprintf("released slot (token %d)", token)})
	return nil
}

// MarkRebooting is the re-check immediately before the reboot: it requires
// id to still hold its slot under token and records, in the same Txn, that
// the reboot was authorised (Phase "rebooting", RebootingAt now). It returns
// ErrNotHolder when id holds no slot and ErrTokenMismatch when it holds one
// under another token; either way the machine must not reboot.
func (m *Manager) MarkRebooting(ctx context.Context, group, id string, token int64) (Holder, error) {
	if err := validate(group, id); err != nil {
		return Holder{}, fmt.Errorf("rebootlock: mark rebooting: %w", err)
	}
	hk := m.holderKey(group, id)
	for attempt := 1; ; attempt++ {
		resp, err := m.cli.Txn(ctx).Then(
			clientv3.OpGet(hk),
			clientv3.OpGet(m.configKey(group)),
		).Commit()
		if err != nil {
			return Holder{}, fmt.Errorf("rebootlock: mark rebooting: %w", err)
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return Holder{}, fmt.Errorf("rebootlock: mark rebooting: %s in group %q: %w", id, group, ErrNotHolder)
		}
		kv := kvs[0]
		if kv.CreateRevision != token {
			return Holder{}, fmt.Errorf("rebootlock: mark rebooting: %s holds token %d, not %d: %w", id, kv.CreateRevision, token, ErrTokenMismatch)
		}
		var raw []byte
		if ckvs := resp.Responses[1].GetResponseRange().Kvs; len(ckvs) > 0 {
			raw = ckvs[0].Value
		}
		gc, err := m.decodeConfig(raw)
		if err != nil {
			return Holder{}, fmt.Errorf("rebootlock: mark rebooting: %w", err)
		}
		var rec holderRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			// Rewrite what we know rather than refuse: the token matched.
			rec = holderRecord{ID: id, Group: group}
		}
		now := m.now().UTC()
		rec.Phase, rec.RebootingAt = PhaseRebooting, now
		val, err := json.Marshal(rec)
		if err != nil {
			return Holder{}, err
		}
		tresp, err := m.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.CreateRevision(hk), "=", token),
			clientv3.Compare(clientv3.ModRevision(hk), "=", kv.ModRevision),
		).Then(clientv3.OpPut(hk, string(val))).Commit()
		if err != nil {
			return Holder{}, fmt.Errorf("rebootlock: mark rebooting: %w", err)
		}
		if tresp.Succeeded {
			return m.decodeHolder(group, id, val, token, gc, now), nil
		}
		m.metrics.conflicts.Inc()
		if attempt >= maxAttempts {
			return Holder{}, fmt.Errorf("rebootlock: mark rebooting: %s: gave up after %d conflicting attempts", id, attempt)
		}
		if err := backoff(ctx, attempt); err != nil {
			return Holder{}, fmt.Errorf("rebootlock: mark rebooting: %w", err)
		}
	}
}

// Holder returns id's holder record, if id holds a slot in group.
func (m *Manager) Holder(ctx context.Context, group, id string) (Holder, bool, error) {
	if err := validate(group, id); err != nil {
		return Holder{}, false, fmt.Errorf("rebootlock: holder: %w", err)
	}
	resp, err := m.cli.Txn(ctx).Then(
		clientv3.OpGet(m.holderKey(group, id)),
		clientv3.OpGet(m.configKey(group)),
	).Commit()
	if err != nil {
		return Holder{}, false, fmt.Errorf("rebootlock: holder: %w", err)
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return Holder{}, false, nil
	}
	var raw []byte
	if ckvs := resp.Responses[1].GetResponseRange().Kvs; len(ckvs) > 0 {
		raw = ckvs[0].Value
	}
	gc, err := m.decodeConfig(raw)
	if err != nil {
		return Holder{}, false, fmt.Errorf("rebootlock: holder: %w", err)
	}
	return m.decodeHolder(group, id, kvs[0].Value, kvs[0].CreateRevision, gc, m.now()), true, nil
}

// ForceUnlock is the admin's way to free the slot of a machine that will
// not come back. actor (who did it) goes into the event. ErrNotHolder if
// id holds no slot.
func (m *Manager) ForceUnlock(ctx context.Context, group, id, actor string) error {
	if err := validate(group, id); err != nil {
		return fmt.Errorf("rebootlock: force unlock: %w", err)
	}
	hk := m.holderKey(group, id)
	resp, err := m.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(hk), ">", 0),
	).Then(
		clientv3.OpDelete(hk, clientv3.WithPrevKV()),
	).Commit()
	if err != nil {
		return fmt.Errorf("rebootlock: force unlock: %w", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("rebootlock: force unlock: %s in group %q: %w", id, group, ErrNotHolder)
	}
	var token int64
	if prev := resp.Responses[0].GetResponseDeleteRange().PrevKvs; len(prev) > 0 {
		token = prev[0].CreateRevision
	}
	m.log.Warn("slot force-released", "group", group, "id", id, "token", token, "actor", actor)
	m.emit(Event{Kind: EventForceReleased, Group: group, ID: id,
		Message: fmt.Sprintf("slot force-released by %s (token %d)", actor, token)})
	return nil
}

// Changes returns a channel that receives once per event that may free a
// slot of group: a holder key deleted or the group's config written (a
// waiter counts them to know when its turn can have come; should it fall
// far behind, events are dropped rather than block the watch). Call it before a Lock whose ErrFull you want to wait on, so no
// release between the Lock's read and the wait is missed. The watch ends
// with ctx.
func (m *Manager) Changes(ctx context.Context, group string) <-chan struct{} {
	out := make(chan struct{}, 256)
	wc := m.cli.Watch(clientv3.WithRequireLeader(ctx), m.groupPrefix(group), clientv3.WithPrefix())
	holders, config := m.holdersPrefix(group), m.configKey(group)
	go func() {
		for resp := range wc {
			for _, ev := range resp.Events {
				k := string(ev.Kv.Key)
				if (ev.Type == clientv3.EventTypeDelete && strings.HasPrefix(k, holders)) || k == config {
					select {
					case out <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	return out
}

// FullError is the ErrFull of a Lock that queued the caller: where it
// stands, so a caller waiting for releases knows when asking again can
// succeed.
type FullError struct {
	Group     string
	Held, Max int
	Position  int // 1-based place in the queue
	Queue     int
}

func (e *FullError) Error() string {
	return fmt.Sprintf("group %q: %d of max %d slots held, queue position %d of %d: %v",
		e.Group, e.Held, e.Max, e.Position, e.Queue, ErrFull)
}

// Unwrap makes errors.Is(err, ErrFull) true.
func (e *FullError) Unwrap() error { return ErrFull }
