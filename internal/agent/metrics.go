package agent

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	status    *prometheus.GaugeVec
	checks    *prometheus.CounterVec
	failures  *prometheus.CounterVec
	applied   prometheus.Counter
	rollbacks prometheus.Counter
	healthy   prometheus.Gauge
}

var allStatuses = []string{StatusIdle, StatusChecking, StatusUpdateAvailable, StatusDownloading,
	StatusVerifying, StatusFinalizing, StatusUpdatedNeedReboot, StatusReportingError}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		status: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flotilla_agent_status",
			Help: "1 for the agent's current update_engine status, 0 for the others."}, []string{"status"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flotilla_agent_checks_total",
			Help: "Update checks by result (ok, error)."}, []string{"result"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flotilla_agent_update_failures_total",
			Help: "Failed update attempts by update_engine error code."}, []string{"code"}),
		applied: prometheus.NewCounter(prometheus.CounterOpts{Name: "flotilla_agent_updates_applied_total",
			Help: "Updates written to the inactive slot and committed."}),
		rollbacks: prometheus.NewCounter(prometheus.CounterOpts{Name: "flotilla_agent_rollbacks_total",
			Help: "Boots that came up in the previous slot instead of the update."}),
		healthy: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flotilla_agent_boot_healthy",
			Help: "1 once the health gate passed for this boot, 0 while pending, -1 after it failed."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.status, m.checks, m.failures, m.applied, m.rollbacks, m.healthy} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("agent: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) setStatus(s string) {
	for _, x := range allStatuses {
		v := 0.0
		if x == s {
			v = 1
		}
		m.status.WithLabelValues(x).Set(v)
	}
}
