package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/flotilla/flotilla/internal/payload"
	"github.com/flotilla/flotilla/omaha"
)

// downloadAttempts bounds retries of one download within one update
// attempt; each retry resumes with a Range request.
const downloadAttempts = 6

// download fetches the payload into dst, resuming a partial dst.part left
// by an earlier attempt or a crash. It checks the size and SHA-256 the
// server announced (codes 11 and 10) and returns the digest of the
// payload's data section, computed while the bytes arrived, so the verify
// step need not read the file again. resumed reports whether bytes from an
// earlier attempt were reused (update_engine's Resumed flag).
func (a *Agent) download(ctx context.Context, p *Pending, dst string) (resumed bool, _ *streamed, _ *failure) {
	if fi, err := os.Stat(dst); err == nil && fi.Size() == p.Size {
		// Complete before a crash; only the state had not moved on.
		sh, ferr := hashFile(dst, p.Size)
		if ferr != nil {
			return false, nil, ferr
		}
		return false, sh, sh.check(p)
	}
	part := dst + ".part"
	var lastErr error
	var sh *streamed
	backoff := time.Second
	for attempt := 1; attempt <= downloadAttempts; attempt++ {
		var r bool
		var err error
		sh, r, err = a.fetch(ctx, p, part)
		resumed = resumed || r
		if err == nil {
			break
		}
		var f *failure
		if errors.As(err, &f) {
			return resumed, nil, f
		}
		if ctx.Err() != nil {
			return resumed, nil, fail(omaha.CodeDownloadTransfer, "download: %w", ctx.Err())
		}
		lastErr = err
		a.log.Warn("download interrupted; will resume", "attempt", attempt, "err", err)
		if attempt == downloadAttempts {
			return resumed, nil, fail(omaha.CodeDownloadTransfer, "download %s: %w", p.URL, lastErr)
		}
		select {
		case <-ctx.Done():
			return resumed, nil, fail(omaha.CodeDownloadTransfer, "download: %w", ctx.Err())
		case <-time.After(backoff):
		}
		backoff *= 2
	}
	if ferr := sh.check(p); ferr != nil {
		os.Remove(part)
		return resumed, nil, ferr
	}
	if err := os.Rename(part, dst); err != nil {
		return resumed, nil, fail(omaha.CodeDownloadWrite, "download: %w", err)
	}
	if err := syncDir(a.stagingDir()); err != nil {
		return resumed, nil, fail(omaha.CodeDownloadWrite, "download: %w", err)
	}
	return resumed, sh, nil
}

// streamed holds the digests of a payload file computed as it was
// written: the whole file (for the Omaha answer) and its data section (for
// the signed header).
type streamed struct {
	n    int64
	file hash.Hash
	data *payload.StreamDigest
}

func newStreamed() *streamed {
	return &streamed{file: sha256.New(), data: payload.NewStreamDigest()}
}

func (s *streamed) Write(b []byte) (int, error) {
	s.file.Write(b)
	s.data.Write(b)
	s.n += int64(len(b))
	return len(b), nil
}

// check compares the file with the Omaha answer.
func (s *streamed) check(p *Pending) *failure {
	if s.n != p.Size {
		return fail(omaha.CodePayloadSizeMismatch, "download: the payload has %d bytes, the server announced %d", s.n, p.Size)
	}
	if got := hex.EncodeToString(s.file.Sum(nil)); got != p.SHA256 {
		return fail(omaha.CodePayloadHashMismatch, "download: the payload's SHA-256 is %s, the server announced %s", got, p.SHA256)
	}
	return nil
}

// hashFile feeds the first n bytes of path through a new streamed.
func hashFile(path string, n int64) (*streamed, *failure) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fail(omaha.CodeDownloadWrite, "download: %w", err)
	}
	defer f.Close()
	sh := newStreamed()
	if _, err := io.Copy(sh, io.LimitReader(f, n)); err != nil {
		return nil, fail(omaha.CodeDownloadWrite, "download: hash: %w", err)
	}
	return sh, nil
}

// fetch appends to part from where it ends, hashing the bytes already
// there first. A *failure return is final; other errors are retried.
func (a *Agent) fetch(ctx context.Context, p *Pending, part string) (*streamed, bool, error) {
	f, err := os.OpenFile(part, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, false, fail(omaha.CodeDownloadWrite, "download: %w", err)
	}
	defer f.Close()
	off, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, false, fail(omaha.CodeDownloadWrite, "download: %w", err)
	}
	restart := func() *failure {
		if err := f.Truncate(0); err != nil {
			return fail(omaha.CodeDownloadWrite, "download: %w", err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return fail(omaha.CodeDownloadWrite, "download: %w", err)
		}
		off = 0
		return nil
	}
	if off > p.Size {
		if ferr := restart(); ferr != nil {
			return nil, false, ferr
		}
	}
	// The bytes kept from before are hashed again: cheaper than a network
	// round trip, and nothing about them has to be trusted from the state.
	sh := newStreamed()
	if off > 0 {
		if _, err := io.Copy(sh, io.NewSectionReader(f, 0, off)); err != nil {
			return nil, false, fail(omaha.CodeDownloadWrite, "download: hash kept bytes: %w", err)
		}
	}
	if off == p.Size {
		return sh, false, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL, nil)
	if err != nil {
		return nil, false, fail(omaha.CodeDownloadTransfer, "download: %w", err)
	}
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
	}
	resp, err := a.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, false, err
	}
	defer resp.Body.Close()
	resumed := false
	switch {
	case resp.StatusCode == http.StatusPartialContent && off > 0:
		start, ok := contentRangeStart(resp.Header.Get("Content-Range"))
		if !ok || start != off {
			return nil, false, fmt.Errorf("bad Content-Range %q for a resume at %d", resp.Header.Get("Content-Range"), off)
		}
		resumed = true
		a.log.Info("resuming download", "offset", off, "size", p.Size)
	case resp.StatusCode == http.StatusOK:
		// The server ignored the Range: start over.
		if ferr := restart(); ferr != nil {
			return nil, false, ferr
		}
		sh = newStreamed()
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return nil, false, fail(omaha.CodePayloadSizeMismatch, "download: the server has no bytes past %d, but announced %d", off, p.Size)
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return nil, false, fmt.Errorf("HTTP %s", resp.Status)
	default:
		return nil, false, fail(omaha.CodeDownloadTransfer, "download %s: HTTP %s", p.URL, resp.Status)
	}
	// Read at most one byte more than announced so an oversized payload is
	// caught without filling the disk.
	body := io.LimitReader(resp.Body, p.Size-off+1)
	buf := make([]byte, 1<<20)
	n := off
	synced := false
	for {
		m, rerr := body.Read(buf)
		if m > 0 {
			if _, werr := f.Write(buf[:m]); werr != nil {
				return nil, resumed, fail(omaha.CodeDownloadWrite, "download: %w", werr)
			}
			sh.Write(buf[:m])
			n += int64(m)
			if p.Size > 0 {
				a.setProgress(float64(n) / float64(p.Size))
			}
			if !synced && a.cfg.CrashPoint == "download" && n < p.Size {
				// Make the bytes so far durable, then die: the test
				// checks that the next start resumes from here.
				_ = f.Sync()
				synced = true
				a.crashpoint("download")
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			_ = f.Sync()
			return nil, resumed, rerr
		}
	}
	if err := f.Sync(); err != nil {
		return nil, resumed, fail(omaha.CodeDownloadWrite, "download: %w", err)
	}
	if n < p.Size {
		return nil, resumed, fmt.Errorf("connection closed after %d of %d bytes", n, p.Size)
	}
	return sh, resumed, nil
}

func contentRangeStart(v string) (int64, bool) {
	v, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, false
	}
	startS, _, ok := strings.Cut(v, "-")
	if !ok {
		return 0, false
	}
	start, err := strconv.ParseInt(startS, 10, 64)
	return start, err == nil
}
