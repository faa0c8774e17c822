// Package lockfile holds a process-exclusive lock on a data directory, so
// that a second flotilla process pointed at the same directory fails fast
// with a clear message instead of corrupting state the first one owns. The
// lock is a flock(2), released by the kernel when the process dies, so a
// crash never leaves a stale lock behind.
package lockfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Acquire locks dir/name without waiting. what names the kind of process
// for the error message, e.g. "flotilla server".
func Acquire(dir, name, what string) (*os.File, error) {
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data directory %s is in use by another %s (lock %s held)", dir, what, path)
		}
		return nil, fmt.Errorf("lock data dir: %w", err)
	}
	return f, nil
}
