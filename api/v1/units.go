package v1

import "time"

// Desired and current unit states, as in fleet.
const (
	UnitInactive = "inactive" // stored, not placed
	UnitLoaded   = "loaded"   // placed and handed to the machine's init system, not started
	UnitLaunched = "launched" // placed and started
)

// Unit is a submitted unit: GET /api/v1/units/{name}, and one entry of
// GET /api/v1/units (which leaves out Raw and States).
type Unit struct {
	Name string `json:"name"`
	// Hash is the SHA-256 of the unit file as submitted (hex).
	Hash         string `json:"hash"`
	DesiredState string `json:"desired_state"`
	// CurrentState is derived the way fleet did: inactive when not
	// assigned, loaded when assigned and reported by the machine,
	// launched when reported active. Empty for templates.
	CurrentState string `json:"current_state,omitempty"`
	// Template is set for "name@.service": stored, never placed.
	Template bool `json:"template,omitempty"`
	// Global units run on every eligible machine.
	Global bool `json:"global,omitempty"`
	// Machines the engine assigned the unit to (several only for globals).
	Machines []string `json:"machines"`
	// Unschedulable is why the engine could not place the unit, if so.
	Unschedulable string    `json:"unschedulable,omitempty"`
	SubmittedAt   time.Time `json:"submitted_at"`
	// Raw is the unit file (single-unit answers only).
	Raw string `json:"raw,omitempty"`
	// States are the machines' reports for this unit (single-unit answers
	// only).
	States []UnitState `json:"states,omitempty"`
	// Warnings are problems in the file that do not stop it from being
	// scheduled (unknown or deprecated [X-Fleet] keys).
	Warnings []string `json:"warnings,omitempty"`
}

// UnitList is GET /api/v1/units.
type UnitList struct {
	Units []Unit `json:"units"`
}

// UnitState is a unit's state on one machine as its agent reports it,
// in systemd's words: GET /api/v1/unit-states.
type UnitState struct {
	Unit    string    `json:"unit"`
	Machine string    `json:"machine"`
	Hash    string    `json:"hash,omitempty"`
	Load    string    `json:"load"`
	Active  string    `json:"active"`
	Sub     string    `json:"sub"`
	At      time.Time `json:"at"`
	Starts  int       `json:"starts,omitempty"`
	Message string    `json:"message,omitempty"`
}

// UnitStateList is GET /api/v1/unit-states.
type UnitStateList struct {
	States []UnitState `json:"states"`
}

// UnitDesiredState is PUT /api/v1/units/{name}/desired-state: load
// (loaded), start (launched), stop (loaded) and unload (inactive). An
// instance of a submitted template ("web@3.service" with "web@.service"
// stored) is created on first use.
type UnitDesiredState struct {
	DesiredState string `json:"desired_state"`
}

// Machine is a machine able to run units, as its unit agent registered it:
// GET /api/v1/machines.
type Machine struct {
	ID       string            `json:"id"`
	Address  string            `json:"address,omitempty"`
	Metadata map[string]string `json:"metadata"`
	Version  string            `json:"version,omitempty"`
	// State is alive (presence kept), unknown (presence lapsed, within
	// the grace period; units stay) or lost (units moved elsewhere).
	State        string     `json:"state"`
	Draining     bool       `json:"draining,omitempty"`
	RegisteredAt time.Time  `json:"registered_at"`
	LapsedAt     *time.Time `json:"lapsed_at,omitempty"`
	// Units is how many units are assigned to the machine.
	Units int `json:"units"`
}

// MachineList is GET /api/v1/machines.
type MachineList struct {
	Machines []Machine `json:"machines"`
}
