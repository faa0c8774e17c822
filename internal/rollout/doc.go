// Package rollout holds the pure decision logic of a group's rollout policy
// (store.Policy): whether a machine asking for an update is granted one now
// or held back, and why.
//
// Everything here is a pure function of its arguments. There is no I/O and no
// clock read: the caller passes the current time, the policy and the counts
// it read from the store, which keeps every rule table-testable and lets the
// update service decide when and inside which transaction to ask.
//
// # Order of checks
//
// [Decide] applies the policy in this order and stops at the first check
// that holds the machine back; the order is part of the API because it
// decides which [Reason] an operator sees:
//
//  1. Paused: a paused group grants nothing ([ReasonPaused]).
//  2. Update windows: outside every window → hold ([ReasonOutsideWindow]).
//     No windows means always open.
//  3. Percentage: the machine's [Bucket] must be below [CurrentPercent]
//     ([ReasonPercentage]).
//  4. Rate limit: Counts.GrantedInPeriod >= MaxUpdatesPerPeriod → hold
//     ([ReasonRateLimit]); 0 means unlimited.
//  5. In-progress limit: Counts.InProgress >= MaxInProgress → hold
//     ([ReasonInProgressLimit]); 0 means unlimited.
//  6. Otherwise grant ([ReasonGranted]).
//
// An on-demand check (installsource="ondemandupdate") skips checks 3–5 when
// Policy.OnDemandBypassesLimits is set. A pause and the windows are never
// bypassed: they are the operator's "not now", not a capacity limit.
//
// # Monotonic in the counts
//
// The counts (store.GroupCounts) are only consulted by checks 4 and 5, and
// those can only turn a grant into a hold. Hence:
//
//   - a hold decided with zero counts is the exact decision for any counts;
//   - raising either count never turns a hold into a grant.
//
// The update service relies on this: it calls Decide with zero counts to
// reject cheaply without touching the database, and only calls it again
// with the real counts inside the transaction that records the grant.
//
// # Percentage rollouts
//
// Like Fedora CoreOS's "wariness", a machine's place in a rollout is a
// deterministic hash of its machine id and the target version ([Bucket]),
// so no per-machine state is needed, a machine never drops out of a rollout
// it was admitted to, and every release picks a different first cohort.
// The eligible share starts at Policy.RolloutPercent and, with a
// RampDuration, grows linearly to 100 % ([CurrentPercent]).
//
// # Update windows
//
// Windows are weekly wall-clock intervals in the policy's time zone, written
// "DAYS HH:MM-HH:MM" (see [ParseWindow]). They follow the wall clock, so
// "Mon-Fri 09:00-17:00" in Europe/Berlin means 09:00 local time in winter
// and in summer alike.
package rollout
