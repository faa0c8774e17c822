package payload

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// BuildOptions describe the payload Build writes.
type BuildOptions struct {
	Version     string // OS version, required
	Board       string // optional, e.g. "amd64-usr"
	Compression string // CompressionZstd (default), CompressionGzip or CompressionNone
	Created     time.Time
	// Progress, if not nil, is called with the image bytes processed and
	// the image size, from one goroutine at a time.
	Progress func(done, total int64)
}

// zstdWindow is the window Build's zstd encoder uses.
const zstdWindow = 8 << 20

// Build writes an unsigned payload of the image at imagePath to outPath
// and returns its header. The image is read once: hashed and compressed
// into a temporary file next to outPath (or, uncompressed, hashed and
// copied straight into the output). The output is assembled in a temporary
// file that replaces outPath only when complete, so an error or
// cancellation leaves no partial output.
func Build(ctx context.Context, outPath, imagePath string, opts BuildOptions) (*Header, error) {
	h := Header{
		Format:      FormatVersion,
		Version:     opts.Version,
		Board:       opts.Board,
		Created:     opts.Created,
		Compression: opts.Compression,
	}
	if h.Compression == "" {
		h.Compression = CompressionZstd
	}
	if h.Created.IsZero() {
		h.Created = time.Now()
	}
	h.Created = h.Created.UTC().Truncate(time.Second)

	img, err := os.Open(imagePath)
	if err != nil {
		return nil, fmt.Errorf("payload: build: %w", err)
	}
	defer img.Close()
	size, err := img.Seek(0, io.SeekEnd) // works for block devices too
	if err != nil {
		return nil, fmt.Errorf("payload: build: %w", err)
	}
	if size == 0 {
		return nil, fmt.Errorf("payload: build: image %s is empty: %w", imagePath, ErrMalformed)
	}
	h.ImageSize = size
	// Check the options before any work, with placeholder hashes (which
	// have the final length).
	zero := strings.Repeat("0", 64)
	h.ImageSHA256, h.DataSize, h.DataSHA256 = zero, size, zero
	if err := h.validate(); err != nil {
		return nil, fmt.Errorf("payload: build: %v: %w", err, ErrMalformed)
	}

	err = writeAtomic(ctx, outPath, 0o644, func(out *os.File) error {
		if h.Compression == CompressionNone {
			return buildRaw(ctx, out, img, &h, opts.Progress)
		}
		return buildCompressed(ctx, out, img, &h, opts.Progress)
	})
	if err != nil {
		return nil, fmt.Errorf("payload: build: %w", err)
	}
	return &h, nil
}

// buildRaw writes the header with placeholder hashes, streams the image
// behind it while hashing, and rewrites the header: the hashes have a
// fixed length, so the header length does not change.
func buildRaw(ctx context.Context, out *os.File, img *os.File, h *Header, progress func(done, total int64)) error {
	hb, err := marshalHeader(h)
	if err != nil {
		return err
	}
	pre := preamble(hb, nil)
	if _, err := out.WriteAt(pre, 0); err != nil {
		return err
	}
	base := int64(len(pre))
	sum := sha256.New()
	err = runPipeline(ctx, h.ImageSize, readAtProducer(img, 0, h.ImageSize),
		hashStage(sum, h.ImageSize, nil),
		func(c chunk) error {
			if _, err := out.WriteAt(c.b, base+c.off); err != nil {
				return err
			}
			if progress != nil {
				progress(c.off+int64(len(c.b)), h.ImageSize)
			}
			return nil
		})
	if err != nil {
		return err
	}
	h.ImageSHA256 = hex.EncodeToString(sum.Sum(nil))
	h.DataSHA256 = h.ImageSHA256
	final, err := marshalHeader(h)
	if err != nil {
		return err
	}
	if len(final) != len(hb) {
		return fmt.Errorf("internal error: header length changed from %d to %d", len(hb), len(final))
	}
	_, err = out.WriteAt(preamble(final, nil), 0)
	return err
}

// buildCompressed hashes and compresses the image into a temporary file,
// then writes the header and copies the compressed data behind it.
func buildCompressed(ctx context.Context, out *os.File, img *os.File, h *Header, progress func(done, total int64)) error {
	tmp, err := os.CreateTemp(filepath.Dir(out.Name()), ".payload-data-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()

	bw := bufio.NewWriterSize(tmp, 1<<20)
	dw := &hashingWriter{w: bw, h: sha256.New()}
	var enc io.WriteCloser
	switch h.Compression {
	case CompressionGzip:
		enc = gzip.NewWriter(dw)
	case CompressionZstd:
		enc, err = zstd.NewWriter(dw, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithWindowSize(zstdWindow))
		if err != nil {
			return err
		}
	default:
		return fmt.Errorf("compression %q: %w", h.Compression, ErrMalformed)
	}
	imgSum := sha256.New()
	err = runPipeline(ctx, h.ImageSize, readAtProducer(img, 0, h.ImageSize),
		hashStage(imgSum, h.ImageSize, nil),
		func(c chunk) error {
			if _, err := enc.Write(c.b); err != nil {
				return err
			}
			if progress != nil {
				progress(c.off+int64(len(c.b)), h.ImageSize)
			}
			return nil
		})
	if cerr := enc.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	h.ImageSHA256 = hex.EncodeToString(imgSum.Sum(nil))
	h.DataSize = dw.n
	h.DataSHA256 = hex.EncodeToString(dw.h.Sum(nil))
	hb, err := marshalHeader(h)
	if err != nil {
		return err
	}
	if _, err := out.Write(preamble(hb, nil)); err != nil {
		return err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	return copyN(ctx, out, tmp, h.DataSize)
}

type hashingWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (w *hashingWriter) Write(b []byte) (int, error) {
	n, err := w.w.Write(b)
	w.h.Write(b[:n])
	w.n += int64(n)
	return n, err
}

// copyN copies n bytes from src to dst (in-kernel where the OS can) and
// fails if fewer are available.
func copyN(ctx context.Context, dst, src *os.File, n int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	got, err := io.Copy(dst, io.LimitReader(src, n))
	if err != nil {
		return err
	}
	if got != n {
		return fmt.Errorf("copied %d of %d data bytes: %w", got, n, io.ErrUnexpectedEOF)
	}
	return ctx.Err()
}

// Sign adds an ed25519 signature by priv to the payload at path, replacing
// an earlier signature by the same key, and rewrites the file atomically.
// It verifies the data first (VerifyData) so that a corrupted payload is
// never signed.
func Sign(ctx context.Context, path string, priv ed25519.PrivateKey) error {
	return SignTo(ctx, path, path, priv)
}

// SignTo is Sign writing the signed payload to dst instead of in place.
func SignTo(ctx context.Context, src, dst string, priv ed25519.PrivateKey) error {
	if len(priv) != ed25519.PrivateKeySize {
		return fmt.Errorf("payload: sign: private key has %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("payload: sign: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("payload: sign: %w", err)
	}
	p, err := Open(f, st.Size())
	if err != nil {
		return err
	}
	if err := p.VerifyData(ctx, nil); err != nil {
		return fmt.Errorf("payload: sign: refusing to sign: %w", err)
	}
	id := KeyID(priv.Public().(ed25519.PublicKey))
	sigs := make([]Signature, 0, len(p.sigs)+1)
	for _, s := range p.sigs {
		if s.KeyID != id {
			sigs = append(sigs, s)
		}
	}
	sigs = append(sigs, Signature{
		KeyID:     id,
		Algorithm: AlgorithmEd25519,
		Signature: ed25519.Sign(priv, signedMessage(p.headerBytes)),
	})
	sb, err := json.Marshal(signatureBlock{Signatures: sigs})
	if err != nil {
		return fmt.Errorf("payload: sign: %w", err)
	}
	if len(sb) > MaxSignatureBlockSize {
		return fmt.Errorf("payload: sign: %d signatures need %d bytes, more than %d: %w",
			len(sigs), len(sb), MaxSignatureBlockSize, ErrMalformed)
	}
	perm := st.Mode().Perm()
	err = writeAtomic(ctx, dst, perm, func(out *os.File) error {
		if _, err := out.Write(preamble(p.headerBytes, sb)); err != nil {
			return err
		}
		if _, err := f.Seek(p.dataOff, io.SeekStart); err != nil {
			return err
		}
		return copyN(ctx, out, f, p.header.DataSize)
	})
	if err != nil {
		return fmt.Errorf("payload: sign: %w", err)
	}
	return nil
}

// writeAtomic creates a temporary file next to dst, lets fill write it,
// syncs it and renames it to dst. On any error the temporary file is
// removed and dst is untouched.
func writeAtomic(ctx context.Context, dst string, perm fs.FileMode, fill func(f *os.File) error) (err error) {
	dir := filepath.Dir(dst)
	f, err := os.CreateTemp(dir, "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	closed := false
	defer func() {
		if err != nil {
			if !closed {
				f.Close()
			}
			os.Remove(tmp)
		}
	}()
	if err = fill(f); err != nil {
		return err
	}
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	closed = true
	if err = f.Close(); err != nil {
		return err
	}
	if err = ctx.Err(); err != nil {
		return err
	}
	if err = os.Rename(tmp, dst); err != nil {
		return err
	}
	if d, derr := os.Open(dir); derr == nil { // make the rename durable; best effort
		d.Sync()
		d.Close()
	}
	return nil
}
