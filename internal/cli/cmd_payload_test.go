package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// runPayloadCLI runs the CLI in-process through Run.
func runPayloadCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Run(context.Background(), args, strings.NewReader(""), &stdout, &stderr, nil)
	return code, stdout.String(), stderr.String()
}

func wantCode(t *testing.T, want, code int, stdout, stderr string, args ...string) {
	t.Helper()
	if code != want {
		t.Fatalf("flotilla %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, stdout, stderr)
	}
}

// fileSum returns the size and hex SHA-256 of a file.
func fileSum(t *testing.T, path string) (int, string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return len(b), hex.EncodeToString(s[:])
}

var keyIDLine = regexp.MustCompile(`(?m)^key id: ([0-9a-f]{16})$`)

func TestPayloadCLI(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	run := func(want int, args ...string) (string, string) {
		t.Helper()
		code, out, errOut := runPayloadCLI(t, args...)
		wantCode(t, want, code, out, errOut, args...)
		return out, errOut
	}

	// Two key pairs.
	out, _ := run(0, "payload", "keygen", "--private", p("a.key"), "--public", p("a.pub"))
	m := keyIDLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("keygen output has no key id line:\n%s", out)
	}
	idA := m[1]
	st, err := os.Stat(p("a.key"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v, want 0600", st.Mode().Perm())
	}
	keyBefore, _ := os.ReadFile(p("a.key"))
	_, errOut := run(1, "payload", "keygen", "--private", p("a.key"), "--public", p("other.pub"))
	if !strings.Contains(errOut, "already exists") {
		t.Errorf("keygen over an existing key: %s", errOut)
	}
	if keyAfter, _ := os.ReadFile(p("a.key")); !bytes.Equal(keyBefore, keyAfter) {
		t.Error("keygen overwrote an existing private key")
	}
	if _, err := os.Stat(p("other.pub")); !errors.Is(err, os.ErrNotExist) {
		t.Error("failed keygen left a public key behind")
	}
	run(0, "payload", "keygen", "--private", p("b.key"), "--public", p("b.pub"))
	run(2, "payload", "keygen", "--private", p("c.key"))

	// An image: random and text-like parts.
	rng := rand.New(rand.NewPCG(1, 2))
	img := make([]byte, 3<<20)
	for i := range img[:1<<20] {
		img[i] = byte(rng.Uint32())
	}
	copy(img[1<<20:], bytes.Repeat([]byte("ExecStart=/usr/bin/containerd\n"), (2<<20)/30))
	if err := os.WriteFile(p("usr.img"), img, 0o644); err != nil {
		t.Fatal(err)
	}

	run(2, "payload", "build", "--image", p("usr.img"), "--version", "1.2.3", "--out", p("x.flp"), "--compression", "lz4")
	run(2, "payload", "build", "--image", p("usr.img"), "--out", p("x.flp"))
	out, _ = run(0, "payload", "build", "--image", p("usr.img"), "--version", "4081.2.0", "--board", "amd64-usr", "--out", p("rel.flp"))
	size, sum := fileSum(t, p("rel.flp"))
	for _, want := range []string{fmt.Sprintf("\nsize: %d\n", size), "\nsha256: " + sum + "\n", "4081.2.0", "amd64-usr", "zstd", "unsigned"} {
		if !strings.Contains(out, want) {
			t.Errorf("build output lacks %q:\n%s", want, out)
		}
	}

	// Unsigned: refused.
	_, errOut = run(1, "payload", "verify", "--keys", p("a.pub"), p("rel.flp"))
	if !strings.Contains(errOut, "not signed") {
		t.Errorf("verify of an unsigned payload: %s", errOut)
	}

	out, _ = run(0, "payload", "sign", "--key", p("a.key"), p("rel.flp"))
	size, sum = fileSum(t, p("rel.flp"))
	for _, want := range []string{idA, fmt.Sprintf("\nsize: %d\n", size), "\nsha256: " + sum + "\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("sign output lacks %q:\n%s", want, out)
		}
	}

	out, _ = run(0, "payload", "verify", "--keys", p("a.pub"), p("rel.flp"))
	if !strings.Contains(out, "verified") || !strings.Contains(out, idA) || !strings.Contains(out, "4081.2.0") {
		t.Errorf("verify output:\n%s", out)
	}
	// A directory keyring with a missing path next to it.
	if err := os.MkdirAll(p("keys.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	pubA, _ := os.ReadFile(p("a.pub"))
	os.WriteFile(p("keys.d/a.pem"), pubA, 0o644)
	out, _ = run(0, "-o", "json", "payload", "verify", "--keys", p("missing"), "--keys", p("keys.d"), p("rel.flp"))
	var v struct {
		Verified bool   `json:"verified"`
		KeyID    string `json:"key_id"`
		Size     int    `json:"size"`
		Header   struct {
			Version   string `json:"version"`
			ImageSize int    `json:"image_size"`
		} `json:"header"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("verify -o json: %v\n%s", err, out)
	}
	if !v.Verified || v.KeyID != idA || v.Size != size || v.Header.Version != "4081.2.0" || v.Header.ImageSize != len(img) {
		t.Errorf("verify -o json = %+v", v)
	}

	// Another key: exit 1 with the sentinel's message.
	_, errOut = run(1, "payload", "verify", "--keys", p("b.pub"), p("rel.flp"))
	if !strings.Contains(errOut, "no valid signature by a trusted key") || !strings.Contains(errOut, idA) {
		t.Errorf("verify with another key: %s", errOut)
	}
	// No key at all: fail closed.
	_, errOut = run(1, "payload", "verify", "--keys", p("nothing-here"), p("rel.flp"))
	if !strings.Contains(errOut, "no trusted payload keys") {
		t.Errorf("verify without keys: %s", errOut)
	}
	run(2, "payload", "verify", p("rel.flp"))

	out, _ = run(0, "payload", "show", p("rel.flp"))
	if !strings.Contains(out, "NOT VERIFIED") || !strings.Contains(out, idA) {
		t.Errorf("show output:\n%s", out)
	}
	out, _ = run(0, "payload", "show", "-o", "json", p("rel.flp"))
	if !strings.Contains(out, `"verified": false`) {
		t.Errorf("show -o json:\n%s", out)
	}

	// Key rotation: sign with B into a new file; A and B both verify it.
	run(0, "payload", "sign", "--key", p("b.key"), "--out", p("rel2.flp"), p("rel.flp"))
	run(0, "payload", "verify", "--keys", p("a.pub"), p("rel2.flp"))
	run(0, "payload", "verify", "--keys", p("b.pub"), p("rel2.flp"))

	// A flipped data byte.
	b, _ := os.ReadFile(p("rel.flp"))
	b[len(b)-100] ^= 1
	os.WriteFile(p("bad.flp"), b, 0o644)
	_, errOut = run(1, "payload", "verify", "--keys", p("a.pub"), p("bad.flp"))
	if !strings.Contains(errOut, "does not match") {
		t.Errorf("verify of corrupted data: %s", errOut)
	}
	_, errOut = run(1, "payload", "show", p("usr.img"))
	if !strings.Contains(errOut, "not a flotilla payload") {
		t.Errorf("show of a non-payload: %s", errOut)
	}
}
