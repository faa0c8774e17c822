//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package gpt

import "os"

// tryLock is a no-op where flock(2) does not exist: flotilla only writes
// real disks on Linux, other systems just handle image files.
func tryLock(*os.File) (bool, error) { return true, nil }
