package rollout

import (
	"crypto/sha256"
	"encoding/binary"
	"math"
	"time"

	"github.com/flotilla/flotilla/internal/store"
)

// CurrentPercent returns the share (0–100) of machines eligible for the
// group's current rollout at now.
//
// The rollout starts at p.RolloutPercent (clamped to 0–100; NaN counts as 0).
// With p.RampDuration > 0 the share grows linearly from there to 100 over
// RampDuration, counted from startedAt. A zero startedAt means the rollout
// has not started, and a now before startedAt (clock skew between replicas)
// is treated the same way: both give the start percentage, so a skewed
// clock can never widen a rollout.
func CurrentPercent(p store.Policy, startedAt, now time.Time) float64 {
	start := clampPercent(p.RolloutPercent)
	if p.RampDuration <= 0 || startedAt.IsZero() || start >= 100 {
		return start
	}
	elapsed := now.Sub(startedAt)
	switch {
	case elapsed <= 0:
		return start
	case elapsed >= p.RampDuration:
		return 100
	}
	frac := float64(elapsed) / float64(p.RampDuration)
	return clampPercent(start + (100-start)*frac)
}

func clampPercent(v float64) float64 {
	switch {
	case math.IsNaN(v) || v <= 0:
		return 0
	case v >= 100:
		return 100
	}
	return v
}

// Bucket returns the machine's deterministic position in [0, 100) in the
// rollout of version. A machine is in a rollout once the rollout's
// percentage exceeds its bucket.
//
// The position is derived from SHA-256 of machineID, a NUL separator and
// version. A cryptographic hash spreads any machine-id scheme (sequential,
// shared prefixes) uniformly; hashing the version in means every release
// picks a different first cohort, so the same machines are not always the
// canaries; and for one version the position never changes, so a machine
// admitted to a rollout stays admitted as the percentage grows. The
// separator keeps ("ab", "c") and ("a", "bc") apart.
//
// machineID should be in the canonical form the store uses; differently
// spelled ids of one machine land in different buckets.
func Bucket(machineID, version string) float64 {
	h := sha256.New()
	h.Write([]byte(machineID))
	h.Write([]byte{0})
	h.Write([]byte(version))
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	// The top 53 bits fit a float64 mantissa exactly, giving a uniform value
	// in [0, 1) with no rounding up to 1.
	u := binary.BigEndian.Uint64(sum[:8]) >> 11
	return float64(u) / (1 << 53) * 100
}

// Eligible reports whether the machine is inside a rollout of version that
// currently covers percent of machines: Bucket(machineID, version) < percent.
// percent >= 100 is always true and percent <= 0 (or NaN) always false, so
// the ends of a rollout do not depend on floating-point details.
func Eligible(machineID, version string, percent float64) bool {
	switch {
	case percent >= 100:
		return true
	case math.IsNaN(percent) || percent <= 0:
		return false
	}
	return Bucket(machineID, version) < percent
}
