package payload

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// zstdMaxWindow bounds the memory a zstd stream may make the decoder use.
// Build writes 8 MiB windows.
const zstdMaxWindow = 64 << 20

// zstdConcurrency is the number of blocks the zstd decoder works on at
// once; above 1 it decodes in goroutines of its own.
var zstdConcurrency = 2

// signedMessage returns the bytes an ed25519 signature covers.
func signedMessage(header []byte) []byte {
	m := make([]byte, 0, len(signatureContext)+len(header))
	m = append(m, signatureContext...)
	return append(m, header...)
}

// VerifySignature checks that at least one ed25519 signature of the payload
// was made by a key in kr over the header, and returns that key's ID. It
// fails closed: ErrNoTrustedKeys when kr is nil or empty, ErrUnsigned when
// the payload carries no signatures, ErrSignature when none verifies.
// Signatures by keys outside kr are ignored.
func (p *Payload) VerifySignature(kr *Keyring) (keyID string, err error) {
	if kr.Len() == 0 {
		return "", fmt.Errorf("payload: verify signature: %w", ErrNoTrustedKeys)
	}
	if len(p.sigs) == 0 {
		return "", fmt.Errorf("payload: verify signature: %w", ErrUnsigned)
	}
	msg := signedMessage(p.headerBytes)
	var seen []string
	for _, s := range p.sigs {
		if s.Algorithm != AlgorithmEd25519 {
			seen = append(seen, s.KeyID+" ("+s.Algorithm+", ignored)")
			continue
		}
		pub, ok := kr.lookup(s.KeyID)
		if !ok {
			seen = append(seen, s.KeyID+" (not trusted)")
			continue
		}
		if ed25519.Verify(pub, msg, s.Signature) {
			return s.KeyID, nil
		}
		seen = append(seen, s.KeyID+" (INVALID)")
	}
	return "", fmt.Errorf("payload: verify signature: signed by %s; trusted keys %s: %w",
		strings.Join(seen, ", "), strings.Join(kr.IDs(), ", "), ErrSignature)
}

// VerifyData reads all data once and checks its size and data_sha256
// (ErrDataMismatch), and, for compressed payloads, decompresses it and
// checks image_size and image_sha256 (ErrImageMismatch). progress, if not
// nil, is called after each chunk with the data bytes done and data_size,
// from one goroutine at a time.
func (p *Payload) VerifyData(ctx context.Context, progress func(done, total int64)) error {
	h := &p.header
	if h.Compression == CompressionNone {
		sum := sha256.New()
		err := runPipeline(ctx, h.DataSize, readAtProducer(p.r, p.dataOff, h.DataSize),
			hashStage(sum, h.DataSize, progress))
		if err != nil {
			return fmt.Errorf("payload: verify data: %w", err)
		}
		if got := hex.EncodeToString(sum.Sum(nil)); got != h.DataSHA256 {
			return fmt.Errorf("payload: verify data: sha256 %s, header says %s: %w", got, h.DataSHA256, ErrDataMismatch)
		}
		return nil
	}

	// Two pipelines joined by a pipe: read and hash the stored data, and
	// decompress and hash the image.
	pr, pw := io.Pipe()
	dataSum := sha256.New()
	innerErr := make(chan error, 1)
	go func() {
		err := runPipeline(ctx, h.DataSize, readAtProducer(p.r, p.dataOff, h.DataSize),
			hashStage(dataSum, h.DataSize, progress),
			func(c chunk) error {
				_, err := pw.Write(c.b)
				return err
			})
		pw.CloseWithError(err) // nil: the decompressor sees io.EOF
		innerErr <- err
	}()
	imgSum := sha256.New()
	err := p.decompress(ctx, pr, hashStage(imgSum, h.ImageSize, nil))
	pr.CloseWithError(errStopped) // unblocks the inner pipeline on early stop
	ierr := <-innerErr
	if ierr != nil && !errors.Is(ierr, errStopped) {
		return fmt.Errorf("payload: verify data: %w", ierr)
	}
	if ierr == nil {
		// All data was read, so its hash is the first thing to report.
		if got := hex.EncodeToString(dataSum.Sum(nil)); got != h.DataSHA256 {
			return fmt.Errorf("payload: verify data: sha256 %s, header says %s: %w", got, h.DataSHA256, ErrDataMismatch)
		}
	}
	if err != nil {
		return fmt.Errorf("payload: verify data: %w", err)
	}
	if got := hex.EncodeToString(imgSum.Sum(nil)); got != h.ImageSHA256 {
		return fmt.Errorf("payload: verify data: image sha256 %s, header says %s: %w", got, h.ImageSHA256, ErrImageMismatch)
	}
	return nil
}

var errStopped = errors.New("stopped")

// WriteImage writes the decompressed image to dst at offsets 0..image_size
// and checks image_sha256 on the way (ErrImageMismatch at the end). Before
// writing anything it refuses an image larger than maxSize (ErrTooLarge);
// maxSize must be positive. It never writes beyond image_size, even for
// corrupt data. progress, if not nil, is called after each written chunk
// with the image bytes written and image_size, from one goroutine at a
// time.
//
// When dst is an *os.File (a partition or a file), WriteImage starts
// kernel writeback of written ranges as it goes and keeps only a bounded
// amount of the image dirty in the page cache (Linux sync_file_range), so
// disk and CPU work overlap and the caller's final Sync is short. It does
// not replace that Sync.
//
// WriteImage does not check the signature: call VerifySignature (and
// VerifyData) first, and after WriteImage sync dst and compare its
// content with VerifyImage.
func (p *Payload) WriteImage(ctx context.Context, dst io.WriterAt, maxSize int64, progress func(done, total int64)) error {
	return p.writeImage(ctx, dst, nil, maxSize, progress)
}

// ReadWriterAt is a write target that can be read back, such as a
// partition.
type ReadWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// WriteImageReadBack writes the image like WriteImage, but instead of
// hashing the bytes it is about to write it reads every chunk back from
// dst once written and hashes what it read, in a pipeline stage that runs
// beside the writes of the next chunks. ErrImageMismatch at the end means
// dst does not hold the signed image. It does the work of WriteImage
// followed by VerifyImage in about the time of one pass, because the
// read-back hashing overlaps the writing on another core. Like VerifyImage
// after a Sync, the read-back is served by the page cache: it proves what
// the partition returns to readers, not what the medium holds.
func (p *Payload) WriteImageReadBack(ctx context.Context, dst ReadWriterAt, maxSize int64, progress func(done, total int64)) error {
	return p.writeImage(ctx, dst, dst, maxSize, progress)
}

func (p *Payload) writeImage(ctx context.Context, dst io.WriterAt, readBack io.ReaderAt, maxSize int64, progress func(done, total int64)) error {
	h := &p.header
	if maxSize <= 0 {
		return fmt.Errorf("payload: write image: target size %d must be positive: %w", maxSize, ErrTooLarge)
	}
	if h.ImageSize > maxSize {
		return fmt.Errorf("payload: write image: image of %d bytes, target holds %d: %w", h.ImageSize, maxSize, ErrTooLarge)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("payload: write image: %w", err)
	}
	var ends chan int64
	if f, ok := dst.(*os.File); ok && writebackEnabled {
		ends = make(chan int64, 16)
		done := make(chan struct{})
		fd := f.Fd()
		go func() {
			defer close(done)
			writeback(fd, ends)
		}()
		defer func() {
			close(ends)
			<-done // the caller may close dst once WriteImage returns
		}()
	}
	sum := sha256.New()
	write := func(c chunk) error {
		if _, err := dst.WriteAt(c.b, c.off); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		end := c.off + int64(len(c.b))
		if ends != nil {
			ends <- end // the writeback goroutine always drains ends
		}
		if progress != nil {
			progress(end, h.ImageSize)
		}
		return nil
	}
	stages := []stage{hashStage(sum, h.ImageSize, nil), write}
	if readBack != nil {
		// Once written, a chunk's buffer is free: the read-back goes into
		// it, and the next stage (another goroutine) hashes it, so reading
		// and hashing overlap as well.
		stages = []stage{write, func(c chunk) error {
			if _, err := readBack.ReadAt(c.b, c.off); err != nil {
				return fmt.Errorf("read back at %d: %w", c.off, err)
			}
			return nil
		}, hashStage(sum, h.ImageSize, nil)}
	}
	var err error
	if h.Compression == CompressionNone {
		err = runPipeline(ctx, h.DataSize, readAtProducer(p.r, p.dataOff, h.DataSize), stages...)
	} else {
		err = p.decompress(ctx, io.NewSectionReader(p.r, p.dataOff, h.DataSize), stages...)
	}
	if err != nil {
		return fmt.Errorf("payload: write image: %w", err)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != h.ImageSHA256 {
		what := "image"
		if readBack != nil {
			what = "read-back image"
		}
		return fmt.Errorf("payload: write image: %s sha256 %s, header says %s: %w", what, got, h.ImageSHA256, ErrImageMismatch)
	}
	return nil
}

// VerifyImage reads image_size bytes of r from offset 0 (the written
// partition, after it has been flushed) and compares their hash with
// image_sha256 (ErrImageMismatch).
func (p *Payload) VerifyImage(ctx context.Context, r io.ReaderAt, progress func(done, total int64)) error {
	got, err := HashImage(ctx, r, p.header.ImageSize, progress)
	if err != nil {
		return err
	}
	if got != p.header.ImageSHA256 {
		return fmt.Errorf("payload: verify image: sha256 %s, header says %s: %w", got, p.header.ImageSHA256, ErrImageMismatch)
	}
	return nil
}

// HashImage returns the lower-case hex SHA-256 of the first size bytes of
// r. Fewer than size bytes is an error (io.ErrUnexpectedEOF).
func HashImage(ctx context.Context, r io.ReaderAt, size int64, progress func(done, total int64)) (string, error) {
	if size < 0 {
		return "", fmt.Errorf("payload: hash image: negative size %d: %w", size, ErrMalformed)
	}
	sum := sha256.New()
	if err := runPipeline(ctx, size, readAtProducer(r, 0, size), hashStage(sum, size, progress)); err != nil {
		return "", fmt.Errorf("payload: hash image: %w", err)
	}
	return hex.EncodeToString(sum.Sum(nil)), nil
}

// hashStage hashes each chunk and reports progress.
func hashStage(h hash.Hash, total int64, progress func(done, total int64)) stage {
	return func(c chunk) error {
		h.Write(c.b)
		if progress != nil {
			progress(c.off+int64(len(c.b)), total)
		}
		return nil
	}
}

// decompress runs the payload's decompressor over src in a pipeline with
// stages. Exactly image_size bytes must come out (else ErrImageMismatch),
// and the compressed stream must end exactly at the end of src (else
// ErrDataMismatch); undecodable data is ErrDataMismatch.
func (p *Payload) decompress(ctx context.Context, src io.Reader, stages ...stage) error {
	h := &p.header
	cr := &countingReader{r: src}
	var dec io.Reader
	switch h.Compression {
	case CompressionGzip:
		zr, err := gzip.NewReader(cr)
		if err != nil {
			return cr.classify(h.Compression, err)
		}
		defer zr.Close()
		dec = zr
	case CompressionZstd:
		zr, err := zstd.NewReader(cr, zstd.WithDecoderConcurrency(zstdConcurrency),
			zstd.WithDecoderMaxWindow(zstdMaxWindow), zstd.WithDecoderMaxMemory(zstdMaxWindow))
		if err != nil {
			return fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		dec = zr
	default:
		return fmt.Errorf("compression %q: %w", h.Compression, ErrMalformed)
	}
	remaining := h.ImageSize
	produce := func(buf []byte) (int, error) {
		if remaining == 0 {
			var one [1]byte
			n, err := io.ReadFull(dec, one[:])
			switch {
			case n > 0:
				return 0, fmt.Errorf("decompressed image is larger than image_size %d: %w", h.ImageSize, ErrImageMismatch)
			case err != io.EOF:
				return 0, cr.classify(h.Compression, err)
			case cr.count() != h.DataSize:
				return 0, fmt.Errorf("compressed stream ends after %d of %d data bytes: %w", cr.count(), h.DataSize, ErrDataMismatch)
			}
			return 0, io.EOF
		}
		if int64(len(buf)) > remaining {
			buf = buf[:remaining]
		}
		n, err := io.ReadFull(dec, buf)
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return 0, fmt.Errorf("decompressed image has %d bytes, image_size is %d: %w",
				h.ImageSize-remaining+int64(n), h.ImageSize, ErrImageMismatch)
		case err != nil:
			return 0, cr.classify(h.Compression, err)
		}
		remaining -= int64(n)
		return n, nil
	}
	return runPipeline(ctx, h.ImageSize, produce, stages...)
}

// countingReader counts the compressed bytes the decompressor consumed
// and remembers the first error of the reader below it. The zstd decoder
// reads from its own goroutine, hence the mutex.
type countingReader struct {
	r   io.Reader
	mu  sync.Mutex
	n   int64
	err error
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.mu.Lock()
	c.n += int64(n)
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	return n, err
}

func (c *countingReader) count() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// classify turns a decompressor error into the error to report: a read
// error (or cancellation) below the decompressor as it is, anything else
// as corrupt data.
func (c *countingReader) classify(compression string, err error) error {
	c.mu.Lock()
	rerr := c.err
	c.mu.Unlock()
	if rerr != nil {
		return rerr
	}
	return fmt.Errorf("%s: %v: %w", compression, err, ErrDataMismatch)
}
