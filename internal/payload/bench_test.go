package payload

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// benchImageSize is the size of the benchmark image (a small /usr).
const benchImageSize = 256 << 20

// benchFiles are generated once per process, on first use, and removed by
// TestMain.
var benchFiles struct {
	once     sync.Once
	err      error
	dir      string
	image    string
	payloads map[string]string // compression -> signed payload path
	kr       *Keyring
}

func TestMain(m *testing.M) {
	code := m.Run()
	if benchFiles.dir != "" {
		os.RemoveAll(benchFiles.dir)
	}
	os.Exit(code)
}

func benchSetup(b *testing.B) {
	b.Helper()
	bf := &benchFiles
	bf.once.Do(func() {
		bf.err = func() error {
			dir, err := os.MkdirTemp("", "flotilla-payload-bench-*")
			if err != nil {
				return err
			}
			bf.dir = dir
			bf.image = filepath.Join(dir, "usr.img")
			f, err := os.Create(bf.image)
			if err != nil {
				return err
			}
			if err := genImage(f, benchImageSize, 42); err != nil {
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			pub, priv, err := GenerateKey()
			if err != nil {
				return err
			}
			if bf.kr, err = NewKeyring(pub); err != nil {
				return err
			}
			bf.payloads = map[string]string{}
			for _, comp := range []string{CompressionNone, CompressionZstd} {
				out := filepath.Join(dir, "payload-"+comp)
				h, err := Build(context.Background(), out, bf.image, BuildOptions{Version: "4081.2.0", Compression: comp})
				if err != nil {
					return err
				}
				if err := Sign(context.Background(), out, priv); err != nil {
					return err
				}
				bf.payloads[comp] = out
				b.Logf("%s payload: image %d bytes, data %d bytes (%.2f)", comp, h.ImageSize, h.DataSize, float64(h.DataSize)/float64(h.ImageSize))
			}
			return nil
		}()
	})
	if bf.err != nil {
		b.Fatalf("benchmark setup: %v", bf.err)
	}
}

// freshDst returns a new, empty destination file; the previous one is
// removed with the timer stopped.
func freshDst(b *testing.B) *os.File {
	b.StopTimer()
	path := filepath.Join(benchFiles.dir, "dst")
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		b.Fatal(err)
	}
	b.StartTimer()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	return f
}

// BenchmarkPlainCopy is the reference: copy the raw image into a new file
// and fsync it, with nothing verified.
func BenchmarkPlainCopy(b *testing.B) {
	benchSetup(b)
	b.SetBytes(benchImageSize)
	for b.Loop() {
		src, err := os.Open(benchFiles.image)
		if err != nil {
			b.Fatal(err)
		}
		dst := freshDst(b)
		if _, err := io.Copy(dst, src); err != nil {
			b.Fatal(err)
		}
		if err := dst.Sync(); err != nil {
			b.Fatal(err)
		}
		dst.Close()
		src.Close()
	}
}

// BenchmarkPlainCopyBuffered is a second reference: the copy a
// non-verifying updater does to a block device (dd bs=1M conv=fsync),
// through a user-space buffer instead of the kernel-side copy io.Copy
// picks between two files.
func BenchmarkPlainCopyBuffered(b *testing.B) {
	benchSetup(b)
	b.SetBytes(benchImageSize)
	buf := make([]byte, 1<<20)
	for b.Loop() {
		src, err := os.Open(benchFiles.image)
		if err != nil {
			b.Fatal(err)
		}
		dst := freshDst(b)
		if _, err := io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, buf); err != nil {
			b.Fatal(err)
		}
		if err := dst.Sync(); err != nil {
			b.Fatal(err)
		}
		dst.Close()
		src.Close()
	}
}

func openBench(b *testing.B, comp string) (*Payload, *os.File) {
	f, err := os.Open(benchFiles.payloads[comp])
	if err != nil {
		b.Fatal(err)
	}
	st, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	p, err := Open(f, st.Size())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := p.VerifySignature(benchFiles.kr); err != nil {
		b.Fatal(err)
	}
	return p, f
}

// writeAndCheck is what the agent does to the partition: WriteImage,
// fsync, read back and compare.
func writeAndCheck(b *testing.B, p *Payload) {
	dst := freshDst(b)
	defer dst.Close()
	if err := p.WriteImage(context.Background(), dst, benchImageSize, nil); err != nil {
		b.Fatal(err)
	}
	if err := dst.Sync(); err != nil {
		b.Fatal(err)
	}
	if err := p.VerifyImage(context.Background(), dst, nil); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkWriteImage: Open + VerifySignature + WriteImage into a new file
// + fsync + read-back hash (VerifyImage). MB/s are of the image.
func BenchmarkWriteImage(b *testing.B) {
	benchSetup(b)
	for _, comp := range []string{CompressionNone, CompressionZstd} {
		b.Run(comp, func(b *testing.B) {
			b.SetBytes(benchImageSize)
			for b.Loop() {
				p, f := openBench(b, comp)
				writeAndCheck(b, p)
				f.Close()
			}
		})
	}
}

// BenchmarkWriteImageReadBack is what the agent does: Open +
// VerifySignature + WriteImageReadBack (write, and read back and hash each
// chunk beside the writing) + fsync.
func BenchmarkWriteImageReadBack(b *testing.B) {
	benchSetup(b)
	for _, comp := range []string{CompressionNone, CompressionZstd} {
		b.Run(comp, func(b *testing.B) {
			b.SetBytes(benchImageSize)
			for b.Loop() {
				p, f := openBench(b, comp)
				dst := freshDst(b)
				if err := p.WriteImageReadBack(context.Background(), dst, benchImageSize, nil); err != nil {
					b.Fatal(err)
				}
				if err := dst.Sync(); err != nil {
					b.Fatal(err)
				}
				dst.Close()
				f.Close()
			}
		})
	}
}

// BenchmarkWriteImageNoWriteback is BenchmarkWriteImage with the
// writeback behind the writer turned off, for comparison.
func BenchmarkWriteImageNoWriteback(b *testing.B) {
	benchSetup(b)
	defer func() { writebackEnabled = true }()
	writebackEnabled = false
	b.SetBytes(benchImageSize)
	for b.Loop() {
		p, f := openBench(b, CompressionNone)
		writeAndCheck(b, p)
		f.Close()
	}
}

// BenchmarkVerifyData: Open + VerifySignature + VerifyData alone.
func BenchmarkVerifyData(b *testing.B) {
	benchSetup(b)
	for _, comp := range []string{CompressionNone, CompressionZstd} {
		b.Run(comp, func(b *testing.B) {
			b.SetBytes(benchImageSize)
			for b.Loop() {
				p, f := openBench(b, comp)
				if err := p.VerifyData(context.Background(), nil); err != nil {
					b.Fatal(err)
				}
				f.Close()
			}
		})
	}
}

// BenchmarkInstall is the whole documented sequence: VerifySignature,
// VerifyData, WriteImage, fsync, VerifyImage.
func BenchmarkInstall(b *testing.B) {
	benchSetup(b)
	for _, comp := range []string{CompressionNone, CompressionZstd} {
		b.Run(comp, func(b *testing.B) {
			b.SetBytes(benchImageSize)
			for b.Loop() {
				p, f := openBench(b, comp)
				if err := p.VerifyData(context.Background(), nil); err != nil {
					b.Fatal(err)
				}
				writeAndCheck(b, p)
				f.Close()
			}
		})
	}
}

// BenchmarkPipelineSettings compares buffer sizes and counts for
// WriteImage of the uncompressed payload without fsync (CPU-side only).
func BenchmarkPipelineSettings(b *testing.B) {
	benchSetup(b)
	defer func(c, n int) { pipeChunk, pipeBuffers = c, n }(pipeChunk, pipeBuffers)
	for _, s := range []struct{ chunk, n int }{{256 << 10, 8}, {1 << 20, 4}, {1 << 20, 8}, {4 << 20, 4}} {
		for _, comp := range []string{CompressionNone, CompressionZstd} {
			b.Run(fmt.Sprintf("%s/chunk=%dKiB/buffers=%d", comp, s.chunk>>10, s.n), func(b *testing.B) {
				pipeChunk, pipeBuffers = s.chunk, s.n
				b.SetBytes(benchImageSize)
				for b.Loop() {
					p, f := openBench(b, comp)
					dst := freshDst(b)
					if err := p.WriteImage(context.Background(), dst, benchImageSize, nil); err != nil {
						b.Fatal(err)
					}
					dst.Close()
					f.Close()
				}
			})
		}
	}
}
