package payload

// Writeback behind the writer. Left alone, the kernel keeps a freshly
// written image in dirty page cache until the caller's fsync (up to 10-20 %
// of RAM), so the disk idles while WriteImage runs and the fsync then takes
// as long as writing the whole image. When the destination is an *os.File
// (a partition or a regular file, written from offset 0), WriteImage instead starts
// writeback of each written range right away and waits for ranges well
// behind the writer, so disk and CPU work overlap, the final fsync is
// shorter, and only about writebackLag + writebackStep + 16 chunks of the
// image are dirty at any time (so a big image cannot flood the page cache
// of a small machine).

var (
	writebackEnabled = true
	writebackStep    = int64(8 << 20)
	writebackLag     = int64(64 << 20)
)

// writeback runs in its own goroutine and receives the end offset of every
// write, in order. It returns when ends is closed. A failing call (a pipe,
// a file system without support) turns it off; it is an optimisation only.
func writeback(fd uintptr, ends <-chan int64) {
	var started, waited int64
	ok := true
	for end := range ends {
		if !ok || end-started < writebackStep {
			continue
		}
		if err := startWriteback(fd, started, end-started); err != nil {
			ok = false
			continue
		}
		started = end
		if upTo := started - writebackLag; upTo > waited {
			if err := waitWriteback(fd, waited, upTo-waited); err != nil {
				ok = false
				continue
			}
			waited = upTo
		}
	}
}
