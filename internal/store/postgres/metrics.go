package postgres

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the backend's Prometheus collectors. They always exist so the
// code needs no nil checks; they are registered only when a registerer is
// given.
type metrics struct {
	txDuration *prometheus.HistogramVec
	beginWait  prometheus.Histogram
	retries    *prometheus.CounterVec

	reg       prometheus.Registerer
	poolStats prometheus.Collector // registered by this Store, or nil
}

func newMetrics(reg prometheus.Registerer, pool *pgxpool.Pool) (*metrics, error) {
	m := &metrics{
		txDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flotilla_postgres_write_tx_duration_seconds",
			Help:    "Duration of read-write transactions from BEGIN to COMMIT or ROLLBACK, by outcome.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"result"}),
		beginWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flotilla_postgres_begin_wait_seconds",
			Help:    "Time spent acquiring a pooled connection and starting a read-write transaction.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_postgres_tx_retries_total",
			Help: "Read-write transactions run again after PostgreSQL aborted them, by SQLSTATE (40001 serialization failure, 40P01 deadlock).",
		}, []string{"sqlstate"}),
	}
	if reg == nil {
		return m, nil
	}
	m.reg = reg
	// Reuse collectors already registered by an earlier Store on the same
	// registry (tests, or a reopen) instead of failing.
	var err error
	if m.txDuration, err = register(reg, m.txDuration); err != nil {
		return nil, err
	}
	if m.beginWait, err = register(reg, m.beginWait); err != nil {
		return nil, err
	}
	if m.retries, err = register(reg, m.retries); err != nil {
		return nil, err
	}
	// Pool statistics belong to one pool, so they cannot be shared like the
	// collectors above: while another Store on the registry reports its
	// pool, this one reports nothing rather than mixing the two.
	ps := &poolCollector{pool: pool}
	if err := reg.Register(ps); err == nil {
		m.poolStats = ps
	} else if are := (prometheus.AlreadyRegisteredError{}); !errors.As(err, &are) {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	return m, nil
}

// unregister removes what only this Store reports, so that a Store opened
// later on the same registry can report its own pool.
func (m *metrics) unregister() {
	if m.poolStats != nil {
		m.reg.Unregister(m.poolStats)
		m.poolStats = nil
	}
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("register metrics: %w", err)
	}
	return c, nil
}

var (
	descConns = prometheus.NewDesc("flotilla_postgres_pool_connections",
		"Connections in the pool, by state.", []string{"state"}, nil)
	descMaxConns = prometheus.NewDesc("flotilla_postgres_pool_max_connections",
		"Maximum size of the pool (pool_max_conns).", nil, nil)
	descAcquires = prometheus.NewDesc("flotilla_postgres_pool_acquires_total",
		"Connections acquired from the pool.", nil, nil)
	descEmptyAcquires = prometheus.NewDesc("flotilla_postgres_pool_empty_acquires_total",
		"Acquires that found no idle connection and had to wait for one or open one.", nil, nil)
	descAcquireWait = prometheus.NewDesc("flotilla_postgres_pool_acquire_wait_seconds_total",
		"Total time spent acquiring connections from the pool.", nil, nil)
)

// poolCollector reports pgxpool's statistics at scrape time.
type poolCollector struct{ pool *pgxpool.Pool }

// Describe implements prometheus.Collector.
func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descConns
	ch <- descMaxConns
	ch <- descAcquires
	ch <- descEmptyAcquires
	ch <- descAcquireWait
}

// Collect implements prometheus.Collector.
func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.pool.Stat()
	ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(st.AcquiredConns()), "acquired")
	ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(st.IdleConns()), "idle")
	ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(st.ConstructingConns()), "constructing")
	ch <- prometheus.MustNewConstMetric(descMaxConns, prometheus.GaugeValue, float64(st.MaxConns()))
	ch <- prometheus.MustNewConstMetric(descAcquires, prometheus.CounterValue, float64(st.AcquireCount()))
	ch <- prometheus.MustNewConstMetric(descEmptyAcquires, prometheus.CounterValue, float64(st.EmptyAcquireCount()))
	ch <- prometheus.MustNewConstMetric(descAcquireWait, prometheus.CounterValue, st.AcquireDuration().Seconds())
}
