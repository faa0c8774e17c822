package agent

import (
	"os"
	"syscall"
)

// Crash points a test can name in Config.CrashPoint (the CLI's hidden
// --crash-point flag, or FLOTILLA_AGENT_CRASH_POINT). At the named step
// the process sends itself SIGKILL: exactly what an external kill -9 or a
// power cut would do there, but at a reproducible place, so the tests can
// prove that each step recovers.
var crashPoints = []string{"download", "write", "before-commit", "after-commit"}

// crashpoint kills the process when name is the configured crash point.
func (a *Agent) crashpoint(name string) {
	if a.cfg.CrashPoint != name {
		return
	}
	a.log.Warn("crash point reached; killing the process", "point", name)
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // SIGKILL is not deliverable late; never continue past the point
}

// ValidCrashPoint reports whether name is a known crash point ("" is).
func ValidCrashPoint(name string) bool {
	if name == "" {
		return true
	}
	for _, p := range crashPoints {
		if p == name {
			return true
		}
	}
	return false
}
