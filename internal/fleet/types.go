package fleet

import (
	"errors"
	"fmt"
	"time"

	"github.com/flotilla/flotilla/internal/fleet/unitfile"
)

// MachineState is what the cluster knows about a machine's liveness.
type MachineState string

// Machine states. A machine is alive while its presence key exists (its
// agent keeps the lease alive). When the key lapses the machine is
// unknown for the grace period — it may be partitioned or restarting,
// and its units are left where they are — and lost afterwards, when its
// units are rescheduled.
const (
	MachineAlive   MachineState = "alive"
	MachineUnknown MachineState = "unknown"
	MachineLost    MachineState = "lost"
)

// DesiredState is the state a user asks for; the cluster converges to it.
type DesiredState string

// Desired states, as in fleet: inactive units are stored but not placed,
// loaded units are placed and handed to the machine's init system without
// being started, launched units are placed and started.
const (
	Inactive DesiredState = "inactive"
	Loaded   DesiredState = "loaded"
	Launched DesiredState = "launched"
)

// ParseDesiredState validates s.
func ParseDesiredState(s string) (DesiredState, error) {
	switch d := DesiredState(s); d {
	case Inactive, Loaded, Launched:
		return d, nil
	}
	return "", fmt.Errorf("parse desired state %q: %w", s, ErrInvalidState)
}

// Sentinel errors; returned errors wrap them.
var (
	// ErrNotFound means the unit or machine does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists means a unit of that name exists with a different body;
	// submit with replace to overwrite it.
	ErrExists = errors.New("unit exists with different contents")
	// ErrInvalidState means a desired state is not inactive, loaded or
	// launched, or a template was asked to run.
	ErrInvalidState = errors.New("invalid desired state")
	// ErrNotLeader means the engine lost leadership while writing; the
	// write did not happen.
	ErrNotLeader = errors.New("not the engine leader")
)

// Machine is a machine able to run units, as registered by its agent.
type Machine struct {
	ID           string            `json:"id"`
	Address      string            `json:"address,omitempty"`
	Metadata     map[string]string `json:"metadata,omitempty"`
	Version      string            `json:"version,omitempty"`
	RegisteredAt time.Time         `json:"registered_at"`

	// The fields below are derived when machines are listed, not
	// registered.

	State MachineState `json:"state,omitempty"`
	// Draining is set while the machine prepares for a coordinated reboot:
	// it takes no new units and its MoveBeforeReboot units are moved.
	Draining bool `json:"draining,omitempty"`
	// LapsedAt is when the engine noticed the presence key was gone; zero
	// while alive.
	LapsedAt time.Time `json:"lapsed_at,omitzero"`
}

// Unit is a unit as the placement sees it: its name, desired state and
// scheduling options.
type Unit struct {
	Name    string
	Desired DesiredState
	Options unitfile.Options
}

// UnitInfo is a submitted unit as stored in the registry.
type UnitInfo struct {
	Name        string       `json:"name"`
	Raw         string       `json:"raw"`
	Hash        string       `json:"hash"`
	Desired     DesiredState `json:"desired"`
	SubmittedAt time.Time    `json:"submitted_at"`
	// Template is true for a template ("web@.service"); templates are
	// never placed, only instantiated.
	Template bool `json:"template,omitempty"`
	// File is the parsed unit, filled when read.
	File *unitfile.File `json:"-"`
}

// Assignment is the engine's decision that a unit should be on a machine.
// It carries the unit body so that an agent needs nothing else to act.
type Assignment struct {
	Unit    string       `json:"unit"`
	Machine string       `json:"machine"`
	Desired DesiredState `json:"desired"`
	Hash    string       `json:"hash"`
	Raw     string       `json:"raw"`
}

// UnitState is a unit's state on one machine as its agent reports it, in
// systemd's terms (load, active and sub state).
type UnitState struct {
	Unit    string    `json:"unit"`
	Machine string    `json:"machine"`
	Hash    string    `json:"hash,omitempty"`
	Load    string    `json:"load"`
	Active  string    `json:"active"`
	Sub     string    `json:"sub"`
	At      time.Time `json:"at"`
	Starts  int       `json:"starts,omitempty"` // process starts by this agent, for diagnostics
	Message string    `json:"message,omitempty"`
}

// running reports whether the state means the unit may be executing.
func (s UnitState) running() bool {
	switch s.Active {
	case "active", "activating", "deactivating", "reloading":
		return true
	}
	return false
}
