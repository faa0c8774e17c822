package payload

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// writeTestImage writes size bytes of image-like content to path: a
// deterministic mix of random runs (binaries, compressed files), zero runs
// (unused file system space) and text-like runs (scripts, configuration,
// symbol tables), in segments of 4 KiB to 1 MiB.
func writeTestImage(tb testing.TB, path string, size int64, seed uint64) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if err := genImage(w, size, seed); err != nil {
		tb.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
}

var words = strings.Fields(`the of and to in is for on that with usr lib bin share
	systemd service unit target socket mount kernel module firmware config
	ExecStart ExecStop Restart=always WantedBy=multi-user.target After=network.target
	#!/bin/sh set -euo pipefail if then else fi for do done case esac echo exit return
	libc.so.6 GLIBC_2.34 _ZNSt6vector __cxa_finalize memcpy strlen malloc free
	0x0000 0xffff /etc /var /run /usr/share/doc copyright license GPL-2.0 MIT
	docker containerd runc kubelet etcd flatcar coreos update_engine`)

func genImage(w io.Writer, size int64, seed uint64) error {
	rng := rand.New(rand.NewChaCha8(seedBytes(seed)))
	seg := make([]byte, 1<<20)
	var done int64
	for done < size {
		n := 4096 + rng.IntN(len(seg)-4096)
		if rest := size - done; int64(n) > rest {
			n = int(rest)
		}
		b := seg[:n]
		switch k := rng.IntN(100); {
		case k < 35: // incompressible
			for i := 0; i+8 <= len(b); i += 8 {
				v := rng.Uint64()
				for j := range 8 {
					b[i+j] = byte(v >> (8 * j))
				}
			}
			for i := len(b) &^ 7; i < len(b); i++ {
				b[i] = byte(rng.Uint32())
			}
		case k < 55: // zeros
			clear(b)
		default: // text-like
			i := 0
			for i < len(b) {
				word := words[rng.IntN(len(words))]
				i += copy(b[i:], word)
				if i < len(b) {
					if rng.IntN(8) == 0 {
						b[i] = '\n'
					} else {
						b[i] = ' '
					}
					i++
				}
			}
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		done += int64(n)
	}
	return nil
}

func seedBytes(seed uint64) [32]byte {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return s
}

// memDst is an in-memory io.WriterAt that records how far it was written.
type memDst struct {
	mu     sync.Mutex
	b      []byte
	writes int
}

func (m *memDst) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writes++
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	copy(m.b[off:], p)
	return len(p), nil
}

func (m *memDst) bytes() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.b)
}

// refuseDst fails the test on any write.
type refuseDst struct{ tb testing.TB }

func (r refuseDst) WriteAt(p []byte, off int64) (int, error) {
	r.tb.Errorf("unexpected write of %d bytes at %d", len(p), off)
	return len(p), nil
}

func newKey(tb testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	tb.Helper()
	pub, priv, err := GenerateKey()
	if err != nil {
		tb.Fatal(err)
	}
	return pub, priv
}

func keyring(tb testing.TB, keys ...ed25519.PublicKey) *Keyring {
	tb.Helper()
	kr, err := NewKeyring(keys...)
	if err != nil {
		tb.Fatal(err)
	}
	return kr
}

var testCreated = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// buildTest builds a payload of a fresh test image in dir and returns the
// payload path, the image bytes and the header.
func buildTest(tb testing.TB, dir, compression string, size int64) (string, []byte, *Header) {
	tb.Helper()
	img := filepath.Join(dir, "usr-"+compression+".img")
	writeTestImage(tb, img, size, 7)
	out := filepath.Join(dir, "payload-"+compression)
	h, err := Build(context.Background(), out, img, BuildOptions{
		Version: "4081.2.0", Board: "amd64-usr", Compression: compression, Created: testCreated,
	})
	if err != nil {
		tb.Fatalf("Build: %v", err)
	}
	data, err := os.ReadFile(img)
	if err != nil {
		tb.Fatal(err)
	}
	return out, data, h
}

// openBytes opens an in-memory payload.
func openBytes(b []byte) (*Payload, error) { return Open(bytes.NewReader(b), int64(len(b))) }

func mustOpenBytes(tb testing.TB, b []byte) *Payload {
	tb.Helper()
	p, err := openBytes(b)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	return p
}

func readFile(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// assemble builds payload bytes from raw parts.
func assemble(header, sigBlock, data []byte) []byte {
	return append(preamble(header, sigBlock), data...)
}

// sigBlockFor signs header with each key and returns the signature block.
func sigBlockFor(tb testing.TB, header []byte, privs ...ed25519.PrivateKey) []byte {
	tb.Helper()
	var blk signatureBlock
	for _, priv := range privs {
		blk.Signatures = append(blk.Signatures, Signature{
			KeyID:     KeyID(priv.Public().(ed25519.PublicKey)),
			Algorithm: AlgorithmEd25519,
			Signature: ed25519.Sign(priv, signedMessage(header)),
		})
	}
	b, err := json.Marshal(blk)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// noTempFiles fails if dir holds files whose names start with a dot
// (Build's and Sign's temporary files).
func noTempFiles(tb testing.TB, dir string) {
	tb.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			tb.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}
