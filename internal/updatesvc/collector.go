package updatesvc

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// fleetCollector exports how many instances each group has by status and by
// version, so a rollout can be graphed and alerted on from Prometheus. The
// numbers come from one aggregate query per group, cached briefly so that
// several scrapers do not multiply the database work.
type fleetCollector struct {
	s        *Service
	byStatus *prometheus.Desc
	byVer    *prometheus.Desc
	paused   *prometheus.Desc
	ttl      time.Duration

	mu      sync.Mutex
	at      time.Time
	metrics []prometheus.Metric
}

func newFleetCollector(s *Service) *fleetCollector {
	return &fleetCollector{
		s:        s,
		byStatus: prometheus.NewDesc("flotilla_group_instances", "Instances of a group by update status.", []string{"app", "group", "status"}, nil),
		byVer:    prometheus.NewDesc("flotilla_group_instances_by_version", "Instances of a group by running version.", []string{"app", "group", "version"}, nil),
		paused:   prometheus.NewDesc("flotilla_group_paused", "1 when the group's rollout is paused.", []string{"app", "group"}, nil),
		ttl:      15 * time.Second,
	}
}

// Describe implements prometheus.Collector.
func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.byStatus
	ch <- c.byVer
	ch <- c.paused
}

// Collect implements prometheus.Collector.
func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) > c.ttl {
		c.metrics = c.gather()
		c.at = time.Now()
	}
	for _, m := range c.metrics {
		ch <- m
	}
}

func (c *fleetCollector) gather() []prometheus.Metric {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	snap, err := c.s.cache.get(ctx)
	if err != nil {
		c.s.log.Warn("metrics: load config", "err", err)
		return nil
	}
	var out []prometheus.Metric
	for _, g := range snap.groups {
		rs, err := c.s.st.RolloutStatus(ctx, g.AppID, g.Name)
		if err != nil {
			c.s.log.Warn("metrics: rollout status", "group", g.Name, "err", err)
			continue
		}
		for st, n := range rs.ByStatus {
			out = append(out, prometheus.MustNewConstMetric(c.byStatus, prometheus.GaugeValue, float64(n), g.AppID, g.Name, string(st)))
		}
		for v, n := range rs.ByVersion {
			out = append(out, prometheus.MustNewConstMetric(c.byVer, prometheus.GaugeValue, float64(n), g.AppID, g.Name, v))
		}
		paused := 0.0
		if g.Policy.Paused {
			paused = 1
		}
		out = append(out, prometheus.MustNewConstMetric(c.paused, prometheus.GaugeValue, paused, g.AppID, g.Name))
	}
	return out
}
