package cli

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/flotilla/flotilla/internal/payload"
)

// Commands for flotilla's signed update payloads (internal/payload,
// docs/payload.md): make a signing key, build a payload from a /usr image,
// sign it, verify it as a machine would, and show it.

// progressMin is the image size from which long operations report progress
// on stderr.
const progressMin = 64 << 20

func newPayloadCmd(g *globals) *cobra.Command {
	return parentCmd("payload", "Build, sign and verify signed /usr update payloads",
		newPayloadKeygenCmd(g), newPayloadBuildCmd(g), newPayloadSignCmd(g),
		newPayloadVerifyCmd(g), newPayloadShowCmd(g))
}

type payloadKeygenOptions struct{ private, public string }

func newPayloadKeygenCmd(g *globals) *cobra.Command {
	var o payloadKeygenOptions
	cmd := &cobra.Command{
		Use:   "keygen --private FILE --public FILE",
		Short: "Create an ed25519 payload signing key pair",
		Long: `Create an ed25519 key pair for signing payloads. The private key is written
as a PKCS #8 "PRIVATE KEY" PEM file readable only by its owner; the public key
as a PKIX "PUBLIC KEY" PEM file, which goes into the machines' keyring
(e.g. /etc/flotilla/payload-keys/). Existing files are never overwritten.
Prints the key ID that payload signatures name.`,
		Example: `  flotilla payload keygen --private release.key --public release.pub`,
		Args:    exactArgs(),
		RunE: func(_ *cobra.Command, _ []string) error {
			return runPayloadKeygen(g, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.private, "private", "", "file for the private key (required; must not exist)")
	f.StringVar(&o.public, "public", "", "file for the public key (required; must not exist)")
	return cmd
}

func runPayloadKeygen(g *globals, o payloadKeygenOptions) error {
	if err := g.checkOutput(); err != nil {
		return err
	}
	if err := requireFlags("private", o.private, "public", o.public); err != nil {
		return err
	}
	if o.private == o.public {
		return usagef("--private and --public must be different files")
	}
	for _, p := range []string{o.private, o.public} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s already exists; not overwriting a key file", p)
		}
	}
	pub, priv, err := payload.GenerateKey()
	if err != nil {
		return err
	}
	privPEM, err := payload.EncodePrivateKey(priv)
	if err != nil {
		return err
	}
	pubPEM, err := payload.EncodePublicKey(pub)
	if err != nil {
		return err
	}
	if err := writeNewFile(o.private, privPEM, 0o600); err != nil {
		return err
	}
	if err := writeNewFile(o.public, pubPEM, 0o644); err != nil {
		os.Remove(o.private)
		return err
	}
	id := payload.KeyID(pub)
	if g.jsonOutput() {
		return printJSON(g.stdout, map[string]string{"key_id": id, "private_key": o.private, "public_key": o.public})
	}
	fmt.Fprintf(g.stdout, "key id: %s\nprivate key: %s (keep it secret)\npublic key: %s (install it in the machines' keyring)\n",
		id, o.private, o.public)
	return nil
}

// writeNewFile creates path exclusively with perm and writes b to it.
func writeNewFile(path string, b []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s already exists; not overwriting a key file", path)
		}
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

type payloadBuildOptions struct {
	image, version, board, compression, out string
}

func newPayloadBuildCmd(g *globals) *cobra.Command {
	var o payloadBuildOptions
	cmd := &cobra.Command{
		Use:   "build --image IMG --version V [--board B] [--compression zstd|gzip|none] --out FILE",
		Short: "Build an unsigned payload from a /usr partition image",
		Long: `Build a payload from a /usr partition image: the image is hashed and
compressed in one pass, and the output replaces FILE only when complete.
The payload is unsigned; sign it with "flotilla payload sign", which changes
its size and SHA-256. The size and sha256 printed by "payload sign" are what
the update service announces ("flotilla package create --size --sha256").`,
		Example: `  flotilla payload build --image flatcar_production_usr.bin --version 4081.2.0 --board amd64-usr --out 4081.2.0.flp`,
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPayloadBuild(cmd.Context(), g, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.image, "image", "", "the /usr partition image (required)")
	f.StringVar(&o.version, "version", "", "OS version of the image, e.g. 4081.2.0 (required)")
	f.StringVar(&o.board, "board", "", "board, e.g. amd64-usr")
	f.StringVar(&o.compression, "compression", payload.CompressionZstd, "zstd, gzip or none")
	f.StringVar(&o.out, "out", "", "payload file to write (required)")
	return cmd
}

func runPayloadBuild(ctx context.Context, g *globals, o payloadBuildOptions) error {
	if err := g.checkOutput(); err != nil {
		return err
	}
	if err := requireFlags("image", o.image, "version", o.version, "out", o.out); err != nil {
		return err
	}
	switch o.compression {
	case payload.CompressionZstd, payload.CompressionGzip, payload.CompressionNone:
	default:
		return usagef("--compression %q: want zstd, gzip or none", o.compression)
	}
	h, err := payload.Build(ctx, o.out, o.image, payload.BuildOptions{
		Version: o.version, Board: o.board, Compression: o.compression,
		Progress: progressPrinter(g.stderr, "build"),
	})
	if err != nil {
		return err
	}
	size, sum, err := fileSHA256(ctx, o.out)
	if err != nil {
		return err
	}
	if g.jsonOutput() {
		return printJSON(g.stdout, payloadFileView{Path: o.out, Size: size, SHA256: sum,
			SHA256Base64: hexToBase64(sum), Header: h, Signed: false})
	}
	fmt.Fprintf(g.stdout, "built %s (unsigned)\n\n", o.out)
	if err := printPayloadHeader(g, h); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "\nsize: %d\nsha256: %s\n\nSigning changes size and sha256: sign it with\n  flotilla payload sign --key KEY %s\n", size, sum, o.out)
	return nil
}

type payloadSignOptions struct{ key, out string }

func newPayloadSignCmd(g *globals) *cobra.Command {
	var o payloadSignOptions
	cmd := &cobra.Command{
		Use:   "sign --key PRIVATE PAYLOAD [--out FILE]",
		Short: "Add a signature to a payload",
		Long: `Sign a payload with an ed25519 private key (from "payload keygen"). The data is
verified against the header first, so a corrupted payload is never signed.
An earlier signature by the same key is replaced; signatures by other keys
stay (for key rotation, sign with both the old and the new key). The file is
rewritten atomically. Prints the size and sha256 of the signed file: these
go into the update service's package (flotilla package create --size
--sha256).`,
		Example: `  flotilla payload sign --key release.key 4081.2.0.flp`,
		Args:    exactArgs("PAYLOAD"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPayloadSign(cmd.Context(), g, args[0], o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.key, "key", "", "private key PEM file (required)")
	f.StringVar(&o.out, "out", "", "write the signed payload here instead of in place")
	return cmd
}

func runPayloadSign(ctx context.Context, g *globals, path string, o payloadSignOptions) error {
	if err := g.checkOutput(); err != nil {
		return err
	}
	if err := requireFlags("key", o.key); err != nil {
		return err
	}
	b, err := os.ReadFile(o.key)
	if err != nil {
		return err
	}
	priv, err := payload.ParsePrivateKey(b)
	if err != nil {
		return fmt.Errorf("%s: %w", o.key, err)
	}
	out := o.out
	if out == "" {
		out = path
	}
	if err := payload.SignTo(ctx, path, out, priv); err != nil {
		return err
	}
	p, f, err := openPayloadFile(out)
	if err != nil {
		return err
	}
	defer f.Close()
	sum, err := payload.HashImage(ctx, f, p.Size(), nil)
	if err != nil {
		return err
	}
	id := payload.KeyID(priv.Public().(ed25519.PublicKey))
	if g.jsonOutput() {
		h := p.Header()
		return printJSON(g.stdout, payloadFileView{Path: out, Size: p.Size(), SHA256: sum,
			SHA256Base64: hexToBase64(sum), Header: &h, Signed: true, KeyID: id, Signatures: sigViews(p)})
	}
	fmt.Fprintf(g.stdout, "signed %s with key %s (%d signature(s))\n\nsize: %d\nsha256: %s\n",
		out, id, len(p.Signatures()), p.Size(), sum)
	return nil
}

type payloadVerifyOptions struct{ keys []string }

func newPayloadVerifyCmd(g *globals) *cobra.Command {
	var o payloadVerifyOptions
	cmd := &cobra.Command{
		Use:   "verify --keys PATH [--keys PATH...] PAYLOAD",
		Short: "Verify a payload's signature and data as a machine would",
		Long: `Verify a payload the way a machine does before installing it: the header
signature against the trusted keys, then every data byte (data and image
size and SHA-256). --keys names PEM files or directories of *.pem/*.pub
files; paths that do not exist are skipped, but with no key found at all
verification fails (a machine never installs unverifiable payloads).
Exits 1 when anything does not verify.`,
		Example: `  flotilla payload verify --keys release.pub 4081.2.0.flp
  flotilla payload verify --keys /etc/flotilla/payload-keys --keys /usr/share/flotilla/payload-keys 4081.2.0.flp`,
		Args: exactArgs("PAYLOAD"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPayloadVerify(cmd.Context(), g, args[0], o)
		},
	}
	cmd.Flags().StringArrayVar(&o.keys, "keys", nil, "trusted public key file or directory (required; repeatable)")
	return cmd
}

func runPayloadVerify(ctx context.Context, g *globals, path string, o payloadVerifyOptions) error {
	if err := g.checkOutput(); err != nil {
		return err
	}
	if len(o.keys) == 0 {
		return usagef("missing required flag --keys")
	}
	kr, err := payload.LoadKeyring(o.keys...)
	if err != nil {
		return err
	}
	p, f, err := openPayloadFile(path)
	if err != nil {
		return err
	}
	defer f.Close()
	id, err := p.VerifySignature(kr)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := p.VerifyData(ctx, progressPrinter(g.stderr, "verify")); err != nil {
		return err
	}
	h := p.Header()
	if g.jsonOutput() {
		return printJSON(g.stdout, payloadFileView{Path: path, Size: p.Size(), Header: &h,
			Signed: true, Verified: true, KeyID: id, Signatures: sigViews(p)})
	}
	fmt.Fprintf(g.stdout, "verified %s: signed by trusted key %s, data and image match the header (%s)\n\n",
		path, id, time.Since(start).Round(time.Millisecond))
	if err := printPayloadHeader(g, &h); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "\nsize: %d\n", p.Size())
	return nil
}

func newPayloadShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show PAYLOAD",
		Short: "Show a payload's header and signatures (NOT verified)",
		Long: `Show a payload's header and the key IDs of its signatures. Nothing is
verified: use "payload verify" for that.`,
		Example: `  flotilla payload show 4081.2.0.flp`,
		Args:    exactArgs("PAYLOAD"),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := g.checkOutput(); err != nil {
				return err
			}
			p, f, err := openPayloadFile(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			h := p.Header()
			if g.jsonOutput() {
				return printJSON(g.stdout, payloadFileView{Path: args[0], Size: p.Size(), Header: &h,
					Signed: len(p.Signatures()) > 0, Verified: false, Signatures: sigViews(p)})
			}
			fmt.Fprintf(g.stdout, "%s: NOT VERIFIED (this only parses the file; use \"flotilla payload verify\")\n\n", args[0])
			if err := printPayloadHeader(g, &h); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "\nsize: %d (data at offset %d)\n", p.Size(), p.DataOffset())
			sigs := p.Signatures()
			if len(sigs) == 0 {
				fmt.Fprintln(g.stdout, "signatures: none (unsigned)")
				return nil
			}
			fmt.Fprintln(g.stdout, "signatures (not checked):")
			for _, s := range sigs {
				fmt.Fprintf(g.stdout, "  key %s  %s\n", s.KeyID, s.Algorithm)
			}
			return nil
		},
	}
}

// payloadFileView is the JSON output of the payload commands.
type payloadFileView struct {
	Path         string           `json:"path"`
	Size         int64            `json:"size"`
	SHA256       string           `json:"sha256,omitempty"`
	SHA256Base64 string           `json:"sha256_base64,omitempty"`
	Header       *payload.Header  `json:"header"`
	Signed       bool             `json:"signed"`
	Verified     bool             `json:"verified"`
	KeyID        string           `json:"key_id,omitempty"`
	Signatures   []payloadSigView `json:"signatures,omitempty"`
}

type payloadSigView struct {
	KeyID     string `json:"key_id"`
	Algorithm string `json:"algorithm"`
}

func sigViews(p *payload.Payload) []payloadSigView {
	var out []payloadSigView
	for _, s := range p.Signatures() {
		out = append(out, payloadSigView{KeyID: s.KeyID, Algorithm: s.Algorithm})
	}
	return out
}

func printPayloadHeader(g *globals, h *payload.Header) error {
	f := newFields(g.stdout)
	f.add("Version", h.Version)
	f.add("Board", h.Board)
	f.add("Created", h.Created.Format(time.RFC3339))
	f.add("Compression", h.Compression)
	f.add("Image size", fmt.Sprintf("%d bytes", h.ImageSize))
	f.add("Image SHA-256", h.ImageSHA256)
	f.add("Data size", fmt.Sprintf("%d bytes", h.DataSize))
	f.add("Data SHA-256", h.DataSHA256)
	return f.flush()
}

// openPayloadFile opens and parses a payload file; the caller closes the
// file.
func openPayloadFile(path string) (*payload.Payload, *os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	p, err := payload.Open(f, st.Size())
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, f, nil
}

// fileSHA256 returns the size and hex SHA-256 of a file.
func fileSHA256(ctx context.Context, path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, "", err
	}
	sum, err := payload.HashImage(ctx, f, st.Size(), nil)
	return st.Size(), sum, err
}

func hexToBase64(h string) string {
	b, err := hex.DecodeString(h)
	if err != nil {
		return ""
	}
	return base64.StdEncoding.EncodeToString(b)
}

// progressPrinter reports every 10 % of a long operation on w; operations
// on less than progressMin bytes stay quiet.
func progressPrinter(w io.Writer, what string) func(done, total int64) {
	next := int64(10)
	return func(done, total int64) {
		if total < progressMin || total <= 0 {
			return
		}
		pct := done * 100 / total
		if pct < next {
			return
		}
		fmt.Fprintf(w, "%s: %3d%% (%d of %d MiB)\n", what, pct, done>>20, total>>20)
		next = pct/10*10 + 10
	}
}
