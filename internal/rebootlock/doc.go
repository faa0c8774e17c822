// Package rebootlock is flotilla's reboot-coordination semaphore: at most
// max machines of a group may be between "about to reboot" and "back and
// healthy" at any time. It is the successor of locksmith's etcd semaphore
// and airlock's FleetLock server, stored in etcd v3 with one key per holder
// and per waiter instead of one shared document.
//
// # Key layout
//
// Under a configurable prefix (default "/flotilla/rebootlock/"):
//
//	groups/<group>/config        {"max":N,"hold_deadline":ns,"auto_release":bool}, absent = defaults
//	groups/<group>/holders/<id>  one key per machine holding a slot; no lease
//	groups/<group>/waiters/<id>  one key per machine asking for a slot; leased
//
// # Holders are persistent
//
// A holder key has no lease. A machine takes a slot, reboots, and gives the
// slot back only once it is up and healthy again; while it is down nothing
// can keep a lease alive, and a lease-bound slot would free itself while the
// machine is still booting — or is broken by the very update being rolled
// out — letting the next machine go down too. Every production coordinator
// (locksmith, airlock, CLUO/FLUO, kured by default) keeps the slot for that
// reason: a machine that never comes back halts the rollout, which is the
// point. Such holders are reported as overdue after the group's hold
// deadline (an event, a metric); releasing them automatically is opt-in per
// group (auto_release), and admins can ForceUnlock.
//
// # Waiters are leased
//
// A machine that asks for a slot and does not get one is recorded as a
// waiter with a lease of Config.WaiterTTL, refreshed on every request
// (FleetLock clients such as Zincati repeat the request every few minutes).
// Waiters are served in order of their key's create revision, so a machine
// that polls rarely is not starved by one that polls often. A machine that
// stops asking (it was reinstalled, its update was withdrawn) leaves the
// queue when its lease expires instead of blocking it forever.
//
// # Granting
//
// Lock reads config, holders and waiters at one revision R, decides with the
// pure function decide, and grants with a single Txn that succeeds only if
// no holder key was created and the config was not written after R (a
// CreateRevision compare over the holders prefix, a ModRevision compare on
// the config key). Deletions after R are allowed: they only lower the count.
// Only the first (max - holders) waiters ever attempt a grant, so conflicts
// happen only between machines granted at about the same moment; the loser
// retries inside Lock and callers never see them.
//
// # Fencing tokens
//
// A holder's token is its key's create revision. It changes whenever the
// slot is released and taken again, even by the same machine id, so an
// agent that acts on an old grant is detected: MarkRebooting (the re-check
// immediately before the reboot) and Release compare the key's create
// revision with the caller's token in the same Txn that writes.
package rebootlock
