package payload

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// fuzzSeeds returns small valid payloads, one per compression, signed by
// priv.
func fuzzSeeds(tb testing.TB, priv ed25519.PrivateKey) [][]byte {
	img := bytes.Repeat([]byte("flotilla /usr image "), 50)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(img)
	zw.Close()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		tb.Fatal(err)
	}
	zs := enc.EncodeAll(img, nil)
	var seeds [][]byte
	for comp, data := range map[string][]byte{CompressionNone: img, CompressionGzip: gz.Bytes(), CompressionZstd: zs} {
		is, ds := sha256.Sum256(img), sha256.Sum256(data)
		h := Header{Format: 1, Version: "1.0.0", Board: "amd64-usr", Created: testCreated, Compression: comp,
			ImageSize: int64(len(img)), ImageSHA256: hex.EncodeToString(is[:]),
			DataSize: int64(len(data)), DataSHA256: hex.EncodeToString(ds[:])}
		hb, err := marshalHeader(&h)
		if err != nil {
			tb.Fatal(err)
		}
		seeds = append(seeds, assemble(hb, sigBlockFor(tb, hb, priv), data), assemble(hb, nil, data))
	}
	return seeds
}

// FuzzOpen feeds arbitrary bytes through Open and, when they parse, through
// every verification step. Nothing may panic, Open's errors must wrap one
// of its sentinels, and WriteImage must stay within image_size.
func FuzzOpen(f *testing.F) {
	seed := bytes.Repeat([]byte{7}, ed25519.SeedSize)
	priv := ed25519.NewKeyFromSeed(seed)
	kr, err := NewKeyring(priv.Public().(ed25519.PublicKey))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range fuzzSeeds(f, priv) {
		f.Add(s)
	}
	f.Add([]byte(Magic + "\x00\x00\x00\x01\x00\x00\x00\x02{}\x00\x00\x00\x00"))
	f.Add([]byte("CrAU\x00\x00\x00\x00\x00\x00\x00\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := openBytes(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrBadMagic) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("Open error without a sentinel: %v", err)
			}
			return
		}
		h := p.Header()
		if p.DataOffset()+h.DataSize != int64(len(b)) {
			t.Fatalf("data offset %d + data size %d != %d", p.DataOffset(), h.DataSize, len(b))
		}
		p.VerifySignature(kr)
		const max = 1 << 20
		if h.ImageSize <= max { // VerifyData is bounded by image_size only
			p.VerifyData(context.Background(), nil)
		}
		dst := &memDst{}
		err = p.WriteImage(context.Background(), dst, max, nil)
		if n := int64(len(dst.b)); n > h.ImageSize || n > max {
			t.Fatalf("wrote %d bytes, image_size %d", n, h.ImageSize)
		}
		if err == nil && h.ImageSize > max {
			t.Fatalf("WriteImage accepted image_size %d > %d", h.ImageSize, max)
		}
	})
}
