package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flotilla/flotilla/internal/fleet/unitfile"
)

// AgentConfig configures a UnitAgent. Start from DefaultAgentConfig: the
// zero value of StopOnIsolation is false.
type AgentConfig struct {
	// Machine describes this machine; ID is required.
	Machine Machine
	// Prefix is the etcd key prefix (DefaultPrefix).
	Prefix string
	// PresenceTTL is the presence lease TTL (DefaultPresenceTTL): how
	// quickly the cluster notices the agent is gone.
	PresenceTTL time.Duration
	// Grace is how long the agent may be cut off from etcd before it
	// stops its units (DefaultGrace). It must not exceed the engine's
	// grace, which is what makes "never twice" hold: the agent stops at
	// last contact + Grace, the engine moves units no earlier than
	// presence expiry + its grace, which is later.
	Grace time.Duration
	// StopOnIsolation stops every unit once the agent has been cut off
	// from etcd for Grace. Turning it off trades partition safety (a unit
	// may then run on both sides) for availability.
	StopOnIsolation bool
	// KeepUnitsOnExit leaves units running when Run returns (for an agent
	// restart under systemd); by default they are stopped.
	KeepUnitsOnExit bool
	// StateInterval is how often unit states are read from the driver
	// and changes reported (1s).
	StateInterval time.Duration
}

// DefaultAgentConfig returns the defaults, StopOnIsolation on.
func DefaultAgentConfig() AgentConfig {
	return AgentConfig{
		Prefix:          DefaultPrefix,
		PresenceTTL:     DefaultPresenceTTL,
		Grace:           DefaultGrace,
		StopOnIsolation: true,
		StateInterval:   time.Second,
	}
}

// UnitAgent runs the units assigned to one machine: it keeps the
// machine's presence, follows its assignments, drives them through a
// Driver and reports their states.
type UnitAgent struct {
	cli *clientv3.Client
	cfg AgentConfig
	reg *Registry
	drv Driver
	log *slog.Logger

	unitsGauge    prometheus.Gauge
	isolatedGauge prometheus.Gauge

	mu          sync.Mutex
	lease       clientv3.LeaseID
	leaseGen    int // bumped per new lease
	lastContact time.Time
	desired     map[string]Assignment
	listGen     int // bumped after each full read of the assignments
	kick        chan struct{}
	relist      chan struct{}

	// Owned by the reconcile loop.
	started   map[string]string // unit -> hash it was started with
	loaded    map[string]bool
	parsed    map[string]*unitfile.File // by hash
	reported  map[string]UnitState
	repLease  int
	isolated  bool
	awaitList int
	startErr  map[string]string
}

// NewUnitAgent returns an agent for cfg.Machine. logger and reg may be nil.
func NewUnitAgent(cli *clientv3.Client, cfg AgentConfig, drv Driver, logger *slog.Logger, reg prometheus.Registerer) (*UnitAgent, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Machine.ID == "" || strings.ContainsAny(cfg.Machine.ID, "/ \t\n") {
		return nil, fmt.Errorf("new unit agent: invalid machine id %q", cfg.Machine.ID)
	}
	if drv == nil {
		return nil, errors.New("new unit agent: no driver")
	}
	if cfg.StateInterval <= 0 {
		cfg.StateInterval = time.Second
	}
	rc := RegistryConfig{Prefix: cfg.Prefix, Grace: cfg.Grace, PresenceTTL: cfg.PresenceTTL}.withDefaults()
	cfg.Prefix, cfg.Grace, cfg.PresenceTTL = rc.Prefix, rc.Grace, rc.PresenceTTL
	a := &UnitAgent{
		cli: cli, cfg: cfg, drv: drv,
		log: logger.With("machine", cfg.Machine.ID),
		reg: NewRegistry(cli, rc, logger),
		unitsGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flotilla_fleet_agent_units", Help: "Units assigned to this machine."}),
		isolatedGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flotilla_fleet_agent_isolated", Help: "1 while the agent is cut off from etcd for longer than the grace period."}),
		desired:  map[string]Assignment{},
		kick:     make(chan struct{}, 1),
		relist:   make(chan struct{}, 1),
		started:  map[string]string{},
		loaded:   map[string]bool{},
		parsed:   map[string]*unitfile.File{},
		reported: map[string]UnitState{},
		startErr: map[string]string{},
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{a.unitsGauge, a.isolatedGauge} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register agent metrics: %w", err)
			}
		}
	}
	return a, nil
}

func (a *UnitAgent) poke() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Run registers the machine and runs its units until ctx ends. On return
// the units are stopped (unless KeepUnitsOnExit) and then the presence is
// withdrawn, in that order, so the engine never sees the machine gone
// while its units still run.
func (a *UnitAgent) Run(ctx context.Context) error {
	presCtx, stopPresence := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = a.reg.register(presCtx, a.cfg.Machine, presenceHooks{
			onLease: func(id clientv3.LeaseID) {
				a.mu.Lock()
				a.lease, a.leaseGen = id, a.leaseGen+1
				a.mu.Unlock()
				a.poke()
			},
			onContact: func(t time.Time) {
				a.mu.Lock()
				a.lastContact = t
				a.mu.Unlock()
			},
		})
	})
	wg.Go(func() { a.watch(ctx) })

	t := time.NewTicker(a.cfg.StateInterval)
	defer t.Stop()
	for ctx.Err() == nil {
		a.pass(ctx)
		select {
		case <-ctx.Done():
		case <-a.kick:
		case <-t.C:
		}
	}
	if !a.cfg.KeepUnitsOnExit {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		a.stopAll(sctx, "agent shutting down")
		cancel()
	}
	stopPresence()
	wg.Wait()
	return nil
}

// watch keeps a.desired equal to the machine's assignments: a full read,
// then a watch from the next revision; any watch failure, compaction or
// relist request starts over with a full read.
func (a *UnitAgent) watch(ctx context.Context) {
	prefix := a.cfg.Prefix + assignDir + a.cfg.Machine.ID + "/"
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		resp, err := a.cli.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		desired := map[string]Assignment{}
		for _, kv := range resp.Kvs {
			var as Assignment
			if json.Unmarshal(kv.Value, &as) == nil {
				desired[strings.TrimPrefix(string(kv.Key), prefix)] = as
			}
		}
		a.mu.Lock()
		a.desired = desired
		a.listGen++
		a.mu.Unlock()
		a.poke()
		a.follow(ctx, prefix, resp.Header.Revision+1)
	}
}

func (a *UnitAgent) follow(ctx context.Context, prefix string, rev int64) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := a.cli.Watch(clientv3.WithRequireLeader(wctx), prefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.relist:
			return
		case resp, ok := <-wch:
			if !ok || resp.Err() != nil || resp.CompactRevision != 0 {
				return
			}
			a.mu.Lock()
			for _, ev := range resp.Events {
				unit := strings.TrimPrefix(string(ev.Kv.Key), prefix)
				if ev.Type == clientv3.EventTypeDelete {
					delete(a.desired, unit)
					continue
				}
				var as Assignment
				if json.Unmarshal(ev.Kv.Value, &as) == nil {
					a.desired[unit] = as
				}
			}
			a.mu.Unlock()
			a.poke()
		}
	}
}

// pass converges the local units on the assignments and reports states.
func (a *UnitAgent) pass(ctx context.Context) {
	a.mu.Lock()
	contact, lease, leaseGen, gen := a.lastContact, a.lease, a.leaseGen, a.listGen
	desired := make(map[string]Assignment, len(a.desired))
	for k, v := range a.desired {
		desired[k] = v
	}
	a.mu.Unlock()
	a.unitsGauge.Set(float64(len(desired)))

	if contact.IsZero() || time.Since(contact) > a.cfg.Grace {
		if !a.isolated && !contact.IsZero() {
			a.log.Warn("cut off from etcd longer than the grace period", "last_contact", contact,
				"stop_units", a.cfg.StopOnIsolation)
		}
		if !contact.IsZero() || len(a.started) > 0 {
			a.isolated = true
			a.isolatedGauge.Set(1)
		}
		// Whatever we were told may be stale by now: read it again
		// before acting on it once contact is back.
		a.awaitList = gen + 1
		select {
		case a.relist <- struct{}{}:
		default:
		}
		if a.cfg.StopOnIsolation && len(a.started) > 0 {
			a.stopAll(ctx, "isolated from etcd")
		}
		return
	}
	if a.isolated {
		if gen < a.awaitList {
			return
		}
		a.log.Info("contact with etcd restored")
		a.isolated = false
		a.isolatedGauge.Set(0)
	}

	for name, as := range desired {
		f, err := a.parse(as)
		if err != nil {
			a.startErr[name] = err.Error()
			continue
		}
		switch as.Desired {
		case Launched:
			if a.started[name] == as.Hash {
				continue
			}
			if err := a.drv.Start(ctx, f); err != nil {
				a.log.Error("start unit", "unit", name, "err", err)
				a.startErr[name] = err.Error()
				continue
			}
			delete(a.startErr, name)
			a.started[name] = as.Hash
			a.log.Info("unit started", "unit", name)
		case Loaded:
			if _, ok := a.started[name]; ok {
				a.stop(ctx, name)
			}
			if l, ok := a.drv.(Loader); ok && !a.loaded[name] {
				if err := l.Load(ctx, f); err != nil {
					a.startErr[name] = err.Error()
					continue
				}
			}
			a.loaded[name] = true
		}
	}
	for name := range a.started {
		if _, ok := desired[name]; !ok {
			a.stop(ctx, name)
		}
	}
	for name := range a.loaded {
		if _, ok := desired[name]; !ok {
			a.unload(ctx, name)
		}
	}
	a.report(ctx, desired, lease, leaseGen)
}

func (a *UnitAgent) parse(as Assignment) (*unitfile.File, error) {
	if f, ok := a.parsed[as.Hash]; ok && f.Name.Full == as.Unit {
		return f, nil
	}
	f, err := unitfile.Parse(as.Unit, as.Raw)
	if err != nil {
		return nil, err
	}
	a.parsed[as.Hash] = f
	return f, nil
}

func (a *UnitAgent) stop(ctx context.Context, name string) {
	if err := a.drv.Stop(ctx, name); err != nil {
		a.log.Error("stop unit", "unit", name, "err", err)
		return
	}
	delete(a.started, name)
	a.log.Info("unit stopped", "unit", name)
}

func (a *UnitAgent) unload(ctx context.Context, name string) {
	if _, ok := a.started[name]; ok {
		a.stop(ctx, name)
	}
	if l, ok := a.drv.(Loader); ok {
		if err := l.Unload(ctx, name); err != nil {
			a.log.Error("unload unit", "unit", name, "err", err)
			return
		}
	}
	delete(a.loaded, name)
}

func (a *UnitAgent) stopAll(ctx context.Context, why string) {
	if len(a.started) > 0 {
		a.log.Warn("stopping all units", "reason", why, "units", len(a.started))
	}
	for name := range a.started {
		a.stop(ctx, name)
	}
}

// report writes changed unit states under the presence lease, so they
// vanish with the machine, and deletes states of units gone from here.
func (a *UnitAgent) report(ctx context.Context, desired map[string]Assignment, lease clientv3.LeaseID, leaseGen int) {
	if lease == 0 {
		return
	}
	if leaseGen != a.repLease {
		// A new lease: the old state keys died with the old one.
		a.reported = map[string]UnitState{}
		a.repLease = leaseGen
	}
	names := map[string]bool{}
	for n := range desired {
		names[n] = true
	}
	for n := range a.started {
		names[n] = true
	}
	var ops []clientv3.Op
	prefix := a.cfg.Prefix + statesDir + a.cfg.Machine.ID + "/"
	for n := range names {
		ds, err := a.drv.State(ctx, n)
		if err != nil {
			ds = DriverState{Load: "error", Active: "unknown", Sub: "unknown"}
		}
		st := UnitState{Unit: n, Machine: a.cfg.Machine.ID, Hash: ds.Hash, Load: ds.Load, Active: ds.Active,
			Sub: ds.Sub, Starts: ds.Starts, Message: a.startErr[n]}
		old, ok := a.reported[n]
		st.At = old.At
		if ok && old == st {
			continue
		}
		st.At = time.Now().UTC()
		val, _ := json.Marshal(st)
		ops = append(ops, clientv3.OpPut(prefix+n, string(val), clientv3.WithLease(lease)))
		a.reported[n] = st
	}
	for n := range a.reported {
		if !names[n] {
			ops = append(ops, clientv3.OpDelete(prefix+n))
			delete(a.reported, n)
		}
	}
	for len(ops) > 0 {
		k := min(len(ops), maxOps)
		rctx, cancel := context.WithTimeout(ctx, a.cfg.StateInterval+time.Second)
		_, err := a.cli.Txn(rctx).Then(ops[:k]...).Commit()
		cancel()
		if err != nil {
			// Report everything again next time.
			a.log.Warn("report unit states", "err", err)
			a.reported = map[string]UnitState{}
			return
		}
		ops = ops[k:]
	}
}

// Drain marks the machine as draining and waits until none of its
// MoveBeforeReboot units is assigned here or running any more, and each
// of them runs on another machine (or can go nowhere: see notMovedYet);
// call it before a coordinated reboot, and Undrain after. Other units stay
// (and go down with the reboot), and so does a MoveBeforeReboot unit that
// no other machine can take: the engine keeps it assigned here and lists
// it as unschedulable (see Placement.Unschedulable), and Drain does not
// wait for it.
func (a *UnitAgent) Drain(ctx context.Context) error {
	if err := a.reg.SetDraining(ctx, a.cfg.Machine.ID, true); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	movers := map[string]bool{}
	for {
		a.mu.Lock()
		for _, as := range a.desired {
			if f, err := unitfile.Parse(as.Unit, as.Raw); err == nil && f.Options.MoveBeforeReboot {
				movers[as.Unit] = true
			}
		}
		assigned := map[string]bool{}
		for name := range movers {
			_, assigned[name] = a.desired[name]
		}
		a.mu.Unlock()
		left, where := 0, "still here"
		s, err := a.reg.Snapshot(ctx)
		if err != nil {
			left, where = max(len(movers), 1), "unchecked ("+err.Error()+")"
		} else {
			stays := a.staysHere(s, movers)
			for name := range movers {
				if stays[name] {
					continue
				}
				if assigned[name] {
					left++
				}
				if st, err := a.drv.State(ctx, name); err == nil && (UnitState{Active: st.Active}).running() {
					left++
				}
			}
			if left == 0 {
				n := a.notMovedYet(s, movers)
				if n == 0 {
					return nil
				}
				left, where = n, "not running elsewhere yet"
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain: %d units %s: %w", left, where, ctx.Err())
		case <-t.C:
		}
	}
}

// staysHere returns the units in movers that the engine keeps assigned to
// this machine although it is draining, because no other machine can take
// them: they are assigned here and unschedulable at the same revision
// (Place lists such a unit in both).
func (a *UnitAgent) staysHere(s Snapshot, movers map[string]bool) map[string]bool {
	out := map[string]bool{}
	for _, as := range s.Assignments {
		if _, stuck := s.Unschedulable[as.Unit]; stuck && as.Machine == a.cfg.Machine.ID && movers[as.Unit] {
			out[as.Unit] = true
		}
	}
	return out
}

// notMovedYet counts the units in movers, gone from this machine, that
// are to run but are not reported active on another machine yet. One that
// can go nowhere (unschedulable), was stopped or destroyed meanwhile, or
// is only to be loaded counts as moved: waiting would not bring it up.
func (a *UnitAgent) notMovedYet(s Snapshot, movers map[string]bool) int {
	desired := map[string]DesiredState{}
	for _, u := range s.Units {
		desired[u.Name] = u.Desired
	}
	active := map[string]bool{}
	for _, st := range s.States {
		if st.Machine != a.cfg.Machine.ID && st.Active == "active" {
			active[st.Unit] = true
		}
	}
	n := 0
	for name := range movers {
		if _, stuck := s.Unschedulable[name]; !stuck && desired[name] == Launched && !active[name] {
			n++
		}
	}
	return n
}

// Undrain clears the draining mark after a reboot.
func (a *UnitAgent) Undrain(ctx context.Context) error {
	return a.reg.SetDraining(ctx, a.cfg.Machine.ID, false)
}
