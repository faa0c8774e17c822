package payload

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
)

// StreamDigest computes, from the bytes of a payload file as they arrive
// (a download), the digest of its data section: what VerifyData checks
// against the signed data_sha256. A downloader that feeds it every byte in
// order can then authenticate the data with Open + VerifySignature and a
// comparison, without reading the file again — update_engine likewise
// hashes while it downloads. Write never fails; a malformed preamble is
// reported by Sum.
type StreamDigest struct {
	pre    []byte // preamble bytes so far, until dataAt is known
	dataAt int64  // offset of the data section; 0 while unknown
	n      int64  // bytes seen
	data   hash.Hash
	dataN  int64
	bad    error
}

// NewStreamDigest returns an empty digest.
func NewStreamDigest() *StreamDigest { return &StreamDigest{data: sha256.New()} }

// Write feeds the next bytes of the file.
func (s *StreamDigest) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 && s.dataAt == 0 && s.bad == nil {
		// Collect the preamble: magic, version and header length (16
		// bytes), the header, the signature length, the signatures.
		need := s.preambleNeed()
		take := min(int(need-int64(len(s.pre))), len(b))
		s.pre = append(s.pre, b[:take]...)
		b = b[take:]
		s.n += int64(take)
		if int64(len(s.pre)) == need {
			s.advance()
		}
	}
	if s.dataAt > 0 && len(b) > 0 {
		s.data.Write(b)
		s.dataN += int64(len(b))
	}
	s.n += int64(len(b))
	return n, nil
}

// preambleNeed is how many preamble bytes are needed to learn more.
func (s *StreamDigest) preambleNeed() int64 {
	if len(s.pre) < preambleSize {
		return preambleSize
	}
	hlen := int64(binary.BigEndian.Uint32(s.pre[12:16]))
	if int64(len(s.pre)) < preambleSize+hlen+4 {
		return preambleSize + hlen + 4
	}
	slen := int64(binary.BigEndian.Uint32(s.pre[preambleSize+hlen:]))
	return preambleSize + hlen + 4 + slen
}

// advance checks what the preamble bytes so far say and, once it is
// complete, starts the data section. It runs each time len(s.pre) reached
// preambleNeed.
func (s *StreamDigest) advance() {
	l := int64(len(s.pre))
	if l == preambleSize {
		switch {
		case string(s.pre[:len(Magic)]) != Magic:
			s.bad = ErrBadMagic
		case binary.BigEndian.Uint32(s.pre[8:12]) != FormatVersion:
			s.bad = ErrUnsupportedVersion
		default:
			if h := binary.BigEndian.Uint32(s.pre[12:16]); h < 1 || h > MaxHeaderSize {
				s.bad = malformed("header length %d outside 1..%d", h, MaxHeaderSize)
			}
		}
		return
	}
	hlen := int64(binary.BigEndian.Uint32(s.pre[12:16]))
	if l == preambleSize+hlen+4 {
		slen := binary.BigEndian.Uint32(s.pre[preambleSize+hlen:])
		if slen > MaxSignatureBlockSize {
			s.bad = malformed("signature block length %d above %d", slen, MaxSignatureBlockSize)
			return
		}
		if slen > 0 {
			return
		}
	}
	s.dataAt = l
	s.pre = nil
}

// Sum returns the data section's size and lower-case hex SHA-256, or the
// error that made the stream unusable (ErrBadMagic, ErrUnsupportedVersion,
// ErrMalformed), or ErrMalformed when the preamble never completed.
func (s *StreamDigest) Sum() (size int64, sha string, err error) {
	if s.bad != nil {
		return 0, "", s.bad
	}
	if s.dataAt == 0 {
		return 0, "", malformed("stream ended in the preamble after %d bytes", s.n)
	}
	return s.dataN, hex.EncodeToString(s.data.Sum(nil)), nil
}
