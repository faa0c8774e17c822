package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/flotilla/flotilla/internal/replica"
)

// EngineConfig configures an Engine. Zero fields take defaults.
type EngineConfig struct {
	// Prefix is the etcd key prefix (DefaultPrefix).
	Prefix string
	// ID names this engine in the election (host name and pid).
	ID string
	// Grace is how long a machine whose presence lapsed stays unknown
	// (its units untouched) before it is lost and its units move
	// (DefaultGrace). Agents must use the same or a shorter grace.
	Grace time.Duration
	// SessionTTL is the election lease TTL: how long a crashed leader
	// blocks the others (10s, whole seconds).
	SessionTTL time.Duration
	// Debounce is how long the engine waits after a change for more
	// before reconciling, so a burst of submits is one pass (100ms).
	Debounce time.Duration
	// Resync re-reads the whole registry this often as a safety net
	// against bugs in incremental updates (10m).
	Resync time.Duration
}

func (c EngineConfig) withDefaults() EngineConfig {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Prefix[len(c.Prefix)-1] != '/' {
		c.Prefix += "/"
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if c.Grace <= 0 {
		c.Grace = DefaultGrace
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = 10 * time.Second
	}
	if c.Debounce <= 0 {
		c.Debounce = 100 * time.Millisecond
	}
	if c.Resync <= 0 {
		c.Resync = 10 * time.Minute
	}
	return c
}

// Engine is the scheduler: of all engines running against one prefix,
// the elected leader places units and writes assignments; the others
// wait to take over.
type Engine struct {
	cli    *clientv3.Client
	cfg    EngineConfig
	log    *slog.Logger
	m      *engineMetrics
	leader atomic.Bool
}

type engineMetrics struct {
	reconciles    prometheus.Counter
	placements    prometheus.Counter
	unschedulable prometheus.Gauge
	leader        prometheus.Gauge
	elections     prometheus.Counter
}

// NewEngine returns an engine; it does nothing until Run. reg may be nil.
func NewEngine(cli *clientv3.Client, cfg EngineConfig, logger *slog.Logger, reg prometheus.Registerer) (*Engine, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	m := &engineMetrics{
		reconciles: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flotilla_fleet_reconciles_total", Help: "Reconcile passes run by this engine while leader."}),
		placements: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flotilla_fleet_placements_total", Help: "Assignments written (created or moved) by this engine."}),
		unschedulable: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flotilla_fleet_unschedulable_units", Help: "Units the last reconcile could not place."}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flotilla_fleet_engine_leader", Help: "1 while this engine is the elected leader."}),
		elections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flotilla_fleet_engine_elections_won_total", Help: "Times this engine became leader."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.reconciles, m.placements, m.unschedulable, m.leader, m.elections} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register engine metrics: %w", err)
			}
		}
	}
	return &Engine{cli: cli, cfg: cfg, log: logger.With("engine", cfg.ID), m: m}, nil
}

// IsLeader reports whether the engine currently leads.
func (e *Engine) IsLeader() bool { return e.leader.Load() }

// Run campaigns for leadership and, while leader, reconciles on every
// relevant change. It returns nil when ctx ends, after resigning so
// another engine takes over without waiting for the session TTL.
func (e *Engine) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := e.term(ctx)
		if ctx.Err() != nil {
			return nil
		}
		e.log.Warn("engine term ended", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	return nil
}

// term is one session: campaign, lead until the session or ctx ends.
func (e *Engine) term(ctx context.Context) error {
	sess, err := concurrency.NewSession(e.cli,
		concurrency.WithTTL(int((e.cfg.SessionTTL+time.Second-1)/time.Second)), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("engine session: %w", err)
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, e.cfg.Prefix+electionDir)
	if err := replica.Campaign(ctx, el, e.cfg.ID); err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_ = el.Resign(rctx)
		cancel()
	}()
	e.leader.Store(true)
	e.m.leader.Set(1)
	e.m.elections.Inc()
	defer func() { e.leader.Store(false); e.m.leader.Set(0) }()
	e.log.Info("engine elected leader", "key", el.Key(), "rev", el.Rev())

	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done():
			cancel()
		case <-lctx.Done():
		}
	}()
	l := &leaderTerm{
		e:     e,
		fence: clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev()),
	}
	err = l.run(lctx)
	switch {
	case ctx.Err() != nil:
		// The session's context derives from ctx: a shutdown is not a
		// lost election.
		e.log.Info("engine resigning leadership")
	case sess.Ctx().Err() != nil || errors.Is(err, ErrNotLeader):
		e.log.Warn("engine lost leadership", "err", err)
	}
	return err
}

// leaderTerm holds the state of one leadership term.
type leaderTerm struct {
	e       *Engine
	fence   clientv3.Cmp
	c       *cache
	rev     int64 // revision the cache reflects
	written int64 // revision of our last write; reconcile waits for the cache to see it
	// deferred counts units whose move waits for the old machine to
	// report them stopped; state reports matter only while it is > 0.
	deferred int
}

func (l *leaderTerm) run(ctx context.Context) error {
	e := l.e
	for ctx.Err() == nil {
		if err := l.list(ctx); err != nil {
			return err
		}
		wch := e.cli.Watch(clientv3.WithRequireLeader(ctx), e.cfg.Prefix, clientv3.WithPrefix(),
			clientv3.WithRev(l.rev+1), clientv3.WithPrevKV())
		err := l.loop(ctx, wch)
		if !errors.Is(err, errRelist) {
			return err
		}
	}
	return ctx.Err()
}

var errRelist = errors.New("relist")

func (l *leaderTerm) list(ctx context.Context) error {
	resp, err := l.e.cli.Get(ctx, l.e.cfg.Prefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("list registry: %w", err)
	}
	l.c = newCache(l.e.cfg.Prefix, l.e.log)
	for _, kv := range resp.Kvs {
		l.c.put(string(kv.Key), kv.Value)
	}
	l.rev = resp.Header.Revision
	return nil
}

func (l *leaderTerm) loop(ctx context.Context, wch clientv3.WatchChan) error {
	e := l.e
	debounce := time.NewTimer(0) // reconcile once at the start of a term
	defer debounce.Stop()
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()
	resync := time.NewTimer(e.cfg.Resync)
	defer resync.Stop()
	armed := true    // debounce is running
	pending := false // a pass is due once the watch has caught up with our writes
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-resync.C:
			return errRelist
		case resp, ok := <-wch:
			if !ok {
				return errRelist
			}
			if resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
				e.log.Info("watch compacted, re-listing", "compact_rev", resp.CompactRevision)
				return errRelist
			}
			if err := resp.Err(); err != nil {
				e.log.Warn("watch failed, re-listing", "err", err)
				return errRelist
			}
			if l.apply(resp.Events) && !armed {
				debounce.Reset(e.cfg.Debounce)
				armed = true
			}
			l.rev = max(l.rev, resp.Header.Revision)
			if !pending || l.rev < l.written {
				continue
			}
		case <-debounce.C:
			armed = false
		case <-wake.C:
		}
		if l.rev < l.written {
			// Our own last write has not come back through the watch;
			// deciding on a cache without it would write it again.
			pending = true
			continue
		}
		pending = false
		next, err := l.reconcile(ctx)
		if err != nil {
			return err
		}
		wake.Reset(next)
	}
}

// apply updates the cache and reports whether any event calls for a
// reconcile.
func (l *leaderTerm) apply(events []*clientv3.Event) bool {
	relevant := false
	for _, ev := range events {
		var dir string
		if ev.Type == clientv3.EventTypeDelete {
			dir = l.c.del(string(ev.Kv.Key))
		} else {
			dir = l.c.put(string(ev.Kv.Key), ev.Kv.Value)
		}
		switch dir {
		case "", unschedulableDir:
		case statesDir:
			relevant = relevant || l.deferred > 0
		default:
			relevant = true
		}
	}
	return relevant
}

// reconcile runs one pass and returns when the next time-driven pass is
// due (a machine's grace running out).
func (l *leaderTerm) reconcile(ctx context.Context) (time.Duration, error) {
	e := l.e
	e.m.reconciles.Inc()
	now := time.Now()
	next := time.Hour
	var ops []clientv3.Op

	machines := l.c.machines(now, e.cfg.Grace)
	for _, m := range machines {
		if m.State != MachineUnknown {
			continue
		}
		if m.LapsedAt.IsZero() {
			// First engine to see the lapse records when it happened, so
			// that the grace period survives a leader change.
			if err := l.markLapsed(ctx, m.ID, now); err != nil {
				return 0, err
			}
			next = min(next, e.cfg.Grace)
			continue
		}
		next = min(next, m.LapsedAt.Add(e.cfg.Grace).Sub(now)+10*time.Millisecond)
	}

	var units []Unit
	byName := map[string]UnitInfo{}
	for name, u := range l.c.units {
		if u.Template {
			continue
		}
		byName[name] = u
		units = append(units, Unit{Name: name, Desired: u.Desired, Options: u.File.Options})
	}
	sort.Slice(units, func(i, j int) bool { return units[i].Name < units[j].Name })
	current := Assignments{}
	for m, as := range l.c.assign {
		for unit := range as {
			current[unit] = append(current[unit], m)
		}
	}
	p := Place(machines, units, current)

	alive := map[string]bool{}
	for _, m := range machines {
		if m.State == MachineAlive {
			alive[m.ID] = true
		}
	}
	want := map[string]map[string]bool{}
	l.deferred = 0
	placed := 0
	for unit, ids := range p.Assignments {
		u := byName[unit]
		for _, id := range ids {
			inner(want, id)[unit] = true
			old, exists := l.c.assign[id][unit]
			a := Assignment{Unit: unit, Machine: id, Desired: u.Desired, Hash: u.Hash, Raw: u.Raw}
			if exists && old.Desired == a.Desired && old.Hash == a.Hash {
				continue
			}
			if !exists && !u.File.Options.Global && l.runningElsewhere(unit, id, alive) {
				// Moving a unit between live machines: start it on the new
				// one only once the old one reports it stopped, so it
				// never runs twice.
				l.deferred++
				continue
			}
			if !exists {
				placed++
			}
			val, _ := json.Marshal(a)
			ops = append(ops, clientv3.OpPut(e.cfg.Prefix+assignDir+id+"/"+unit, string(val)))
		}
	}
	for id, as := range l.c.assign {
		for unit := range as {
			if !want[id][unit] {
				ops = append(ops, clientv3.OpDelete(e.cfg.Prefix+assignDir+id+"/"+unit))
			}
		}
	}
	for unit, reason := range p.Unschedulable {
		if l.c.unsched[unit] != reason {
			ops = append(ops, clientv3.OpPut(e.cfg.Prefix+unschedulableDir+unit, reason))
		}
	}
	for unit := range l.c.unsched {
		if _, ok := p.Unschedulable[unit]; !ok {
			ops = append(ops, clientv3.OpDelete(e.cfg.Prefix+unschedulableDir+unit))
		}
	}
	e.m.unschedulable.Set(float64(len(p.Unschedulable)))
	if err := l.commit(ctx, ops); err != nil {
		return 0, err
	}
	e.m.placements.Add(float64(placed))
	if len(ops) > 0 {
		e.log.Debug("reconciled", "ops", len(ops), "placed", placed, "deferred", l.deferred,
			"unschedulable", len(p.Unschedulable))
	}
	return next, nil
}

// runningElsewhere reports whether an alive machine other than target
// reports unit as possibly running.
func (l *leaderTerm) runningElsewhere(unit, target string, alive map[string]bool) bool {
	for m, states := range l.c.states {
		if m == target || !alive[m] {
			continue
		}
		if s, ok := states[unit]; ok && s.running() {
			return true
		}
	}
	return false
}

// maxOps stays below etcd's default --max-txn-ops (128).
const maxOps = 100

// commit writes ops in fenced transactions: each one applies only if the
// election key this engine won is still the same key, so a deposed leader
// that has not noticed yet cannot overwrite its successor's decisions.
func (l *leaderTerm) commit(ctx context.Context, ops []clientv3.Op) error {
	for len(ops) > 0 {
		n := min(len(ops), maxOps)
		resp, err := l.e.cli.Txn(ctx).If(l.fence).Then(ops[:n]...).Commit()
		if err != nil {
			return fmt.Errorf("write assignments: %w", err)
		}
		if !resp.Succeeded {
			return fmt.Errorf("write assignments: %w", ErrNotLeader)
		}
		l.written = resp.Header.Revision
		ops = ops[n:]
	}
	return nil
}

// markLapsed records when a machine's presence was found gone, provided
// it is still gone and this engine still leads.
func (l *leaderTerm) markLapsed(ctx context.Context, id string, at time.Time) error {
	e := l.e
	k := l.c.known[id]
	k.LapsedAt = at.UTC()
	val, _ := json.Marshal(k)
	pk := e.cfg.Prefix + machinesDir + id
	resp, err := e.cli.Txn(ctx).If(l.fence).Then(
		clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(pk), "=", 0)},
			[]clientv3.Op{clientv3.OpPut(e.cfg.Prefix+knownDir+id, string(val))},
			nil),
	).Commit()
	if err != nil {
		return fmt.Errorf("mark machine %s lapsed: %w", id, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("mark machine %s lapsed: %w", id, ErrNotLeader)
	}
	l.written = resp.Header.Revision
	e.log.Warn("machine presence lapsed", "machine", id, "grace", e.cfg.Grace)
	return nil
}
