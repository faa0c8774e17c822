package testenv

import (
	"errors"
	"testing"
	"time"
)

// WaitFor polls fn until it returns nil, failing the test with what and
// fn's last error once limit has passed. Tests wait for conditions this
// way, never with a fixed sleep.
func WaitFor(tb testing.TB, limit time.Duration, what string, fn func() error) {
	tb.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %s: %v", what, limit, err)
		}
		time.Sleep(20 * time.Millisecond) // the polling interval
	}
}

// Until is WaitFor for a condition without an error to report.
func Until(tb testing.TB, limit time.Duration, what string, ok func() bool) {
	tb.Helper()
	WaitFor(tb, limit, what, func() error {
		if ok() {
			return nil
		}
		return errNotYet
	})
}

var errNotYet = errors.New("condition not met")
