package payload

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// RFC 8032 section 7.1, test 1, as PEM written by OpenSSL
// (openssl pkey -inform DER [-pubout]).
const (
	rfc8032Public = `-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=
-----END PUBLIC KEY-----
`
	rfc8032Private = `-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g
-----END PRIVATE KEY-----
`
	rfc8032PublicHex = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
	// First 8 bytes of SHA-256 over 302a300506032b6570032100 || public key.
	rfc8032KeyID = "06e3fd8fda29bb60"
)

func TestKnownKey(t *testing.T) {
	keys, err := ParsePublicKeys([]byte(rfc8032Public))
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(keys[0]); got != rfc8032PublicHex {
		t.Fatalf("public key %s, want %s", got, rfc8032PublicHex)
	}
	if got := KeyID(keys[0]); got != rfc8032KeyID {
		t.Errorf("KeyID = %s, want %s", got, rfc8032KeyID)
	}
	priv, err := ParsePrivateKey([]byte(rfc8032Private))
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(priv[32:]); got != rfc8032PublicHex {
		t.Errorf("private key's public half %s, want %s", got, rfc8032PublicHex)
	}
	// Our encoding is byte-identical to OpenSSL's.
	pubPEM, err := EncodePublicKey(keys[0])
	if err != nil || string(pubPEM) != rfc8032Public {
		t.Errorf("EncodePublicKey = %q, %v; want %q", pubPEM, err, rfc8032Public)
	}
	privPEM, err := EncodePrivateKey(priv)
	if err != nil || string(privPEM) != rfc8032Private {
		t.Errorf("EncodePrivateKey = %q, %v; want %q", privPEM, err, rfc8032Private)
	}
}

func TestKeyPEMRoundTrip(t *testing.T) {
	pub, priv := newKey(t)
	pubPEM, err := EncodePublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	privPEM, err := EncodePrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := ParsePublicKeys(pubPEM)
	if err != nil || len(keys) != 1 || !keys[0].Equal(pub) {
		t.Fatalf("ParsePublicKeys = %v, %v", keys, err)
	}
	priv2, err := ParsePrivateKey(privPEM)
	if err != nil || !priv2.Equal(priv) {
		t.Fatalf("ParsePrivateKey = %v", err)
	}
	id := KeyID(pub)
	if len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Errorf("KeyID = %q, want 16 lower-case hex digits", id)
	}
	if KeyID(pub[:31]) != "" {
		t.Error("KeyID of a short key is not empty")
	}
	// Wrong block types and key types.
	if _, err := ParsePublicKeys(privPEM); err == nil {
		t.Error("ParsePublicKeys accepted a private key")
	}
	if _, err := ParsePrivateKey(pubPEM); err == nil {
		t.Error("ParsePrivateKey accepted a public key")
	}
	if _, err := ParsePublicKeys([]byte("hello")); err == nil {
		t.Error("ParsePublicKeys accepted text without PEM")
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	if _, err := ParsePublicKeys(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})); err == nil {
		t.Error("ParsePublicKeys accepted an ECDSA key")
	}
	der, _ = x509.MarshalPKCS8PrivateKey(ec)
	if _, err := ParsePrivateKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err == nil {
		t.Error("ParsePrivateKey accepted an ECDSA key")
	}
}

func writePEM(t *testing.T, path string, blocks ...[]byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	var b []byte
	for _, blk := range blocks {
		b = append(b, blk...)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func pubPEM(t *testing.T) ([]byte, string) {
	t.Helper()
	pub, _ := newKey(t)
	b, err := EncodePublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return b, KeyID(pub)
}

func TestLoadKeyring(t *testing.T) {
	root := t.TempDir()
	etc := filepath.Join(root, "etc")
	usr := filepath.Join(root, "usr", "keys.pem")
	a, idA := pubPEM(t)
	b, idB := pubPEM(t)
	c, idC := pubPEM(t)
	d, idD := pubPEM(t)
	e, _ := pubPEM(t)
	writePEM(t, filepath.Join(etc, "a.pem"), a)
	writePEM(t, filepath.Join(etc, "b.pub"), []byte("comment before the key\n"), b)
	writePEM(t, filepath.Join(etc, "README.txt"), []byte("not a key, not read\n"))
	writePEM(t, filepath.Join(etc, "sub", "e.pem"), e) // not recursive
	writePEM(t, usr, c, d)                             // a file with two keys

	kr, err := LoadKeyring(filepath.Join(root, "missing"), etc, usr, filepath.Join(root, "missing.pem"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{idA, idB, idC, idD}
	slices.Sort(want)
	if diff := cmp.Diff(want, kr.IDs()); diff != "" {
		t.Errorf("IDs (-want +got):\n%s", diff)
	}
	if kr.Len() != 4 {
		t.Errorf("Len = %d, want 4", kr.Len())
	}

	// Nothing there: an empty keyring, not an error.
	kr, err = LoadKeyring(filepath.Join(root, "nope"), filepath.Join(root, "nope.d"))
	if err != nil || kr.Len() != 0 {
		t.Errorf("LoadKeyring of missing paths = %d keys, %v; want 0, nil", kr.Len(), err)
	}
	kr, err = LoadKeyring()
	if err != nil || kr.Len() != 0 {
		t.Errorf("LoadKeyring() = %d keys, %v", kr.Len(), err)
	}

	// A file that exists but is not a public key is an error.
	_, priv := newKey(t)
	privPEM, _ := EncodePrivateKey(priv)
	for name, content := range map[string][]byte{
		"private.pem": privPEM,
		"garbage.pub": []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA user@host\n"),
		"empty.pem":   nil,
		"mixed.pem":   append(append([]byte{}, a...), privPEM...),
	} {
		dir := filepath.Join(root, "bad-"+name)
		writePEM(t, filepath.Join(dir, name), content)
		if _, err := LoadKeyring(dir); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("directory with %s: LoadKeyring = %v, want an error naming the file", name, err)
		}
		if _, err := LoadKeyring(filepath.Join(dir, name)); err == nil {
			t.Errorf("file %s: LoadKeyring succeeded", name)
		}
	}
}

func TestKeyringZeroValues(t *testing.T) {
	var nilKR *Keyring
	if nilKR.Len() != 0 || nilKR.IDs() != nil {
		t.Error("nil keyring is not empty")
	}
	if _, err := NewKeyring(make([]byte, 31)); err == nil {
		t.Error("NewKeyring accepted a 31-byte key")
	}
	var kr Keyring
	pub, _ := newKey(t)
	if err := kr.Add(pub); err != nil || kr.Len() != 1 {
		t.Errorf("Add to zero Keyring: %v, Len %d", err, kr.Len())
	}
}
