package payload

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// testImageSize is not a multiple of the pipeline chunk, so the last chunk
// is partial.
const testImageSize = 3<<20 + 12345

var compressions = []string{CompressionNone, CompressionGzip, CompressionZstd}

func TestRoundTrip(t *testing.T) {
	for _, comp := range compressions {
		t.Run(comp, func(t *testing.T) {
			dir := t.TempDir()
			path, img, h := buildTest(t, dir, comp, testImageSize)
			imgSum := sha256.Sum256(img)
			want := Header{
				Format: 1, Version: "4081.2.0", Board: "amd64-usr", Created: testCreated, Compression: comp,
				ImageSize: int64(len(img)), ImageSHA256: hex.EncodeToString(imgSum[:]),
				DataSize: h.DataSize, DataSHA256: h.DataSHA256,
			}
			if diff := cmp.Diff(want, *h); diff != "" {
				t.Fatalf("Build header (-want +got):\n%s", diff)
			}
			if comp != CompressionNone && h.DataSize >= h.ImageSize {
				t.Errorf("%s data of %d bytes is not smaller than the %d byte image", comp, h.DataSize, h.ImageSize)
			}

			pub, priv := newKey(t)
			if err := Sign(context.Background(), path, priv); err != nil {
				t.Fatalf("Sign: %v", err)
			}
			noTempFiles(t, dir)
			raw := readFile(t, path)
			p := mustOpenBytes(t, raw)
			if diff := cmp.Diff(*h, p.Header()); diff != "" {
				t.Fatalf("Open header (-build +open):\n%s", diff)
			}
			if got, want := p.DataOffset()+h.DataSize, int64(len(raw)); got != want {
				t.Errorf("data offset %d + data size %d != file size %d", p.DataOffset(), h.DataSize, want)
			}
			dataSum := sha256.Sum256(raw[p.DataOffset():])
			if got := hex.EncodeToString(dataSum[:]); got != h.DataSHA256 {
				t.Errorf("data_sha256 %s, actual %s", h.DataSHA256, got)
			}
			id, err := p.VerifySignature(keyring(t, pub))
			if err != nil || id != KeyID(pub) {
				t.Fatalf("VerifySignature = %q, %v; want %q", id, err, KeyID(pub))
			}
			var last [2]int64
			if err := p.VerifyData(context.Background(), func(d, tot int64) { last = [2]int64{d, tot} }); err != nil {
				t.Fatalf("VerifyData: %v", err)
			}
			if last != [2]int64{h.DataSize, h.DataSize} {
				t.Errorf("last VerifyData progress %v, want done = total = %d", last, h.DataSize)
			}
			dst := &memDst{}
			last = [2]int64{}
			if err := p.WriteImage(context.Background(), dst, h.ImageSize, func(d, tot int64) { last = [2]int64{d, tot} }); err != nil {
				t.Fatalf("WriteImage: %v", err)
			}
			if !bytes.Equal(dst.bytes(), img) {
				t.Fatalf("written image differs from the input image")
			}
			if last != [2]int64{h.ImageSize, h.ImageSize} {
				t.Errorf("last WriteImage progress %v, want done = total = %d", last, h.ImageSize)
			}
			if err := p.VerifyImage(context.Background(), bytes.NewReader(dst.bytes()), nil); err != nil {
				t.Errorf("VerifyImage: %v", err)
			}
			sum, err := HashImage(context.Background(), bytes.NewReader(img), int64(len(img)), nil)
			if err != nil || sum != h.ImageSHA256 {
				t.Errorf("HashImage = %s, %v; want %s", sum, err, h.ImageSHA256)
			}
		})
	}
}

// signedBytes builds and signs a payload and returns its bytes and key.
func signedBytes(t *testing.T, comp string) ([]byte, *Keyring) {
	t.Helper()
	dir := t.TempDir()
	path, _, _ := buildTest(t, dir, comp, testImageSize)
	pub, priv := newKey(t)
	if err := Sign(context.Background(), path, priv); err != nil {
		t.Fatal(err)
	}
	return readFile(t, path), keyring(t, pub)
}

func TestTamperHeader(t *testing.T) {
	raw, kr := signedBytes(t, CompressionZstd)
	p := mustOpenBytes(t, raw)
	hb := p.HeaderBytes()
	for _, tc := range []struct{ old, new string }{
		{`"version":"4081.2.0"`, `"version":"4081.2.1"`},
		{`"image_sha256":"` + p.Header().ImageSHA256[:1], `"image_sha256":"` + flipHex(p.Header().ImageSHA256[:1])},
		{`"board":"amd64-usr"`, `"board":"arm64-usr"`},
	} {
		i := bytes.Index(hb, []byte(tc.old))
		if i < 0 {
			t.Fatalf("%s not in header %s", tc.old, hb)
		}
		bad := bytes.Clone(raw)
		copy(bad[16+i:], tc.new)
		q, err := openBytes(bad)
		if err != nil {
			t.Fatalf("%s: Open: %v", tc.new, err)
		}
		if _, err := q.VerifySignature(kr); !errors.Is(err, ErrSignature) {
			t.Errorf("%s: VerifySignature = %v, want ErrSignature", tc.new, err)
		}
	}
	// The untouched payload verifies, so the failures above are real.
	if _, err := p.VerifySignature(kr); err != nil {
		t.Fatal(err)
	}
}

func flipHex(s string) string {
	if s == "0" {
		return "1"
	}
	return "0"
}

func TestTamperData(t *testing.T) {
	for _, comp := range compressions {
		t.Run(comp, func(t *testing.T) {
			raw, kr := signedBytes(t, comp)
			p := mustOpenBytes(t, raw)
			for _, pos := range []int64{p.DataOffset(), p.DataOffset() + p.Header().DataSize/2, int64(len(raw)) - 1} {
				bad := bytes.Clone(raw)
				bad[pos] ^= 0x40
				q := mustOpenBytes(t, bad)
				if _, err := q.VerifySignature(kr); err != nil {
					t.Fatalf("the header is intact, yet VerifySignature: %v", err)
				}
				if err := q.VerifyData(context.Background(), nil); !errors.Is(err, ErrDataMismatch) {
					t.Errorf("byte %d flipped: VerifyData = %v, want ErrDataMismatch", pos, err)
				}
				err := q.WriteImage(context.Background(), &memDst{}, q.Header().ImageSize, nil)
				if !errors.Is(err, ErrImageMismatch) && !errors.Is(err, ErrDataMismatch) {
					t.Errorf("byte %d flipped: WriteImage = %v, want ErrImageMismatch or ErrDataMismatch", pos, err)
				}
			}
		})
	}
}

func TestOpenFraming(t *testing.T) {
	raw, _ := signedBytes(t, CompressionGzip)
	p := mustOpenBytes(t, raw)
	hlen := len(p.HeaderBytes())
	sigLen := int(p.DataOffset()) - 20 - hlen

	for _, n := range []int{0, 4, 8, 12, 15, 16, 16 + hlen/2, 16 + hlen, 18 + hlen, 20 + hlen + sigLen/2, int(p.DataOffset()), len(raw) - 1} {
		if _, err := openBytes(raw[:n]); !errors.Is(err, ErrMalformed) {
			t.Errorf("truncated to %d bytes: Open = %v, want ErrMalformed", n, err)
		}
	}
	if _, err := openBytes(append(bytes.Clone(raw), 0)); !errors.Is(err, ErrMalformed) {
		t.Errorf("trailing byte: Open = %v, want ErrMalformed", err)
	}

	set32 := func(off int, v uint32) []byte {
		b := bytes.Clone(raw)
		binary.BigEndian.PutUint32(b[off:], v)
		return b
	}
	badMagic := bytes.Clone(raw)
	badMagic[0] = 'X'
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"magic", badMagic, ErrBadMagic},
		{"CrAU", append([]byte("CrAU\x00\x00\x00\x00\x00\x00\x00\x01"), raw[12:]...), ErrBadMagic},
		{"version 0", set32(8, 0), ErrUnsupportedVersion},
		{"version 2", set32(8, 2), ErrUnsupportedVersion},
		{"header length 0", set32(12, 0), ErrMalformed},
		{"header length 64 KiB + 1", set32(12, MaxHeaderSize+1), ErrMalformed},
		{"header length max", set32(12, 0xffffffff), ErrMalformed},
		{"header length off by one", set32(12, uint32(hlen+1)), ErrMalformed},
		{"signature length 16 KiB + 1", set32(16+hlen, MaxSignatureBlockSize+1), ErrMalformed},
		{"signature length max", set32(16+hlen, 0xffffffff), ErrMalformed},
		{"signature length off by one", set32(16+hlen, uint32(sigLen-1)), ErrMalformed},
	} {
		if _, err := openBytes(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: Open = %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := Open(bytes.NewReader(raw), -1); !errors.Is(err, ErrMalformed) {
		t.Errorf("negative size: Open = %v, want ErrMalformed", err)
	}
}

func TestHeaderStrict(t *testing.T) {
	data := []byte("hello, image")
	sum := sha256.Sum256(data)
	hx := hex.EncodeToString(sum[:])
	valid := fmt.Sprintf(`{"format":1,"version":"1.2.3","board":"amd64-usr","created":"2026-05-01T12:00:00Z","compression":"none","image_size":12,"image_sha256":"%s","data_size":12,"data_sha256":"%s"}`, hx, hx)
	p, err := openBytes(assemble([]byte(valid), nil, data))
	if err != nil {
		t.Fatalf("valid header rejected: %v", err)
	}
	if err := p.VerifyData(context.Background(), nil); err != nil {
		t.Fatalf("valid payload: VerifyData: %v", err)
	}
	repl := func(old, new string) string {
		if !strings.Contains(valid, old) {
			t.Fatalf("%q not in the header", old)
		}
		return strings.Replace(valid, old, new, 1)
	}
	for _, tc := range []struct {
		name, header string
		want         error
	}{
		{"unknown field", repl(`"format":1,`, `"format":1,"extra":true,`), ErrMalformed},
		{"duplicate field", repl(`"format":1,`, `"format":1,"version":"9.9.9",`), ErrMalformed},
		{"case-folded key", repl(`"version"`, `"Version"`), ErrMalformed},
		{"missing field", repl(`"board":"amd64-usr","created":"2026-05-01T12:00:00Z",`, `"board":"amd64-usr",`), ErrMalformed},
		{"format 2", repl(`"format":1`, `"format":2`), ErrUnsupportedVersion},
		{"format string", repl(`"format":1`, `"format":"1"`), ErrMalformed},
		{"null version", repl(`"version":"1.2.3"`, `"version":null`), ErrMalformed},
		{"empty version", repl(`"version":"1.2.3"`, `"version":""`), ErrMalformed},
		{"space in version", repl(`"version":"1.2.3"`, `"version":"1.2 3"`), ErrMalformed},
		{"long version", repl(`"version":"1.2.3"`, `"version":"`+strings.Repeat("1", 65)+`"`), ErrMalformed},
		{"non-ASCII version", repl(`"version":"1.2.3"`, `"version":"1.2.\u00e9"`), ErrMalformed},
		{"empty board", repl(`"board":"amd64-usr"`, `"board":""`), ErrMalformed},
		{"local time", repl(`12:00:00Z`, `14:00:00+02:00`), ErrMalformed},
		{"bad time", repl(`2026-05-01T12:00:00Z`, `yesterdayZ`), ErrMalformed},
		{"unknown compression", repl(`"compression":"none"`, `"compression":"xz"`), ErrMalformed},
		{"float size", repl(`"image_size":12`, `"image_size":12.0`), ErrMalformed},
		{"exponent size", repl(`"image_size":12`, `"image_size":1.2e1`), ErrMalformed},
		{"negative size", repl(`"data_size":12`, `"data_size":-12`), ErrMalformed},
		{"huge size", repl(`"data_size":12`, `"data_size":99999999999999999999`), ErrMalformed},
		{"upper-case hex", repl(`"image_sha256":"`+hx, `"image_sha256":"`+strings.ToUpper(hx)), ErrMalformed},
		{"short hex", repl(`"image_sha256":"`+hx, `"image_sha256":"`+hx[:62]), ErrMalformed},
		{"none with different hashes", repl(`"image_sha256":"`+hx, `"image_sha256":"`+strings.Repeat("a", 64)), ErrMalformed},
		{"trailing data", valid + `{}`, ErrMalformed},
		{"array", `[` + valid + `]`, ErrMalformed},
		{"invalid UTF-8", repl(`"board":"amd64-usr"`, "\"board\":\"amd64\xff\""), ErrMalformed},
		{"not JSON", `format=1`, ErrMalformed},
	} {
		_, err := openBytes(assemble([]byte(tc.header), nil, data))
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: Open = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestSignatureBlockStrict(t *testing.T) {
	data := []byte("hello, image")
	sum := sha256.Sum256(data)
	hx := hex.EncodeToString(sum[:])
	header := []byte(fmt.Sprintf(`{"format":1,"version":"1.2.3","created":"2026-05-01T12:00:00Z","compression":"none","image_size":12,"image_sha256":"%s","data_size":12,"data_sha256":"%s"}`, hx, hx))
	pub, priv := newKey(t)
	kr := keyring(t, pub)
	good := string(sigBlockFor(t, header, priv))
	p, err := openBytes(assemble(header, []byte(good), data))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.VerifySignature(kr); err != nil {
		t.Fatalf("valid signature block: %v", err)
	}
	sig := p.Signatures()[0]
	b64 := good[strings.Index(good, `"signature":"`)+len(`"signature":"`):]
	b64 = b64[:strings.IndexByte(b64, '"')]
	for _, tc := range []struct{ name, block string }{
		{"not JSON", `signatures`},
		{"unknown top-level field", `{"signatures":[],"x":1}`},
		{"signatures not an array", `{"signatures":{}}`},
		{"signatures null", `{"signatures":null}`},
		{"unknown entry field", strings.Replace(good, `"algorithm"`, `"comment":"hi","algorithm"`, 1)},
		{"short key id", strings.Replace(good, sig.KeyID, sig.KeyID[:15], 1)},
		{"upper-case key id", strings.Replace(good, sig.KeyID, strings.ToUpper(sig.KeyID), 1)},
		{"bad base64", strings.Replace(good, b64, "!!"+b64[2:], 1)},
		{"short ed25519 signature", strings.Replace(good, b64, b64[:40], 1)},
		{"missing signature", `{"signatures":[{"key_id":"` + sig.KeyID + `","algorithm":"ed25519"}]}`},
	} {
		if tc.name == "upper-case key id" && strings.ToUpper(sig.KeyID) == sig.KeyID {
			continue // all digits; nothing to upper-case
		}
		if _, err := openBytes(assemble(header, []byte(tc.block), data)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Open = %v, want ErrMalformed", tc.name, err)
		}
	}

	// Other algorithms parse and are ignored.
	other := `{"signatures":[{"key_id":"0123456789abcdef","algorithm":"rsa-pkcs1v15-sha256","signature":"AAAA"}]}`
	q, err := openBytes(assemble(header, []byte(other), data))
	if err != nil {
		t.Fatalf("unknown algorithm: Open: %v", err)
	}
	if _, err := q.VerifySignature(kr); !errors.Is(err, ErrSignature) {
		t.Errorf("only an unknown algorithm: VerifySignature = %v, want ErrSignature", err)
	}
	// An empty list is the same as no block.
	q, err = openBytes(assemble(header, []byte(`{"signatures":[]}`), data))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.VerifySignature(kr); !errors.Is(err, ErrUnsigned) {
		t.Errorf("empty list: VerifySignature = %v, want ErrUnsigned", err)
	}
}

func TestVerifySignatureFailsClosed(t *testing.T) {
	dir := t.TempDir()
	path, _, _ := buildTest(t, dir, CompressionNone, 1<<16)
	pubA, privA := newKey(t)
	pubB, _ := newKey(t)

	p := mustOpenBytes(t, readFile(t, path))
	if _, err := p.VerifySignature(keyring(t, pubA)); !errors.Is(err, ErrUnsigned) {
		t.Errorf("unsigned: VerifySignature = %v, want ErrUnsigned", err)
	}
	if _, err := p.VerifySignature(nil); !errors.Is(err, ErrNoTrustedKeys) {
		t.Errorf("unsigned, nil keyring: VerifySignature = %v, want ErrNoTrustedKeys", err)
	}

	if err := Sign(context.Background(), path, privA); err != nil {
		t.Fatal(err)
	}
	p = mustOpenBytes(t, readFile(t, path))
	for name, kr := range map[string]*Keyring{"nil": nil, "zero": {}, "empty": keyring(t)} {
		if _, err := p.VerifySignature(kr); !errors.Is(err, ErrNoTrustedKeys) {
			t.Errorf("%s keyring: VerifySignature = %v, want ErrNoTrustedKeys", name, err)
		}
	}
	_, err := p.VerifySignature(keyring(t, pubB))
	if !errors.Is(err, ErrSignature) {
		t.Fatalf("unknown key: VerifySignature = %v, want ErrSignature", err)
	}
	for _, id := range []string{KeyID(pubA), KeyID(pubB)} {
		if !strings.Contains(err.Error(), id) {
			t.Errorf("error %q does not name key %s", err, id)
		}
	}
	if id, err := p.VerifySignature(keyring(t, pubB, pubA)); err != nil || id != KeyID(pubA) {
		t.Errorf("keyring with A and B: VerifySignature = %q, %v; want %q", id, err, KeyID(pubA))
	}
}

func TestSignatureBinding(t *testing.T) {
	// A valid signature over another header, and one over this header
	// without the domain prefix, must not verify.
	raw1, kr := signedBytes(t, CompressionNone)
	p1 := mustOpenBytes(t, raw1)
	sig := p1.Signatures()[0]

	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	writeTestImage(t, img, 5000, 99)
	path2 := filepath.Join(dir, "p2")
	if _, err := Build(context.Background(), path2, img, BuildOptions{Version: "4081.2.0", Compression: CompressionNone, Created: testCreated}); err != nil {
		t.Fatal(err)
	}
	p2 := mustOpenBytes(t, readFile(t, path2))
	hb2 := p2.HeaderBytes()
	blk := fmt.Sprintf(`{"signatures":[{"key_id":%q,"algorithm":"ed25519","signature":"%s"}]}`,
		sig.KeyID, base64.StdEncoding.EncodeToString(sig.Signature))
	q := mustOpenBytes(t, assemble(hb2, []byte(blk), readFile(t, path2)[p2.DataOffset():]))
	if _, err := q.VerifySignature(kr); !errors.Is(err, ErrSignature) {
		t.Errorf("transplanted signature: VerifySignature = %v, want ErrSignature", err)
	}
}

func TestDomainSeparation(t *testing.T) {
	data := []byte("hello, image")
	sum := sha256.Sum256(data)
	hx := hex.EncodeToString(sum[:])
	header := []byte(fmt.Sprintf(`{"format":1,"version":"1.2.3","created":"2026-05-01T12:00:00Z","compression":"none","image_size":12,"image_sha256":"%s","data_size":12,"data_sha256":"%s"}`, hx, hx))
	pub, priv := newKey(t)
	bare := ed25519.Sign(priv, header) // no "flotilla-payload-v1\0" prefix
	blk := fmt.Sprintf(`{"signatures":[{"key_id":%q,"algorithm":"ed25519","signature":"%s"}]}`, KeyID(pub), base64.StdEncoding.EncodeToString(bare))
	p := mustOpenBytes(t, assemble(header, []byte(blk), data))
	if _, err := p.VerifySignature(keyring(t, pub)); !errors.Is(err, ErrSignature) {
		t.Errorf("signature without the context prefix: VerifySignature = %v, want ErrSignature", err)
	}
	prefixed := ed25519.Sign(priv, append([]byte("flotilla-payload-v1\x00"), header...))
	blk = fmt.Sprintf(`{"signatures":[{"key_id":%q,"algorithm":"ed25519","signature":"%s"}]}`, KeyID(pub), base64.StdEncoding.EncodeToString(prefixed))
	p = mustOpenBytes(t, assemble(header, []byte(blk), data))
	if _, err := p.VerifySignature(keyring(t, pub)); err != nil {
		t.Errorf("signature over the documented message: %v", err)
	}
}

func TestKeyRotation(t *testing.T) {
	dir := t.TempDir()
	path, _, _ := buildTest(t, dir, CompressionGzip, 1<<18)
	oldPub, oldPriv := newKey(t)
	newPub, newPriv := newKey(t)
	for _, priv := range []ed25519.PrivateKey{oldPriv, newPriv, oldPriv} { // re-signing replaces
		if err := Sign(context.Background(), path, priv); err != nil {
			t.Fatal(err)
		}
	}
	p := mustOpenBytes(t, readFile(t, path))
	var ids []string
	for _, s := range p.Signatures() {
		ids = append(ids, s.KeyID)
	}
	if diff := cmp.Diff([]string{KeyID(newPub), KeyID(oldPub)}, ids); diff != "" {
		t.Errorf("signature key ids (-want +got):\n%s", diff)
	}
	if id, err := p.VerifySignature(keyring(t, newPub)); err != nil || id != KeyID(newPub) {
		t.Errorf("new keyring: VerifySignature = %q, %v; want %q", id, err, KeyID(newPub))
	}
	if id, err := p.VerifySignature(keyring(t, oldPub)); err != nil || id != KeyID(oldPub) {
		t.Errorf("old keyring: VerifySignature = %q, %v; want %q", id, err, KeyID(oldPub))
	}
	if err := p.VerifyData(context.Background(), nil); err != nil {
		t.Errorf("after three signings: VerifyData: %v", err)
	}
}

func TestSignInvalidSignatureDoesNotShadowValid(t *testing.T) {
	// A corrupted signature by one trusted key must not hide a valid one
	// by another.
	raw, _ := signedBytes(t, CompressionNone)
	p := mustOpenBytes(t, raw)
	hb := p.HeaderBytes()
	pubA, privA := newKey(t)
	pubB, privB := newKey(t)
	blk := sigBlockFor(t, hb, privA, privB)
	var sb signatureBlock
	if err := json.Unmarshal(blk, &sb); err != nil {
		t.Fatal(err)
	}
	sb.Signatures[0].Signature[0] ^= 1
	blk, err := json.Marshal(sb)
	if err != nil {
		t.Fatal(err)
	}
	q := mustOpenBytes(t, assemble(hb, blk, raw[p.DataOffset():]))
	if id, err := q.VerifySignature(keyring(t, pubA, pubB)); err != nil || id != KeyID(pubB) {
		t.Errorf("VerifySignature = %q, %v; want %q", id, err, KeyID(pubB))
	}
	_, err = q.VerifySignature(keyring(t, pubA))
	if !errors.Is(err, ErrSignature) || !strings.Contains(err.Error(), "INVALID") {
		t.Errorf("only the corrupted key trusted: VerifySignature = %v, want ErrSignature naming it INVALID", err)
	}
}

func TestSignRefusesCorruptData(t *testing.T) {
	dir := t.TempDir()
	path, _, _ := buildTest(t, dir, CompressionZstd, 1<<18)
	raw := readFile(t, path)
	raw[len(raw)-10] ^= 1
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	_, priv := newKey(t)
	if err := Sign(context.Background(), path, priv); !errors.Is(err, ErrDataMismatch) {
		t.Fatalf("Sign = %v, want ErrDataMismatch", err)
	}
	if !bytes.Equal(readFile(t, path), raw) {
		t.Error("Sign changed the file although it failed")
	}
	noTempFiles(t, dir)
}

func TestWriteImageTooLarge(t *testing.T) {
	raw, _ := signedBytes(t, CompressionZstd)
	p := mustOpenBytes(t, raw)
	size := p.Header().ImageSize
	for _, max := range []int64{size - 1, 1, 0, -1} {
		err := p.WriteImage(context.Background(), refuseDst{t}, max, nil)
		if !errors.Is(err, ErrTooLarge) {
			t.Errorf("maxSize %d: WriteImage = %v, want ErrTooLarge", max, err)
		}
	}
	dst := &memDst{}
	if err := p.WriteImage(context.Background(), dst, size, nil); err != nil {
		t.Errorf("maxSize = image size: %v", err)
	}
}

// TestWriteImageBounded checks that compressed data decompressing to more
// or fewer bytes than image_size fails, and that nothing is written beyond
// image_size.
func TestWriteImageBounded(t *testing.T) {
	img := bytes.Repeat([]byte("0123456789abcdef"), 200<<10/16) // 200 KiB
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	zw.Write(img)
	zw.Close()
	dataSum := sha256.Sum256(zb.Bytes())
	for _, claim := range []int64{100 << 10, 300 << 10, int64(len(img))} {
		claimed := img
		if claim < int64(len(img)) {
			claimed = img[:claim]
		}
		imgSum := sha256.Sum256(claimed)
		h := Header{Format: 1, Version: "1", Created: testCreated, Compression: CompressionGzip,
			ImageSize: claim, ImageSHA256: hex.EncodeToString(imgSum[:]),
			DataSize: int64(zb.Len()), DataSHA256: hex.EncodeToString(dataSum[:])}
		hb, err := marshalHeader(&h)
		if err != nil {
			t.Fatal(err)
		}
		p := mustOpenBytes(t, assemble(hb, nil, zb.Bytes()))
		dst := &memDst{}
		err = p.WriteImage(context.Background(), dst, 1<<30, nil)
		if claim == int64(len(img)) {
			if err != nil {
				t.Errorf("honest header: WriteImage: %v", err)
			}
			continue
		}
		if !errors.Is(err, ErrImageMismatch) {
			t.Errorf("image_size %d for %d bytes: WriteImage = %v, want ErrImageMismatch", claim, len(img), err)
		}
		if n := int64(len(dst.bytes())); n > claim {
			t.Errorf("image_size %d: wrote up to offset %d", claim, n)
		}
		if err := p.VerifyData(context.Background(), nil); !errors.Is(err, ErrImageMismatch) {
			t.Errorf("image_size %d for %d bytes: VerifyData = %v, want ErrImageMismatch", claim, len(img), err)
		}
	}
}

// TestCompressedTrailingGarbage: bytes after the compressed stream are
// covered by data_sha256 here, so only the stream check can catch them.
func TestCompressedTrailingGarbage(t *testing.T) {
	for _, comp := range []string{CompressionGzip, CompressionZstd} {
		t.Run(comp, func(t *testing.T) {
			raw, _ := signedBytes(t, comp)
			p := mustOpenBytes(t, raw)
			data := append(bytes.Clone(raw[p.DataOffset():]), "garbage!"...)
			h := p.Header()
			dataSum := sha256.Sum256(data)
			h.DataSize, h.DataSHA256 = int64(len(data)), hex.EncodeToString(dataSum[:])
			hb, err := marshalHeader(&h)
			if err != nil {
				t.Fatal(err)
			}
			q := mustOpenBytes(t, assemble(hb, nil, data))
			if err := q.VerifyData(context.Background(), nil); !errors.Is(err, ErrDataMismatch) {
				t.Errorf("VerifyData = %v, want ErrDataMismatch", err)
			}
			if err := q.WriteImage(context.Background(), &memDst{}, h.ImageSize, nil); !errors.Is(err, ErrDataMismatch) {
				t.Errorf("WriteImage = %v, want ErrDataMismatch", err)
			}
		})
	}
}

func TestCancel(t *testing.T) {
	for _, comp := range compressions {
		t.Run(comp, func(t *testing.T) {
			raw, _ := signedBytes(t, comp)
			p := mustOpenBytes(t, raw)
			size := p.Header().ImageSize

			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := p.WriteImage(ctx, refuseDst{t}, size, nil); !errors.Is(err, context.Canceled) {
				t.Errorf("canceled before: WriteImage = %v, want context.Canceled", err)
			}
			if err := p.VerifyData(ctx, nil); !errors.Is(err, context.Canceled) {
				t.Errorf("canceled before: VerifyData = %v, want context.Canceled", err)
			}

			// Cancel after the first chunk.
			ctx, cancel = context.WithCancel(context.Background())
			dst := &memDst{}
			err := p.WriteImage(ctx, dst, size, func(done, total int64) { cancel() })
			if !errors.Is(err, context.Canceled) {
				t.Errorf("canceled during: WriteImage = %v, want context.Canceled", err)
			}
			if n := len(dst.bytes()); int64(n) >= size {
				t.Errorf("canceled during: all %d bytes were written", n)
			}
			ctx, cancel = context.WithCancel(context.Background())
			if err := p.VerifyData(ctx, func(done, total int64) { cancel() }); !errors.Is(err, context.Canceled) {
				t.Errorf("canceled during: VerifyData = %v, want context.Canceled", err)
			}
			ctx, cancel = context.WithCancel(context.Background())
			_, err = HashImage(ctx, bytes.NewReader(raw), int64(len(raw)), func(done, total int64) { cancel() })
			if !errors.Is(err, context.Canceled) {
				t.Errorf("canceled during: HashImage = %v, want context.Canceled", err)
			}
		})
	}
}

func TestBuildCancelAndBadOptions(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	writeTestImage(t, img, 3<<20, 1)
	out := filepath.Join(dir, "out")
	for _, comp := range compressions {
		ctx, cancel := context.WithCancel(context.Background())
		_, err := Build(ctx, out, img, BuildOptions{Version: "1.0.0", Compression: comp,
			Progress: func(done, total int64) { cancel() }})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s: canceled Build = %v, want context.Canceled", comp, err)
		}
	}
	for name, o := range map[string]BuildOptions{
		"no version":      {},
		"bad version":     {Version: "1 2"},
		"bad board":       {Version: "1", Board: "amd64\n"},
		"bad compression": {Version: "1", Compression: "lz4"},
	} {
		if _, err := Build(context.Background(), out, img, o); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Build = %v, want ErrMalformed", name, err)
		}
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(context.Background(), out, empty, BuildOptions{Version: "1"}); !errors.Is(err, ErrMalformed) {
		t.Errorf("empty image: Build = %v, want ErrMalformed", err)
	}
	if _, err := Build(context.Background(), out, filepath.Join(dir, "missing"), BuildOptions{Version: "1"}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing image: Build = %v, want ErrNotExist", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed builds left %s behind (%v)", out, err)
	}
	noTempFiles(t, dir)

	// A failed build keeps an existing output file.
	if err := os.WriteFile(out, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Build(ctx, out, img, BuildOptions{Version: "1"}); err == nil {
		t.Fatal("canceled Build succeeded")
	}
	if got := string(readFile(t, out)); got != "old" {
		t.Errorf("failed Build replaced the existing output")
	}
}

func TestVerifyImageMismatch(t *testing.T) {
	raw, _ := signedBytes(t, CompressionNone)
	p := mustOpenBytes(t, raw)
	img := bytes.Clone(raw[p.DataOffset():])
	if err := p.VerifyImage(context.Background(), bytes.NewReader(img), nil); err != nil {
		t.Fatal(err)
	}
	img[len(img)/3] ^= 1
	if err := p.VerifyImage(context.Background(), bytes.NewReader(img), nil); !errors.Is(err, ErrImageMismatch) {
		t.Errorf("VerifyImage of a changed image = %v, want ErrImageMismatch", err)
	}
	// A partition larger than the image is fine; a shorter one is not.
	big := append(bytes.Clone(raw[p.DataOffset():]), make([]byte, 4096)...)
	if err := p.VerifyImage(context.Background(), bytes.NewReader(big), nil); err != nil {
		t.Errorf("VerifyImage of a larger partition: %v", err)
	}
	if err := p.VerifyImage(context.Background(), bytes.NewReader(img[:100]), nil); err == nil {
		t.Error("VerifyImage of a short partition succeeded")
	}
}

// TestWriteImageToFile exercises the writeback behind the writer (small
// steps, so it runs many times) on a real file.
func TestWriteImageToFile(t *testing.T) {
	defer func(s, l int64) { writebackStep, writebackLag = s, l }(writebackStep, writebackLag)
	writebackStep, writebackLag = 64<<10, 256<<10
	for _, comp := range []string{CompressionNone, CompressionZstd} {
		raw, _ := signedBytes(t, comp)
		p := mustOpenBytes(t, raw)
		// The partition is larger than the image and holds old data.
		part := filepath.Join(t.TempDir(), "usr-b")
		old := bytes.Repeat([]byte{0xee}, int(p.Header().ImageSize)+1<<20)
		if err := os.WriteFile(part, old, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(part, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.WriteImage(context.Background(), f, int64(len(old)), nil); err != nil {
			t.Fatalf("%s: WriteImage: %v", comp, err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := p.VerifyImage(context.Background(), f, nil); err != nil {
			t.Errorf("%s: VerifyImage: %v", comp, err)
		}
		f.Close()
		got := readFile(t, part)
		if !bytes.Equal(got[p.Header().ImageSize:], old[p.Header().ImageSize:]) {
			t.Errorf("%s: bytes after the image were changed", comp)
		}
	}
}

// TestStreamDigest: feeding a payload in pieces of any size gives the
// data digest VerifyData checks; junk gives the same errors as Open.
func TestStreamDigest(t *testing.T) {
	for _, comp := range []string{CompressionNone, CompressionZstd} {
		path, _, _ := buildTest(t, t.TempDir(), comp, 3<<20+17)
		_, priv := newKey(t)
		if err := Sign(context.Background(), path, priv); err != nil {
			t.Fatal(err)
		}
		raw := readFile(t, path)
		p, err := Open(bytes.NewReader(raw), int64(len(raw)))
		if err != nil {
			t.Fatal(err)
		}
		for _, piece := range []int{1, 7, 4096, 1 << 20, len(raw)} {
			sd := NewStreamDigest()
			for off := 0; off < len(raw); off += piece {
				sd.Write(raw[off:min(off+piece, len(raw))])
			}
			n, sum, err := sd.Sum()
			if err != nil || n != p.Header().DataSize || sum != p.Header().DataSHA256 {
				t.Fatalf("%s in pieces of %d: %d %s %v, want %d %s", comp, piece, n, sum, err, p.Header().DataSize, p.Header().DataSHA256)
			}
		}
		flipped := bytes.Clone(raw)
		flipped[len(flipped)-1] ^= 1
		sd := NewStreamDigest()
		sd.Write(flipped)
		if _, sum, _ := sd.Sum(); sum == p.Header().DataSHA256 {
			t.Fatal("a changed data byte kept the digest")
		}
	}
	for name, junk := range map[string][]byte{
		"bad magic":    []byte("CrAU\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x10"),
		"version 2":    append([]byte(Magic), 0, 0, 0, 2, 0, 0, 0, 1),
		"header 0":     append([]byte(Magic), 0, 0, 0, 1, 0, 0, 0, 0),
		"truncated":    []byte(Magic),
		"sigs too big": append(append([]byte(Magic), 0, 0, 0, 1, 0, 0, 0, 2, '{', '}'), 0xff, 0xff, 0xff, 0xff),
	} {
		sd := NewStreamDigest()
		sd.Write(junk)
		if _, _, err := sd.Sum(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
