package payload

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// PEM block types of encoded keys.
const (
	pemPublicKey  = "PUBLIC KEY"  // PKIX
	pemPrivateKey = "PRIVATE KEY" // PKCS #8
)

// GenerateKey returns a new ed25519 signing key pair.
func GenerateKey() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("payload: generate key: %w", err)
	}
	return pub, priv, nil
}

// KeyID returns the ID of pub: the first 8 bytes, as 16 lower-case hex
// digits, of the SHA-256 of its PKIX DER encoding. It returns "" for a
// public key of the wrong length.
func KeyID(pub ed25519.PublicKey) string {
	if len(pub) != ed25519.PublicKeySize {
		return ""
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:8])
}

// EncodePublicKey returns pub as a "PUBLIC KEY" (PKIX) PEM block.
func EncodePublicKey(pub ed25519.PublicKey) ([]byte, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("payload: public key has %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("payload: encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPublicKey, Bytes: der}), nil
}

// EncodePrivateKey returns priv as a "PRIVATE KEY" (PKCS #8) PEM block.
func EncodePrivateKey(priv ed25519.PrivateKey) ([]byte, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("payload: private key has %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("payload: encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// ParsePublicKeys decodes every PEM block in b; each must be an ed25519
// "PUBLIC KEY". Text around the blocks is ignored; no block at all is an
// error.
func ParsePublicKeys(b []byte) ([]ed25519.PublicKey, error) {
	keys, err := parsePublicKeys(b)
	if err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	return keys, nil
}

func parsePublicKeys(b []byte) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != pemPublicKey {
			return nil, fmt.Errorf("PEM block %q, want %q", blk.Type, pemPublicKey)
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse public key: %w", err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("public key is %T, want ed25519", k)
		}
		keys = append(keys, pub)
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM public key found")
	}
	return keys, nil
}

// ParsePrivateKey decodes a "PRIVATE KEY" (PKCS #8) PEM block holding an
// ed25519 key.
func ParsePrivateKey(b []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("payload: no PEM private key found")
	}
	if blk.Type != pemPrivateKey {
		return nil, fmt.Errorf("payload: PEM block %q, want %q", blk.Type, pemPrivateKey)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("payload: parse private key: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("payload: private key is %T, want ed25519", k)
	}
	return priv, nil
}

// Keyring is a set of trusted public keys by key ID. The zero value and a
// nil *Keyring are empty, and an empty keyring verifies nothing.
type Keyring struct {
	keys map[string]ed25519.PublicKey
}

// NewKeyring returns a keyring holding keys.
func NewKeyring(keys ...ed25519.PublicKey) (*Keyring, error) {
	kr := &Keyring{}
	for _, k := range keys {
		if err := kr.Add(k); err != nil {
			return nil, err
		}
	}
	return kr, nil
}

// Add adds pub to the keyring.
func (kr *Keyring) Add(pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("payload: public key has %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	if kr.keys == nil {
		kr.keys = make(map[string]ed25519.PublicKey)
	}
	kr.keys[KeyID(pub)] = slices.Clone(pub)
	return nil
}

// LoadKeyring reads trusted public keys. Each path is a PEM file or a
// directory whose *.pem and *.pub files (not subdirectories) are read.
// Paths that do not exist are skipped, so a machine can list both a
// built-in and an administrator location. A file that exists but does not
// hold only ed25519 public keys is an error. The result may be empty;
// verifying against an empty keyring fails (ErrNoTrustedKeys).
func LoadKeyring(paths ...string) (*Keyring, error) {
	kr := &Keyring{}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("payload: keyring: %w", err)
		}
		files := []string{p}
		if fi.IsDir() {
			ents, err := os.ReadDir(p)
			if err != nil {
				return nil, fmt.Errorf("payload: keyring: %w", err)
			}
			files = files[:0]
			for _, e := range ents {
				name := e.Name()
				if !strings.HasSuffix(name, ".pem") && !strings.HasSuffix(name, ".pub") {
					continue
				}
				full := filepath.Join(p, name)
				if st, err := os.Stat(full); err == nil && st.IsDir() {
					continue
				}
				files = append(files, full)
			}
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("payload: keyring: %w", err)
			}
			keys, err := parsePublicKeys(b)
			if err != nil {
				return nil, fmt.Errorf("payload: keyring file %s: %w", f, err)
			}
			for _, k := range keys {
				if err := kr.Add(k); err != nil {
					return nil, err
				}
			}
		}
	}
	return kr, nil
}

// Len returns the number of keys.
func (kr *Keyring) Len() int {
	if kr == nil {
		return 0
	}
	return len(kr.keys)
}

// IDs returns the key IDs, sorted.
func (kr *Keyring) IDs() []string {
	if kr == nil {
		return nil
	}
	ids := make([]string, 0, len(kr.keys))
	for id := range kr.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (kr *Keyring) lookup(id string) (ed25519.PublicKey, bool) {
	if kr == nil {
		return nil, false
	}
	k, ok := kr.keys[id]
	return k, ok
}
