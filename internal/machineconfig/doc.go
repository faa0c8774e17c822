// Package machineconfig is flotilla's declarative machine configuration:
// it reads CoreOS-style #cloud-config documents and Ignition 3.x configs
// into one model (Config), validates them with positions an operator can
// act on (line:column for YAML, JSON paths for Ignition), applies them to a
// root directory and reports drift between a document and a root.
//
// Apply is built for re-runs, unlike Ignition, which runs once in the
// initramfs: every decision is made before the first write (remote contents
// are fetched and verified, owners resolved, conflicts found), writes are
// atomic renames, every path is resolved inside the root as if chrooted,
// and a second apply of the same document changes nothing. Diff reports
// exactly what Apply would change, so "diff, then apply" never surprises.
//
// Parts that only make sense on a machine's first boot (partitioning, RAID,
// filesystems, LUKS, kernel arguments) are parsed and reported but never
// applied.
package machineconfig
