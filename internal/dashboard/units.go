package dashboard

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/flotilla/flotilla/internal/fleet"
)

// WithUnits gives the dashboard the unit scheduler's registry, shown
// read-only on the Units page. Without it (or with nil) the page says the
// server schedules no units.
func WithUnits(reg *fleet.Registry) Option { return func(h *Handler) { h.units = reg } }

// unitsTimeout bounds the registry read (one etcd range read), so that an
// etcd problem slows the page by at most this much.
const unitsTimeout = 2 * time.Second

// stateInfos shows unit and machine states like status badges: a symbol
// and a text label besides the color.
var stateInfos = map[string]statusInfo{
	"unit:" + string(fleet.Inactive):          {"inactive", "○", "idle"},
	"unit:" + string(fleet.Loaded):            {"loaded", "◐", "progress"},
	"unit:" + string(fleet.Launched):          {"launched", "▶", "complete"},
	"machine:" + string(fleet.MachineAlive):   {"alive", "●", "complete"},
	"machine:" + string(fleet.MachineUnknown): {"unknown", "?", "onhold"},
	"machine:" + string(fleet.MachineLost):    {"lost", "✗", "error"},
}

func stateBadge(kind, s string) statusInfo {
	if i, ok := stateInfos[kind+":"+s]; ok {
		return i
	}
	return statusInfo{cmp.Or(s, "none"), "?", "idle"}
}

// unitPlace is one machine a unit is assigned to, with what its agent
// reports (systemd's active and sub state), if anything.
type unitPlace struct {
	Machine  string
	Known    bool // the machine is in the registry
	Reported bool
	Active   string
	Sub      string
	Message  string
}

type unitView struct {
	Name      string
	Desired   statusInfo
	Current   statusInfo
	Converged bool // current == desired
	Global    bool
	Reason    string
	Places    []unitPlace
}

type machineView struct {
	ID       string
	Address  string
	Version  string
	Metadata []string // "key=value", by key
	State    statusInfo
	Draining bool
	Units    int
	Since    time.Time // registered, or lapsed when not alive
}

// unitsView builds the Units page from one registry snapshot.
func unitsView(s fleet.Snapshot) (units []unitView, machines []machineView, templates int) {
	known := map[string]bool{}
	for _, m := range s.Machines {
		known[m.ID] = true
	}
	reported := map[[2]string]fleet.UnitState{}
	for _, st := range s.States {
		reported[[2]string{st.Unit, st.Machine}] = st
	}
	for _, u := range s.Units {
		if u.Template {
			templates++
		}
	}
	for _, us := range s.UnitStatuses() {
		uv := unitView{Name: us.Name, Desired: stateBadge("unit", string(us.Desired)), Current: stateBadge("unit", string(us.Current)),
			Converged: us.Current == us.Desired, Global: us.Global, Reason: us.Reason}
		for _, m := range us.Machines {
			p := unitPlace{Machine: m, Known: known[m]}
			if st, ok := reported[[2]string{us.Name, m}]; ok {
				p.Reported, p.Active, p.Sub, p.Message = true, st.Active, st.Sub, st.Message
			}
			uv.Places = append(uv.Places, p)
		}
		units = append(units, uv)
	}
	perMachine := map[string]int{}
	for _, a := range s.Assignments {
		perMachine[a.Machine]++
	}
	for _, m := range s.Machines {
		mv := machineView{ID: m.ID, Address: m.Address, Version: m.Version, State: stateBadge("machine", string(m.State)),
			Draining: m.Draining, Units: perMachine[m.ID], Since: m.RegisteredAt}
		if m.State != fleet.MachineAlive && !m.LapsedAt.IsZero() {
			mv.Since = m.LapsedAt
		}
		for _, k := range slices.Sorted(maps.Keys(m.Metadata)) {
			mv.Metadata = append(mv.Metadata, k+"="+m.Metadata[k])
		}
		machines = append(machines, mv)
	}
	return units, machines, templates
}

func (h *Handler) unitsPage(w http.ResponseWriter, r *http.Request, v *viewer) {
	data := map[string]any{"Enabled": h.units != nil}
	if h.units == nil {
		h.render(w, r, v, http.StatusOK, "units", "Units", data)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), unitsTimeout)
	defer cancel()
	s, err := h.units.Snapshot(ctx)
	if err != nil {
		if r.Context().Err() != nil {
			return
		}
		h.log.Error("dashboard: read unit registry", "err", err)
		data["Err"] = fmt.Sprintf("The unit registry (etcd) could not be read: %v", err)
		h.render(w, r, v, http.StatusServiceUnavailable, "units", "Units", data)
		return
	}
	units, machines, templates := unitsView(s)
	var alive, unsched int
	for _, m := range machines {
		if m.State.Label == string(fleet.MachineAlive) {
			alive++
		}
	}
	for _, u := range units {
		if u.Reason != "" {
			unsched++
		}
	}
	data["Units"], data["Machines"], data["Templates"] = units, machines, templates
	data["Alive"], data["Unschedulable"], data["Revision"] = alive, unsched, s.Revision
	h.render(w, r, v, http.StatusOK, "units", "Units", data)
}
