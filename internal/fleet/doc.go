// Package fleet is flotilla's distributed unit scheduler, the successor of
// CoreOS fleet: users submit systemd units with [X-Fleet] constraints, an
// elected engine places them on machines, and a unit agent on every
// machine runs what is placed on it.
//
// # Pieces
//
//   - Place is the whole scheduling decision as a pure function of
//     machines, units and current assignments, so it is table-tested and
//     benchmarked without etcd, and a new leader computes what the old
//     one would have.
//   - Registry is the API on etcd shared by the CLI, engine and agents.
//   - Engine campaigns for leadership; the leader keeps an in-memory copy
//     of the registry current from a watch and reconciles (debounced) on
//     relevant changes and when a machine's grace period runs out.
//   - UnitAgent keeps its machine's presence, follows the machine's
//     assignments and drives a Driver (ProcessDriver, SystemdDriver).
//
// # Key layout
//
// Under a prefix (default "/flotilla/fleet/"):
//
//	units/<unit>               UnitInfo: body, hash, desired state       (CLI)
//	machines/<id>              Machine, under the agent's lease           (agent)
//	known/<id>                 Machine + lapsed_at, persistent            (agent, engine)
//	draining/<id>              present while the machine drains           (agent, admin)
//	assign/<id>/<unit>         Assignment incl. the unit body             (engine, fenced)
//	states/<id>/<unit>         UnitState, under the agent's lease         (agent)
//	unschedulable/<unit>       why the unit could not be placed, or stays (engine, fenced)
//	                           on a draining machine it cannot leave
//	engine/election/           clientv3/concurrency election
//
// Assignments and states are keyed by machine first so that an agent
// watches only its own prefix: unlike fleet, a change wakes the leader and
// the agents concerned, not every machine. Presence and states share the
// agent's lease, so a machine that dies takes its state reports with it.
//
// # Safety
//
// Every write of the leader is a Txn comparing the create revision of the
// election key it won; a deposed leader that has not noticed yet fails
// with ErrNotLeader instead of overwriting its successor. A machine whose
// presence lapses is unknown for the grace period (its units stay put;
// the lapse time is stored so a new leader continues the same clock) and
// lost afterwards, when its units are placed elsewhere. An agent cut off
// from etcd stops its units after its own grace, measured from the last
// keepalive answer, which is always earlier than the engine's deadline
// (presence expiry + grace). A unit moved between two live machines
// (drain, Replaces, a changed constraint) is started on the new machine
// only once the old one reports it stopped. Together these mean a unit
// does not run twice, even across a partition.
package fleet
