// Package updatesvc is flotilla's update service: it answers Omaha requests
// from update_engine-compatible clients, moves instances through their
// update statuses, enforces each group's rollout policy (decided by the pure
// functions in internal/rollout) and keeps the activity log. It also owns
// the background jobs of the update service: grant timeouts and retention.
//
// The REST API and the dashboard read through the store directly but make
// configuration changes through the Service, so that rollouts start, pause
// and resume in one place and the in-memory configuration cache stays
// fresh.
package updatesvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla/flotilla/internal/store"
)

// Config tunes the service. Zero fields take the defaults of DefaultConfig.
type Config struct {
	// LastSeenResolution bounds how stale an instance's last-check time may
	// get: a request that changes nothing else writes the instance row only
	// when its last check is older than this. It keeps steady-state checks
	// read-only (Nebraska does the same with 5 minutes).
	LastSeenResolution time.Duration
	// Retention bounds status history, events and activity.
	Retention time.Duration
	// SweepInterval is how often grant timeouts are enforced.
	SweepInterval time.Duration
	// PruneInterval is how often retention runs.
	PruneInterval time.Duration
	// SampleInterval is how often each group's version breakdown is
	// recorded for the dashboard's chart over time.
	SampleInterval time.Duration
	// CacheTTL bounds how long configuration read from the store is reused.
	CacheTTL time.Duration
	// ServerName is sent as the Omaha response's server attribute.
	ServerName string
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		LastSeenResolution: time.Minute,
		Retention:          90 * 24 * time.Hour,
		SweepInterval:      30 * time.Second,
		PruneInterval:      time.Hour,
		SampleInterval:     time.Minute,
		CacheTTL:           10 * time.Second,
		ServerName:         "flotilla",
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.LastSeenResolution <= 0 {
		c.LastSeenResolution = d.LastSeenResolution
	}
	if c.Retention <= 0 {
		c.Retention = d.Retention
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = d.SweepInterval
	}
	if c.PruneInterval <= 0 {
		c.PruneInterval = d.PruneInterval
	}
	if c.SampleInterval <= 0 {
		c.SampleInterval = d.SampleInterval
	}
	if c.CacheTTL <= 0 {
		c.CacheTTL = d.CacheTTL
	}
	if c.ServerName == "" {
		c.ServerName = d.ServerName
	}
	return c
}

// Service is the update service. Create it with New; run its background
// jobs with Run.
type Service struct {
	cfg   Config
	st    store.Store
	log   *slog.Logger
	now   func() time.Time
	cache *configCache
	touch *touchBatcher
	// missingPkgs remembers which missing packages were already reported.
	missingPkgs sync.Map
	m           metrics

	// notify, if set, is told about every activity entry written (the
	// dashboard's live updates hook in here).
	notify func(store.Activity)
	// notifyStatus, if set, is told about every committed status change.
	notifyStatus func(store.StatusChange)
	// invalidateHook announces configuration writes to other replicas.
	invalidateHook func()
}

type metrics struct {
	requests  *prometheus.CounterVec // by kind: check, event, ping
	decisions *prometheus.CounterVec // by result
	events    *prometheus.CounterVec // by status transition
	duration  prometheus.Histogram   // whole Omaha request
	errors    prometheus.Counter     // store failures on the Omaha path
	appStatus *prometheus.CounterVec // non-ok app statuses sent
	sweeps    *prometheus.CounterVec // timeouts, prune
	retries   prometheus.Counter     // requests planned again after a concurrent change
}

// Option configures a Service.
type Option func(*Service)

// WithClock replaces the wall clock (tests).
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// WithActivityHook registers fn to be called after each activity entry is
// committed.
func WithActivityHook(fn func(store.Activity)) Option { return func(s *Service) { s.notify = fn } }

// WithStatusHook registers fn to be called after each instance status
// change is committed (the dashboard pushes live updates from it). fn runs
// on the request's goroutine and must not block.
func WithStatusHook(fn func(store.StatusChange)) Option {
	return func(s *Service) { s.notifyStatus = fn }
}

// New builds a Service over st. Metrics are registered on reg (nil: not
// registered).
func New(st store.Store, cfg Config, logger *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Service, error) {
	if logger == nil {
		return nil, errors.New("updatesvc: nil logger")
	}
	s := &Service{cfg: cfg.withDefaults(), st: st, log: logger, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	s.cache = &configCache{st: st, ttl: s.cfg.CacheTTL, now: s.now, onInvalidate: s.invalidateHook}
	s.touch = &touchBatcher{st: st, maxBatch: 1000}
	s.m = metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_omaha_requests_total", Help: "Omaha app requests by kind (check, event, ping).",
		}, []string{"kind"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_omaha_update_decisions_total", Help: "Update-check answers by result (update, noupdate, or the hold reason).",
		}, []string{"result"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_instance_status_changes_total", Help: "Instance status changes by new status.",
		}, []string{"status"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "flotilla_omaha_request_duration_seconds", Help: "Time to answer one Omaha request.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flotilla_omaha_store_errors_total", Help: "Omaha requests that failed on a store error.",
		}),
		appStatus: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_omaha_app_errors_total", Help: "Omaha app error statuses sent, by status.",
		}, []string{"status"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flotilla_omaha_replans_total", Help: "Omaha requests planned again because the instance changed concurrently.",
		}),
		sweeps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_update_sweep_rows_total", Help: "Rows changed by background jobs (timed_out, pruned).",
		}, []string{"job"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{s.m.requests, s.m.decisions, s.m.events, s.m.duration, s.m.errors, s.m.appStatus, s.m.sweeps, s.m.retries, newFleetCollector(s)} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Store returns the underlying store for read-only use by API handlers.
func (s *Service) Store() store.Store { return s.st }

// Config returns the service's configuration with defaults filled in.
func (s *Service) Config() Config { return s.cfg }

// Invalidate drops cached configuration; call it after writing apps,
// channels, packages or groups through the store directly.
func (s *Service) Invalidate() { s.cache.invalidate() }

// InvalidateLocal drops cached configuration without announcing it: for a
// change another replica made and announced.
func (s *Service) InvalidateLocal() { s.cache.dropLocal() }

// WithInvalidateHook registers fn to be called after this process changed
// configuration (applications, channels, packages, groups), so that other
// replicas drop their caches. fn must not block for long.
func WithInvalidateHook(fn func()) Option { return func(s *Service) { s.invalidateHook = fn } }

// Run runs the background jobs (grant timeouts, retention, version
// samples) until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	sweep := time.NewTicker(s.cfg.SweepInterval)
	defer sweep.Stop()
	prune := time.NewTicker(s.cfg.PruneInterval)
	defer prune.Stop()
	sample := time.NewTicker(s.cfg.SampleInterval)
	defer sample.Stop()
	// Prune once at start so a server that was down for a long time does not
	// carry expired history until the first tick.
	s.runPrune(ctx)
	s.runSample(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sweep.C:
			if _, err := s.ExpireGrants(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("expire grants", "err", err)
			}
		case <-prune.C:
			s.runPrune(ctx)
		case <-sample.C:
			s.runSample(ctx)
		}
	}
}

func (s *Service) runSample(ctx context.Context) {
	if _, err := s.SampleVersions(ctx); err != nil && ctx.Err() == nil {
		s.log.Warn("sample versions", "err", err)
	}
}

// SampleVersions records every group's current version breakdown.
func (s *Service) SampleVersions(ctx context.Context) (int, error) {
	n, err := s.st.SampleVersions(ctx, s.now().UTC())
	if err != nil {
		return 0, fmt.Errorf("sample versions: %w", err)
	}
	s.m.sweeps.WithLabelValues("version_samples").Add(float64(n))
	return n, nil
}

func (s *Service) runPrune(ctx context.Context) {
	res, err := s.Prune(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("prune history", "err", err)
		}
		return
	}
	if n := res.StatusHistory + res.Events + res.Activity + res.VersionSamples; n > 0 {
		s.log.Info("pruned history", "status_history", res.StatusHistory, "events", res.Events, "activity", res.Activity,
			"version_samples", res.VersionSamples, "retention", s.cfg.Retention)
	}
}

// Prune removes history older than the retention period.
func (s *Service) Prune(ctx context.Context) (store.PruneResult, error) {
	res, err := s.st.Prune(ctx, s.now().Add(-s.cfg.Retention))
	if err != nil {
		return res, fmt.Errorf("prune: %w", err)
	}
	s.m.sweeps.WithLabelValues("pruned").Add(float64(res.StatusHistory + res.Events + res.Activity + res.VersionSamples))
	return res, nil
}

// addActivity writes an activity entry inside a transaction and returns it
// so the caller can publish it after commit.
func addActivity(ctx context.Context, q store.Queries, a store.Activity) (store.Activity, error) {
	id, err := q.AddActivity(ctx, a)
	if err != nil {
		return a, fmt.Errorf("add activity: %w", err)
	}
	a.ID = id
	return a, nil
}

// RecordActivity adds an entry written by another part of the server
// (e.g. reboot-lock events) and tells the activity hook.
func (s *Service) RecordActivity(ctx context.Context, a store.Activity) error {
	var rec store.Activity
	err := s.st.Update(ctx, func(q store.TxQueries) error {
		var err error
		rec, err = addActivity(ctx, q, a)
		return err
	})
	if err != nil {
		return fmt.Errorf("record activity: %w", err)
	}
	s.publish([]store.Activity{rec})
	return nil
}

// publishStatus tells the status hook about committed status changes.
func (s *Service) publishStatus(cs []store.StatusChange) {
	if s.notifyStatus == nil {
		return
	}
	for _, c := range cs {
		s.notifyStatus(c)
	}
}

func (s *Service) publish(acts []store.Activity) {
	for _, a := range acts {
		s.log.Info("activity", "app", a.AppID, "group", a.Group, "kind", string(a.Kind), "msg", a.Message)
		if s.notify != nil {
			s.notify(a)
		}
	}
}
