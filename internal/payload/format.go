package payload

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Format constants.
const (
	// Magic starts every payload file.
	Magic = "FLTPAYLD"
	// FormatVersion is the only format version this package reads and writes.
	FormatVersion = 1
	// MaxHeaderSize bounds the header length H.
	MaxHeaderSize = 64 << 10
	// MaxSignatureBlockSize bounds the signature block length S.
	MaxSignatureBlockSize = 16 << 10

	// AlgorithmEd25519 is the only signature algorithm this package checks.
	AlgorithmEd25519 = "ed25519"

	// Compression methods of the stored data.
	CompressionNone = "none"
	CompressionGzip = "gzip"
	CompressionZstd = "zstd"

	// signatureContext prefixes the header bytes in the signed message.
	signatureContext = "flotilla-payload-v1\x00"
	// preambleSize is magic + version + header length.
	preambleSize = 16
	maxNameLen   = 64
)

// Errors. Every error of this package wraps one of these (or a context or
// I/O error) and can be tested with errors.Is.
var (
	ErrBadMagic           = errors.New("not a flotilla payload (bad magic)")
	ErrUnsupportedVersion = errors.New("unsupported payload format version")
	ErrMalformed          = errors.New("malformed payload")
	ErrNoTrustedKeys      = errors.New("no trusted payload keys configured")
	ErrUnsigned           = errors.New("payload is not signed")
	ErrSignature          = errors.New("no valid signature by a trusted key")
	ErrDataMismatch       = errors.New("payload data does not match its header")
	ErrImageMismatch      = errors.New("image does not match the payload header")
	ErrTooLarge           = errors.New("image is larger than the target")
)

// Header is the signed description of a payload. Its JSON form is what is
// stored in the file and signed.
type Header struct {
	Format      int       `json:"format"`
	Version     string    `json:"version"`
	Board       string    `json:"board,omitempty"`
	Created     time.Time `json:"created"`
	Compression string    `json:"compression"`
	ImageSize   int64     `json:"image_size"`
	ImageSHA256 string    `json:"image_sha256"`
	DataSize    int64     `json:"data_size"`
	DataSHA256  string    `json:"data_sha256"`
}

// Signature is one entry of the signature block.
type Signature struct {
	KeyID     string `json:"key_id"`
	Algorithm string `json:"algorithm"`
	Signature []byte `json:"signature"` // base64 (standard, padded) in JSON
}

type signatureBlock struct {
	Signatures []Signature `json:"signatures"`
}

// Payload is an opened payload whose framing and header have been parsed
// and bounds-checked. Nothing is verified until VerifySignature and
// VerifyData are called. A Payload is safe for concurrent use if its
// io.ReaderAt is.
type Payload struct {
	r           io.ReaderAt
	size        int64
	header      Header
	headerBytes []byte
	sigs        []Signature
	dataOff     int64
}

// Open parses the payload of the given size read through r. It checks the
// magic, the format version, all lengths, the header fields and the
// signature block syntax, and that the data runs exactly to the end of the
// file. It reads only the preamble, header and signature block.
func Open(r io.ReaderAt, size int64) (*Payload, error) {
	if size < 0 {
		return nil, malformed("negative file size %d", size)
	}
	if size < int64(len(Magic)) {
		return nil, malformed("file too short (%d bytes)", size)
	}
	magic := make([]byte, len(Magic))
	if err := readFullAt(r, magic, 0); err != nil {
		return nil, fmt.Errorf("payload: read magic: %w", err)
	}
	if string(magic) != Magic {
		return nil, fmt.Errorf("payload: %w", ErrBadMagic)
	}
	if size < preambleSize {
		return nil, malformed("file truncated in preamble (%d bytes)", size)
	}
	var pre [8]byte
	if err := readFullAt(r, pre[:], int64(len(Magic))); err != nil {
		return nil, fmt.Errorf("payload: read preamble: %w", err)
	}
	if v := binary.BigEndian.Uint32(pre[0:4]); v != FormatVersion {
		return nil, fmt.Errorf("payload: format version %d: %w", v, ErrUnsupportedVersion)
	}
	hlen := int64(binary.BigEndian.Uint32(pre[4:8]))
	if hlen < 1 || hlen > MaxHeaderSize {
		return nil, malformed("header length %d outside 1..%d", hlen, MaxHeaderSize)
	}
	sigLenOff := preambleSize + hlen
	if size < sigLenOff+4 {
		return nil, malformed("file truncated in header (%d bytes, header ends at %d)", size, sigLenOff+4)
	}
	hb := make([]byte, hlen)
	if err := readFullAt(r, hb, preambleSize); err != nil {
		return nil, fmt.Errorf("payload: read header: %w", err)
	}
	var sl [4]byte
	if err := readFullAt(r, sl[:], sigLenOff); err != nil {
		return nil, fmt.Errorf("payload: read signature block length: %w", err)
	}
	slen := int64(binary.BigEndian.Uint32(sl[:]))
	if slen > MaxSignatureBlockSize {
		return nil, malformed("signature block length %d above %d", slen, MaxSignatureBlockSize)
	}
	dataOff := sigLenOff + 4 + slen
	if size < dataOff {
		return nil, malformed("file truncated in signature block (%d bytes, block ends at %d)", size, dataOff)
	}
	sb := make([]byte, slen)
	if err := readFullAt(r, sb, sigLenOff+4); err != nil {
		return nil, fmt.Errorf("payload: read signature block: %w", err)
	}

	h, err := parseHeader(hb)
	if err != nil {
		return nil, err
	}
	sigs, err := parseSignatureBlock(sb)
	if err != nil {
		return nil, err
	}
	if have := size - dataOff; have != h.DataSize {
		if have < h.DataSize {
			return nil, malformed("file truncated: %d data bytes, header says %d", have, h.DataSize)
		}
		return nil, malformed("%d trailing bytes after the data", have-h.DataSize)
	}
	return &Payload{r: r, size: size, header: h, headerBytes: hb, sigs: sigs, dataOff: dataOff}, nil
}

// Header returns the parsed (not yet authenticated) header.
func (p *Payload) Header() Header { return p.header }

// HeaderBytes returns a copy of the raw header bytes, the signed message
// without its prefix.
func (p *Payload) HeaderBytes() []byte { return bytes.Clone(p.headerBytes) }

// DataOffset returns the file offset of the first data byte.
func (p *Payload) DataOffset() int64 { return p.dataOff }

// Size returns the file size given to Open.
func (p *Payload) Size() int64 { return p.size }

// Signatures returns a copy of the signature block's entries.
func (p *Payload) Signatures() []Signature {
	out := make([]Signature, len(p.sigs))
	for i, s := range p.sigs {
		s.Signature = bytes.Clone(s.Signature)
		out[i] = s
	}
	return out
}

func malformed(format string, a ...any) error {
	return fmt.Errorf("payload: %s: %w", fmt.Sprintf(format, a...), ErrMalformed)
}

// readFullAt fills b from r at off; a short read is io.ErrUnexpectedEOF.
func readFullAt(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

var headerFields = []string{"format", "version", "board", "created", "compression",
	"image_size", "image_sha256", "data_size", "data_sha256"}

// parseHeader decodes and validates the header bytes strictly.
func parseHeader(b []byte) (Header, error) {
	var h Header
	fields, err := strictObject(b, headerFields)
	if err != nil {
		return h, malformed("header: %v", err)
	}
	for _, k := range headerFields {
		if _, ok := fields[k]; !ok && k != "board" {
			return h, malformed("header: missing field %q", k)
		}
	}
	format, err := rawInt(fields["format"])
	if err != nil {
		return h, malformed("header: format: %v", err)
	}
	if format != FormatVersion {
		return h, fmt.Errorf("payload: header format %d: %w", format, ErrUnsupportedVersion)
	}
	h.Format = FormatVersion
	strs := []struct {
		key string
		dst *string
	}{
		{"version", &h.Version}, {"compression", &h.Compression},
		{"image_sha256", &h.ImageSHA256}, {"data_sha256", &h.DataSHA256},
	}
	for _, s := range strs {
		if *s.dst, err = rawString(fields[s.key]); err != nil {
			return h, malformed("header: %s: %v", s.key, err)
		}
	}
	if raw, ok := fields["board"]; ok {
		if h.Board, err = rawString(raw); err != nil {
			return h, malformed("header: board: %v", err)
		}
		if h.Board == "" {
			return h, malformed("header: board is present but empty")
		}
	}
	created, err := rawString(fields["created"])
	if err != nil {
		return h, malformed("header: created: %v", err)
	}
	if h.Created, err = parseCreated(created); err != nil {
		return h, malformed("header: created: %v", err)
	}
	if h.ImageSize, err = rawInt(fields["image_size"]); err != nil {
		return h, malformed("header: image_size: %v", err)
	}
	if h.DataSize, err = rawInt(fields["data_size"]); err != nil {
		return h, malformed("header: data_size: %v", err)
	}
	if err := h.validate(); err != nil {
		return h, malformed("header: %v", err)
	}
	return h, nil
}

func parseCreated(s string) (time.Time, error) {
	if !strings.HasSuffix(s, "Z") {
		return time.Time{}, fmt.Errorf("%q is not a UTC time (want the Z suffix)", s)
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time", s)
	}
	return t.UTC(), nil
}

// validate checks the field values; it is used both when parsing and
// before a header is written.
func (h *Header) validate() error {
	if h.Format != FormatVersion {
		return fmt.Errorf("format %d, want %d", h.Format, FormatVersion)
	}
	if err := checkName("version", h.Version); err != nil {
		return err
	}
	if h.Board != "" {
		if err := checkName("board", h.Board); err != nil {
			return err
		}
	}
	if h.Created.IsZero() {
		return errors.New("created is not set")
	}
	switch h.Compression {
	case CompressionNone, CompressionGzip, CompressionZstd:
	default:
		return fmt.Errorf("unknown compression %q (want none, gzip or zstd)", h.Compression)
	}
	if h.ImageSize <= 0 {
		return fmt.Errorf("image_size %d must be positive", h.ImageSize)
	}
	if h.DataSize <= 0 {
		return fmt.Errorf("data_size %d must be positive", h.DataSize)
	}
	if !isSHA256Hex(h.ImageSHA256) {
		return fmt.Errorf("image_sha256 %q is not 64 lower-case hex digits", h.ImageSHA256)
	}
	if !isSHA256Hex(h.DataSHA256) {
		return fmt.Errorf("data_sha256 %q is not 64 lower-case hex digits", h.DataSHA256)
	}
	if h.Compression == CompressionNone && (h.DataSize != h.ImageSize || h.DataSHA256 != h.ImageSHA256) {
		return errors.New("compression none but data and image sizes or hashes differ")
	}
	return nil
}

// checkName accepts 1..64 printable ASCII characters without spaces.
func checkName(what, s string) error {
	if s == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if len(s) > maxNameLen {
		return fmt.Errorf("%s is longer than %d characters", what, maxNameLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("%s %q: only printable ASCII characters without spaces are allowed", what, s)
		}
	}
	return nil
}

func isSHA256Hex(s string) bool { return isLowerHex(s, 64) }

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// parseSignatureBlock decodes the signature block; an empty block means no
// signatures.
func parseSignatureBlock(b []byte) ([]Signature, error) {
	if len(b) == 0 {
		return nil, nil
	}
	top, err := strictObject(b, []string{"signatures"})
	if err != nil {
		return nil, malformed("signature block: %v", err)
	}
	raw, ok := top["signatures"]
	if !ok {
		return nil, malformed("signature block: missing field \"signatures\"")
	}
	if len(raw) == 0 || raw[0] != '[' {
		return nil, malformed("signature block: signatures is not an array")
	}
	var entries []json.RawMessage
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, malformed("signature block: %v", err)
	}
	sigs := make([]Signature, 0, len(entries))
	for i, e := range entries {
		f, err := strictObject(e, []string{"key_id", "algorithm", "signature"})
		if err != nil {
			return nil, malformed("signature %d: %v", i, err)
		}
		var s Signature
		var sig string
		for _, x := range []struct {
			key string
			dst *string
		}{{"key_id", &s.KeyID}, {"algorithm", &s.Algorithm}, {"signature", &sig}} {
			v, ok := f[x.key]
			if !ok {
				return nil, malformed("signature %d: missing field %q", i, x.key)
			}
			if *x.dst, err = rawString(v); err != nil {
				return nil, malformed("signature %d: %s: %v", i, x.key, err)
			}
		}
		if !isLowerHex(s.KeyID, 16) {
			return nil, malformed("signature %d: key_id %q is not 16 lower-case hex digits", i, s.KeyID)
		}
		if err := checkName("algorithm", s.Algorithm); err != nil {
			return nil, malformed("signature %d: %v", i, err)
		}
		if s.Signature, err = base64.StdEncoding.Strict().DecodeString(sig); err != nil {
			return nil, malformed("signature %d: signature is not base64", i)
		}
		if s.Algorithm == AlgorithmEd25519 && len(s.Signature) != 64 {
			return nil, malformed("signature %d: ed25519 signature has %d bytes, want 64", i, len(s.Signature))
		}
		sigs = append(sigs, s)
	}
	return sigs, nil
}

// strictObject decodes b as exactly one JSON object whose keys are all in
// allowed, each at most once, and returns the raw values by key. Key
// matching is exact (encoding/json alone would match case-insensitively
// and let a later duplicate win).
func strictObject(b []byte, allowed []string) (map[string]json.RawMessage, error) {
	if !utf8.Valid(b) {
		return nil, errors.New("not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("not JSON: %v", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not a JSON object")
	}
	out := make(map[string]json.RawMessage, len(allowed))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("bad JSON: %v", err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, errors.New("bad JSON: object key is not a string")
		}
		known := false
		for _, a := range allowed {
			if key == a {
				known = true
				break
			}
		}
		if !known {
			return nil, fmt.Errorf("unknown field %q", key)
		}
		if _, dup := out[key]; dup {
			return nil, fmt.Errorf("duplicate field %q", key)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("bad JSON: %v", err)
		}
		out[key] = raw
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, errors.New("bad JSON: unterminated object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON object")
	}
	return out, nil
}

// rawString decodes a JSON string (null is not a string).
func rawString(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", errors.New("not a string")
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", err
	}
	return s, nil
}

// rawInt decodes a non-negative JSON integer without fraction or exponent.
func rawInt(raw json.RawMessage) (int64, error) {
	s := string(raw)
	if s == "" || strings.ContainsAny(s, ".eE+") {
		return 0, fmt.Errorf("%.20q is not an integer", s)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%.20q is not a 64-bit integer", s)
	}
	if n < 0 {
		return 0, fmt.Errorf("%d is negative", n)
	}
	return n, nil
}

// marshalHeader returns the canonical header bytes for h (errors without
// the package prefix; callers add it).
func marshalHeader(hdr *Header) ([]byte, error) {
	h := *hdr
	h.Created = h.Created.UTC()
	if err := h.validate(); err != nil {
		return nil, fmt.Errorf("header: %v: %w", err, ErrMalformed)
	}
	b, err := json.Marshal(&h)
	if err != nil {
		return nil, fmt.Errorf("encode header: %w", err)
	}
	if len(b) > MaxHeaderSize {
		return nil, fmt.Errorf("header of %d bytes above %d: %w", len(b), MaxHeaderSize, ErrMalformed)
	}
	return b, nil
}

// preamble returns magic, version and header length followed by the
// header, the signature block length and the signature block: everything
// before the data.
func preamble(header, sigBlock []byte) []byte {
	b := make([]byte, 0, preambleSize+len(header)+4+len(sigBlock))
	b = append(b, Magic...)
	b = binary.BigEndian.AppendUint32(b, FormatVersion)
	b = binary.BigEndian.AppendUint32(b, uint32(len(header)))
	b = append(b, header...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(sigBlock)))
	return append(b, sigBlock...)
}
