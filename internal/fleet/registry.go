package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flotilla/flotilla/internal/fleet/unitfile"
)

// Defaults for zero configuration fields.
const (
	DefaultPrefix      = "/flotilla/fleet/"
	DefaultGrace       = 30 * time.Second
	DefaultPresenceTTL = 10 * time.Second
)

// Key layout under the prefix (see doc.go for why it is shaped this way).
const (
	unitsDir         = "units/"         // units/<name>: UnitInfo
	machinesDir      = "machines/"      // machines/<id>: Machine, leased (presence)
	knownDir         = "known/"         // known/<id>: knownRecord, persistent
	drainingDir      = "draining/"      // draining/<id>: empty value
	assignDir        = "assign/"        // assign/<machine>/<unit>: Assignment (engine)
	statesDir        = "states/"        // states/<machine>/<unit>: UnitState, leased (agent)
	unschedulableDir = "unschedulable/" // unschedulable/<unit>: reason (engine)
	electionDir      = "engine/election/"
)

// RegistryConfig configures a Registry. Zero fields take the defaults.
type RegistryConfig struct {
	// Prefix is the etcd key prefix; a trailing "/" is added if missing.
	Prefix string
	// Grace is how long a machine whose presence lapsed is reported
	// unknown before it is lost; it must match the engine's.
	Grace time.Duration
	// PresenceTTL is the lease TTL of presence keys written by Register.
	PresenceTTL time.Duration
}

func (c RegistryConfig) withDefaults() RegistryConfig {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(c.Prefix, "/") {
		c.Prefix += "/"
	}
	if c.Grace <= 0 {
		c.Grace = DefaultGrace
	}
	if c.PresenceTTL <= 0 {
		c.PresenceTTL = DefaultPresenceTTL
	}
	return c
}

// Registry is the unit scheduler's state in etcd: the API the CLI, the
// engine and the agents share. It is safe for concurrent use.
type Registry struct {
	cli *clientv3.Client
	cfg RegistryConfig
	log *slog.Logger
	now func() time.Time
}

// NewRegistry returns a Registry on cli. logger may be nil.
func NewRegistry(cli *clientv3.Client, cfg RegistryConfig, logger *slog.Logger) *Registry {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Registry{cli: cli, cfg: cfg.withDefaults(), log: logger, now: time.Now}
}

// Prefix returns the key prefix in use.
func (r *Registry) Prefix() string { return r.cfg.Prefix }

func (r *Registry) key(dir, name string) string { return r.cfg.Prefix + dir + name }

// knownRecord remembers a machine after its presence key is gone.
type knownRecord struct {
	Machine
	// LapsedAt is set by the engine leader when it sees the presence key
	// gone, and cleared by the machine when it registers again.
	LapsedAt time.Time `json:"lapsed_at,omitzero"`
}

// SubmitUnit stores a unit with desired state inactive. raw may be empty
// for an instance of a submitted template ("web@1.service" when
// "web@.service" exists): the template's body is used. Submitting an
// identical body again is a no-op; a different body fails with ErrExists
// unless replace is set, in which case the body is replaced and the
// desired state kept (agents restart the unit with the new body).
func (r *Registry) SubmitUnit(ctx context.Context, name, raw string, replace bool) (UnitInfo, error) {
	n, err := unitfile.ParseName(name)
	if err != nil {
		return UnitInfo{}, fmt.Errorf("submit unit: %w", err)
	}
	if raw == "" && n.IsInstance() {
		tmpl, err := r.GetUnit(ctx, n.Template())
		if err != nil {
			return UnitInfo{}, fmt.Errorf("submit unit %s: template: %w", name, err)
		}
		raw = tmpl.Raw
	}
	f, err := unitfile.Parse(name, raw)
	if err != nil {
		return UnitInfo{}, fmt.Errorf("submit unit: %w", err)
	}
	for _, w := range f.Warnings {
		r.log.Warn("unit file warning", "unit", name, "warning", w)
	}
	info := UnitInfo{Name: name, Raw: raw, Hash: f.Hash, Desired: Inactive, SubmittedAt: r.now().UTC(), Template: n.IsTemplate(), File: f}
	key := r.key(unitsDir, name)
	for {
		resp, err := r.cli.Get(ctx, key)
		if err != nil {
			return UnitInfo{}, fmt.Errorf("submit unit %s: %w", name, err)
		}
		cmp := clientv3.Compare(clientv3.ModRevision(key), "=", 0)
		if len(resp.Kvs) > 0 {
			var old UnitInfo
			if err := json.Unmarshal(resp.Kvs[0].Value, &old); err != nil {
				return UnitInfo{}, fmt.Errorf("submit unit %s: decode stored unit: %w", name, err)
			}
			if old.Hash == info.Hash {
				old.File = f
				return old, nil
			}
			if !replace {
				return UnitInfo{}, fmt.Errorf("submit unit %s: %w", name, ErrExists)
			}
			info.Desired = old.Desired
			cmp = clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)
		}
		val, _ := json.Marshal(info)
		tr, err := r.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, string(val))).Commit()
		if err != nil {
			return UnitInfo{}, fmt.Errorf("submit unit %s: %w", name, err)
		}
		if tr.Succeeded {
			return info, nil
		}
		// Someone else wrote the unit between our read and write; decide
		// again on what they wrote.
	}
}

// SetDesiredState changes a unit's desired state. An instance that was
// never submitted is instantiated from its template first, so "start
// web@3.service" works with only "web@.service" stored. Templates cannot
// be loaded or launched.
func (r *Registry) SetDesiredState(ctx context.Context, name string, d DesiredState) error {
	if _, err := ParseDesiredState(string(d)); err != nil {
		return fmt.Errorf("set desired state of %s: %w", name, err)
	}
	key := r.key(unitsDir, name)
	for {
		resp, err := r.cli.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("set desired state of %s: %w", name, err)
		}
		if len(resp.Kvs) == 0 {
			n, perr := unitfile.ParseName(name)
			if perr != nil || !n.IsInstance() {
				return fmt.Errorf("set desired state of %s: %w", name, ErrNotFound)
			}
			if _, err := r.SubmitUnit(ctx, name, "", false); err != nil {
				return fmt.Errorf("set desired state of %s: %w", name, err)
			}
			continue
		}
		var u UnitInfo
		if err := json.Unmarshal(resp.Kvs[0].Value, &u); err != nil {
			return fmt.Errorf("set desired state of %s: decode: %w", name, err)
		}
		if u.Template && d != Inactive {
			return fmt.Errorf("set desired state of template %s: %w", name, ErrInvalidState)
		}
		if u.Desired == d {
			return nil
		}
		u.Desired = d
		val, _ := json.Marshal(u)
		tr, err := r.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)).
			Then(clientv3.OpPut(key, string(val))).Commit()
		if err != nil {
			return fmt.Errorf("set desired state of %s: %w", name, err)
		}
		if tr.Succeeded {
			return nil
		}
	}
}

// DestroyUnit deletes a unit; the engine then removes its assignments and
// agents stop it.
func (r *Registry) DestroyUnit(ctx context.Context, name string) error {
	resp, err := r.cli.Delete(ctx, r.key(unitsDir, name))
	if err != nil {
		return fmt.Errorf("destroy unit %s: %w", name, err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("destroy unit %s: %w", name, ErrNotFound)
	}
	return nil
}

// GetUnit returns one unit, parsed.
func (r *Registry) GetUnit(ctx context.Context, name string) (UnitInfo, error) {
	resp, err := r.cli.Get(ctx, r.key(unitsDir, name))
	if err != nil {
		return UnitInfo{}, fmt.Errorf("get unit %s: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return UnitInfo{}, fmt.Errorf("get unit %s: %w", name, ErrNotFound)
	}
	u, err := decodeUnit(resp.Kvs[0].Value)
	if err != nil {
		return UnitInfo{}, fmt.Errorf("get unit %s: %w", name, err)
	}
	return u, nil
}

func decodeUnit(raw []byte) (UnitInfo, error) {
	var u UnitInfo
	if err := json.Unmarshal(raw, &u); err != nil {
		return UnitInfo{}, fmt.Errorf("decode unit: %w", err)
	}
	f, err := unitfile.Parse(u.Name, u.Raw)
	if err != nil {
		return UnitInfo{}, err
	}
	u.File = f
	return u, nil
}

// ListUnits returns every submitted unit (templates included) by name.
func (r *Registry) ListUnits(ctx context.Context) ([]UnitInfo, error) {
	s, err := r.Snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("list units: %w", err)
	}
	return s.Units, nil
}

// ListMachines returns every machine the cluster knows, alive or not, by
// id, with its state.
func (r *Registry) ListMachines(ctx context.Context) ([]Machine, error) {
	s, err := r.Snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("list machines: %w", err)
	}
	return s.Machines, nil
}

// ListUnitStates returns the unit states agents report, by unit then
// machine.
func (r *Registry) ListUnitStates(ctx context.Context) ([]UnitState, error) {
	s, err := r.Snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("list unit states: %w", err)
	}
	return s.States, nil
}

// ListAssignments returns the engine's assignments by unit then machine.
func (r *Registry) ListAssignments(ctx context.Context) ([]Assignment, error) {
	s, err := r.Snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("list assignments: %w", err)
	}
	return s.Assignments, nil
}

// SetDraining marks a machine as draining (it takes no new units and its
// MoveBeforeReboot units are moved away) or clears the mark.
func (r *Registry) SetDraining(ctx context.Context, id string, on bool) error {
	var err error
	if on {
		_, err = r.cli.Put(ctx, r.key(drainingDir, id), "")
	} else {
		_, err = r.cli.Delete(ctx, r.key(drainingDir, id))
	}
	if err != nil {
		return fmt.Errorf("set draining of %s: %w", id, err)
	}
	return nil
}

// ForgetMachine deletes what the cluster remembers about a machine that is
// not alive, so it no longer shows as lost. It fails with ErrNotFound for
// unknown ids and refuses alive machines.
func (r *Registry) ForgetMachine(ctx context.Context, id string) error {
	pk := r.key(machinesDir, id)
	tr, err := r.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(pk), "=", 0)).
		Then(clientv3.OpDelete(r.key(knownDir, id)), clientv3.OpDelete(r.key(drainingDir, id))).
		Commit()
	if err != nil {
		return fmt.Errorf("forget machine %s: %w", id, err)
	}
	if !tr.Succeeded {
		return fmt.Errorf("forget machine %s: machine is alive", id)
	}
	if tr.Responses[0].GetResponseDeleteRange().Deleted == 0 {
		return fmt.Errorf("forget machine %s: %w", id, ErrNotFound)
	}
	return nil
}

// Snapshot is the whole registry read at one revision.
type Snapshot struct {
	Revision    int64
	Units       []UnitInfo   // by name
	Machines    []Machine    // by id, with State
	Assignments []Assignment // by unit, then machine
	States      []UnitState  // by unit, then machine
	// Unschedulable maps a unit to why the engine could not place it.
	Unschedulable map[string]string
}

// Snapshot reads everything at one revision. Units that fail to parse are
// skipped with a logged error (they were validated on submit, so that
// means the stored data was written by something else).
func (r *Registry) Snapshot(ctx context.Context) (Snapshot, error) {
	resp, err := r.cli.Get(ctx, r.cfg.Prefix, clientv3.WithPrefix())
	if err != nil {
		return Snapshot{}, fmt.Errorf("read registry: %w", err)
	}
	c := newCache(r.cfg.Prefix, r.log)
	for _, kv := range resp.Kvs {
		c.put(string(kv.Key), kv.Value)
	}
	s := Snapshot{Revision: resp.Header.Revision, Unschedulable: c.unsched}
	for _, name := range sortedKeys(c.units) {
		s.Units = append(s.Units, c.units[name])
	}
	s.Machines = c.machines(r.now(), r.cfg.Grace)
	for _, m := range sortedKeys(c.assign) {
		for _, a := range c.assign[m] {
			s.Assignments = append(s.Assignments, a)
		}
	}
	sort.Slice(s.Assignments, func(i, j int) bool {
		a, b := s.Assignments[i], s.Assignments[j]
		return a.Unit < b.Unit || a.Unit == b.Unit && a.Machine < b.Machine
	})
	for _, m := range c.states {
		for _, st := range m {
			s.States = append(s.States, st)
		}
	}
	sort.Slice(s.States, func(i, j int) bool {
		a, b := s.States[i], s.States[j]
		return a.Unit < b.Unit || a.Unit == b.Unit && a.Machine < b.Machine
	})
	return s, nil
}

// UnitStatus is one line of "flotilla unit list-files": a unit with its
// desired and current state and where it runs.
type UnitStatus struct {
	Name    string
	Hash    string
	Desired DesiredState
	// Current is inactive (not assigned), loaded (assigned and reported
	// by the machine) or launched (reported active), as fleet derived it;
	// for a Global unit it is the most advanced state on any machine.
	Current  DesiredState
	Machines []string // assigned machines
	Global   bool
	Reason   string // why the unit is unschedulable, if it is
}

// UnitStatuses derives each non-template unit's status.
func (s Snapshot) UnitStatuses() []UnitStatus {
	assigned := map[string][]string{}
	for _, a := range s.Assignments {
		assigned[a.Unit] = append(assigned[a.Unit], a.Machine)
	}
	reported := map[string]map[string]UnitState{}
	for _, st := range s.States {
		if reported[st.Unit] == nil {
			reported[st.Unit] = map[string]UnitState{}
		}
		reported[st.Unit][st.Machine] = st
	}
	var out []UnitStatus
	for _, u := range s.Units {
		if u.Template {
			continue
		}
		us := UnitStatus{Name: u.Name, Hash: u.Hash, Desired: u.Desired, Current: Inactive,
			Machines: assigned[u.Name], Reason: s.Unschedulable[u.Name]}
		if u.File != nil {
			us.Global = u.File.Options.Global
		}
		for _, m := range us.Machines {
			st, ok := reported[u.Name][m]
			switch {
			case ok && st.Active == "active":
				us.Current = Launched
			case ok && us.Current == Inactive:
				us.Current = Loaded
			}
		}
		out = append(out, us)
	}
	return out
}
