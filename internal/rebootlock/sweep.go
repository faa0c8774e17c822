package rebootlock

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// metrics are the Manager's Prometheus series. The gauges are refreshed by
// the sweeper (Run), not on scrape, so a scrape never waits for etcd.
type metrics struct {
	holders   *prometheus.GaugeVec
	max       *prometheus.GaugeVec
	overdue   *prometheus.GaugeVec
	grants    *prometheus.CounterVec
	conflicts prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	mt := &metrics{
		holders: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flotilla_rebootlock_holders", Help: "Machines holding a reboot slot, by group (updated by the sweeper).",
		}, []string{"group"}),
		max: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flotilla_rebootlock_max", Help: "Reboot slots of the group (updated by the sweeper).",
		}, []string{"group"}),
		overdue: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flotilla_rebootlock_overdue_holders", Help: "Holders past the group's hold deadline (updated by the sweeper).",
		}, []string{"group"}),
		grants: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_rebootlock_grants_total", Help: "Reboot slots granted by this process, by group.",
		}, []string{"group"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flotilla_rebootlock_txn_conflicts_total", Help: "etcd transactions that lost a race and were retried.",
		}),
	}
	if reg == nil {
		return mt, nil
	}
	for _, c := range []prometheus.Collector{mt.holders, mt.max, mt.overdue, mt.grants, mt.conflicts} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return mt, nil
}

// Run sweeps every SweepInterval until ctx ends, then returns nil. A sweep
// refreshes the gauges, reports holders that became overdue (event
// "lock-overdue", once per grant) and, in groups with AutoRelease, releases
// them ("lock-auto-released"). Sweep errors (etcd unavailable) are logged
// and retried at the next tick. Several servers may run Run at once: the
// release is guarded by the holder's token, so it happens once.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(m.cfg.SweepInterval)
	defer t.Stop()
	for {
		if err := m.sweep(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("sweep failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// sweep is one pass of Run over all groups.
func (m *Manager) sweep(ctx context.Context) error {
	groups, err := m.Groups(ctx)
	if err != nil {
		return err
	}
	var errs []error
	seen := map[holderRef]bool{}
	present := map[string]bool{}
	for _, g := range groups {
		present[g] = true
		if err := m.sweepGroup(ctx, g, seen); err != nil {
			errs = append(errs, fmt.Errorf("group %q: %w", g, err))
		}
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if len(errs) == 0 {
		// Forget holders that are gone, so the map does not grow forever.
		maps.DeleteFunc(m.overdueSeen, func(r holderRef, _ int64) bool { return !seen[r] })
	}
	for g := range m.gaugeGroups {
		if !present[g] {
			m.metrics.holders.DeleteLabelValues(g)
			m.metrics.max.DeleteLabelValues(g)
			m.metrics.overdue.DeleteLabelValues(g)
			delete(m.gaugeGroups, g)
		}
	}
	for g := range present {
		m.gaugeGroups[g] = true
	}
	return errors.Join(errs...)
}

func (m *Manager) sweepGroup(ctx context.Context, group string, seen map[holderRef]bool) error {
	s, err := m.read(ctx, group)
	if err != nil {
		return err
	}
	overdue := 0
	for _, h := range s.holders {
		ref := holderRef{group, h.ID}
		seen[ref] = true
		if !h.Overdue {
			continue
		}
		overdue++
		m.mu.Lock()
		reported := m.overdueSeen[ref] == h.Token
		m.overdueSeen[ref] = h.Token
		m.mu.Unlock()
		if !reported {
			m.log.Warn("holder overdue", "group", group, "id", h.ID, "token", h.Token,
				"acquired_at", h.AcquiredAt, "hold_deadline", s.config.HoldDeadline)
			m.emit(Event{Kind: EventOverdue, Group: group, ID: h.ID,
				Message: fmt.Sprintf("slot held since %s, longer than %v (token %d, phase %s)",
					h.AcquiredAt.Format(time.RFC3339), s.config.HoldDeadline, h.Token, h.Phase)})
		}
		if s.config.AutoRelease {
			released, err := m.autoRelease(ctx, group, h)
			if err != nil {
				return err
			}
			if released {
				overdue--
			}
		}
	}
	m.metrics.holders.WithLabelValues(group).Set(float64(len(s.holders)))
	m.metrics.max.WithLabelValues(group).Set(float64(s.config.Max))
	m.metrics.overdue.WithLabelValues(group).Set(float64(overdue))
	return nil
}

// autoRelease deletes h's key if it still has h's token.
func (m *Manager) autoRelease(ctx context.Context, group string, h Holder) (bool, error) {
	hk := m.holderKey(group, h.ID)
	resp, err := m.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(hk), "=", h.Token),
	).Then(clientv3.OpDelete(hk)).Commit()
	if err != nil {
		return false, fmt.Errorf("auto-release %s: %w", h.ID, err)
	}
	if !resp.Succeeded {
		return false, nil // released or re-granted meanwhile
	}
	m.log.Warn("overdue holder auto-released", "group", group, "id", h.ID, "token", h.Token)
	m.emit(Event{Kind: EventAutoReleased, Group: group, ID: h.ID,
		Message: fmt.Sprintf("overdue slot released automatically (token %d, held since %s)", h.Token, h.AcquiredAt.Format(time.RFC3339))})
	return true, nil
}
