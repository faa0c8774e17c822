//go:build race

package rebootlock

// raceEnabled is true when tests run under the race detector, which makes
// everything several times slower; the fault tests then run their seeds one
// after another instead of competing for the CPU.
const raceEnabled = true
