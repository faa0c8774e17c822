//go:build !race

package rebootlock

const raceEnabled = false
