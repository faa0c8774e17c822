package restapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	v1 "github.com/flotilla/flotilla/api/v1"
	"github.com/flotilla/flotilla/internal/fleet"
	"github.com/flotilla/flotilla/internal/fleet/unitfile"
)

// MaxUnitBytes bounds a submitted unit file. The engine copies the body
// into every assignment and agents keep it in memory, so a unit file is
// meant to be a unit file, not a payload.
const MaxUnitBytes = 64 << 10

// units serves the unit scheduler's routes on a fleet registry.
type units struct {
	reg *fleet.Registry
}

// SetUnits adds the unit scheduler's routes (/api/v1/units,
// /api/v1/unit-states, /api/v1/machines) served by reg.
func (h *Handler) SetUnits(reg *fleet.Registry) {
	u := &units{reg: reg}
	h.handle("GET /api/v1/units", u.list)
	h.handle("GET /api/v1/units/{name}", u.get)
	h.handle("PUT /api/v1/units/{name}", u.submit)
	h.handle("DELETE /api/v1/units/{name}", u.destroy)
	h.handle("GET /api/v1/units/{name}/file", u.file)
	h.handle("PUT /api/v1/units/{name}/desired-state", u.setDesired)
	h.handle("GET /api/v1/unit-states", u.states)
	h.handle("GET /api/v1/machines", u.machines)
}

// unitError maps the scheduler's errors to API errors.
func unitError(err error) error {
	switch {
	case errors.Is(err, fleet.ErrNotFound):
		return errorf(http.StatusNotFound, v1.KindNotFound, "%v", err)
	case errors.Is(err, fleet.ErrExists):
		return errorf(http.StatusConflict, v1.KindConflict, "%v (submit with replace=true to overwrite it)", err)
	case errors.Is(err, unitfile.ErrInvalidName), errors.Is(err, unitfile.ErrInvalidUnit), errors.Is(err, fleet.ErrInvalidState):
		return errorf(http.StatusUnprocessableEntity, v1.KindInvalid, "%v", err)
	case errors.Is(err, context.DeadlineExceeded):
		return errorf(http.StatusServiceUnavailable, v1.KindUnavailable, "the unit registry (etcd) did not answer in time")
	}
	return err
}

// unitName validates the {name} path value before it becomes an etcd key.
func unitName(r *http.Request) (string, error) {
	name := r.PathValue("name")
	if _, err := unitfile.ParseName(name); err != nil {
		return "", errorf(http.StatusUnprocessableEntity, v1.KindInvalid, "%v", err)
	}
	return name, nil
}

func statusToAPI(st fleet.UnitStatus, u fleet.UnitInfo) v1.Unit {
	out := v1.Unit{Name: u.Name, Hash: u.Hash, DesiredState: string(u.Desired), Template: u.Template,
		Machines: []string{}, SubmittedAt: u.SubmittedAt}
	if u.File != nil {
		out.Global = u.File.Options.Global
		out.Warnings = u.File.Warnings
	}
	if !u.Template {
		out.CurrentState = string(st.Current)
		out.Unschedulable = st.Reason
		if st.Machines != nil {
			out.Machines = st.Machines
		}
	}
	return out
}

func unitStateToAPI(s fleet.UnitState) v1.UnitState {
	return v1.UnitState{Unit: s.Unit, Machine: s.Machine, Hash: s.Hash, Load: s.Load, Active: s.Active,
		Sub: s.Sub, At: s.At, Starts: s.Starts, Message: s.Message}
}

// statuses pairs every unit of a snapshot with its derived status.
func statuses(s fleet.Snapshot) []v1.Unit {
	byName := map[string]fleet.UnitStatus{}
	for _, st := range s.UnitStatuses() {
		byName[st.Name] = st
	}
	out := make([]v1.Unit, 0, len(s.Units))
	for _, u := range s.Units {
		out = append(out, statusToAPI(byName[u.Name], u))
	}
	return out
}

func (u *units) list(w http.ResponseWriter, r *http.Request) error {
	if err := checkQuery(r); err != nil {
		return err
	}
	s, err := u.reg.Snapshot(r.Context())
	if err != nil {
		return unitError(err)
	}
	writeJSON(w, http.StatusOK, v1.UnitList{Units: statuses(s)})
	return nil
}

// one returns a unit with its file and the machines' reports.
func (u *units) one(ctx context.Context, name string) (v1.Unit, error) {
	s, err := u.reg.Snapshot(ctx)
	if err != nil {
		return v1.Unit{}, unitError(err)
	}
	for i, un := range s.Units {
		if un.Name != name {
			continue
		}
		out := statuses(fleet.Snapshot{Units: s.Units[i : i+1], Assignments: s.Assignments, States: s.States,
			Unschedulable: s.Unschedulable})[0]
		out.Raw = un.Raw
		for _, st := range s.States {
			if st.Unit == name {
				out.States = append(out.States, unitStateToAPI(st))
			}
		}
		return out, nil
	}
	return v1.Unit{}, errorf(http.StatusNotFound, v1.KindNotFound, "unit %s not found", name)
}

func (u *units) get(w http.ResponseWriter, r *http.Request) error {
	name, err := unitName(r)
	if err != nil {
		return err
	}
	out, err := u.one(r.Context(), name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// file serves the unit file as submitted, for `unit cat` and curl.
func (u *units) file(w http.ResponseWriter, r *http.Request) error {
	name, err := unitName(r)
	if err != nil {
		return err
	}
	un, err := u.reg.GetUnit(r.Context(), name)
	if err != nil {
		return unitError(err)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, un.Raw)
	return nil
}

// submit stores the request body, a unit file as text, under the name in
// the path. An empty body instantiates a template ("web@1.service" from
// "web@.service"). replace=true overwrites a different body; without it
// that is a conflict, and an identical body is a no-op (200, not 201).
func (u *units) submit(w http.ResponseWriter, r *http.Request) error {
	if err := checkQuery(r, "replace"); err != nil {
		return err
	}
	replace := false
	if v := r.URL.Query().Get("replace"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return badRequest("query parameter replace=%q: want true or false", v)
		}
		replace = b
	}
	name, err := unitName(r)
	if err != nil {
		return err
	}
	if ct := r.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/json") {
		return errorf(http.StatusUnsupportedMediaType, v1.KindBadRequest, "send the unit file itself as the body (Content-Type: text/plain), not JSON")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxUnitBytes))
	if err != nil {
		return err
	}
	if !utf8.Valid(body) {
		return errorf(http.StatusUnprocessableEntity, v1.KindInvalid, "unit file %s is not UTF-8 text", name)
	}
	_, existed := u.reg.GetUnit(r.Context(), name)
	if _, err := u.reg.SubmitUnit(r.Context(), name, string(body), replace); err != nil {
		return unitError(err)
	}
	out, err := u.one(r.Context(), name)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if errors.Is(existed, fleet.ErrNotFound) {
		status = http.StatusCreated
	}
	writeJSON(w, status, out)
	return nil
}

func (u *units) setDesired(w http.ResponseWriter, r *http.Request) error {
	name, err := unitName(r)
	if err != nil {
		return err
	}
	var in v1.UnitDesiredState
	if err := decode(w, r, &in); err != nil {
		return err
	}
	d, err := fleet.ParseDesiredState(in.DesiredState)
	if err != nil {
		return errorf(http.StatusUnprocessableEntity, v1.KindInvalid, "desired_state %q: want inactive, loaded or launched", in.DesiredState)
	}
	if err := u.reg.SetDesiredState(r.Context(), name, d); err != nil {
		return unitError(err)
	}
	out, err := u.one(r.Context(), name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (u *units) destroy(w http.ResponseWriter, r *http.Request) error {
	name, err := unitName(r)
	if err != nil {
		return err
	}
	if err := u.reg.DestroyUnit(r.Context(), name); err != nil {
		return unitError(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// states lists the machines' unit reports, optionally for one unit or
// one machine.
func (u *units) states(w http.ResponseWriter, r *http.Request) error {
	if err := checkQuery(r, "unit", "machine"); err != nil {
		return err
	}
	unit, machine := r.URL.Query().Get("unit"), r.URL.Query().Get("machine")
	sts, err := u.reg.ListUnitStates(r.Context())
	if err != nil {
		return unitError(err)
	}
	out := v1.UnitStateList{States: []v1.UnitState{}}
	for _, s := range sts {
		if unit != "" && s.Unit != unit || machine != "" && s.Machine != machine {
			continue
		}
		out.States = append(out.States, unitStateToAPI(s))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (u *units) machines(w http.ResponseWriter, r *http.Request) error {
	if err := checkQuery(r); err != nil {
		return err
	}
	s, err := u.reg.Snapshot(r.Context())
	if err != nil {
		return unitError(err)
	}
	count := map[string]int{}
	for _, a := range s.Assignments {
		count[a.Machine]++
	}
	out := v1.MachineList{Machines: make([]v1.Machine, 0, len(s.Machines))}
	for _, m := range s.Machines {
		am := v1.Machine{ID: m.ID, Address: m.Address, Metadata: m.Metadata, Version: m.Version, State: string(m.State),
			Draining: m.Draining, RegisteredAt: m.RegisteredAt, Units: count[m.ID]}
		if am.Metadata == nil {
			am.Metadata = map[string]string{}
		}
		if !m.LapsedAt.IsZero() {
			t := m.LapsedAt
			am.LapsedAt = &t
		}
		out.Machines = append(out.Machines, am)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
