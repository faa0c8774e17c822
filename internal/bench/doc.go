// Package bench is flotilla's load generator for the Omaha endpoint: it
// simulates a fleet of update_engine machines, in the spirit of
// coreos/updateservicectl's "instance fake", and measures what the server
// sustains.
//
// RunOmaha drives either an in-process flotilla server (started on
// 127.0.0.1:0 in a temporary data directory, with instances pre-registered
// straight through the store) or an already running Omaha server given by
// URL (flotilla or Nebraska). Two modes exist:
//
//   - check: every worker sends update checks for machines picked at random
//     (ping + updatecheck + event 3.2 previousversion 0.0.0.0, as
//     update_engine does, omaha.md §2.2) for a fixed time or request count,
//     once per concurrency level. Optionally the same client measures a
//     trivial net/http handler (ServeReference) so that results can be read
//     relative to what the machine can do at all.
//   - rollout: every machine walks the whole update: check → "ok" → events
//     13.1, 14.1, 3.1 → reboot → check on the new version with 3.2
//     previousversion=<old>. The result is the time to roll the release
//     across the simulated fleet and the group's final status counts.
//
// Request bodies are rendered from templates produced by
// omaha.Request.Marshal (byte-identical to it; see bodyTemplate), so that
// the generator, which usually shares the CPUs with the server, spends as
// little as possible on its own side. Every response is still fully parsed
// with omaha.ParseResponse. Latencies are recorded one by one in
// preallocated per-worker slices and summarised at the end; every loop stops
// by itself at the duration or request count.
package bench
