//go:build linux

package payload

import "golang.org/x/sys/unix"

// startWriteback asks the kernel to start writing [off, off+n) of fd to
// the device without waiting for it.
func startWriteback(fd uintptr, off, n int64) error {
	return unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

// waitWriteback writes [off, off+n) of fd to the device and waits until
// it is there (data only; the caller's fsync still follows).
func waitWriteback(fd uintptr, off, n int64) error {
	return unix.SyncFileRange(int(fd), off, n,
		unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
}
