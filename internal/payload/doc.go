// Package payload reads, writes, signs and verifies flotilla's signed update
// payload: one /usr partition image, optionally compressed, behind a small
// signed JSON header.
//
// The format differs from update_engine's CrAU payload on purpose. CrAU
// authenticates its manifest only after the whole file has been processed,
// so unauthenticated bytes reach the inactive partition first. Here the
// header, which commits to the size and SHA-256 of both the stored data
// and the decompressed image, is signed on its own and can be checked
// before a single data byte is used.
//
// # File format, version 1
//
// All integers are big-endian.
//
//	offset    size      field
//	0         8         magic "FLTPAYLD"
//	8         4         format version, uint32 = 1 (anything else: ErrUnsupportedVersion)
//	12        4         header length H, uint32, 1..65536
//	16        H         header: one JSON object (see Header); these exact bytes are signed
//	16+H      4         signature block length S, uint32, 0..16384
//	20+H      S         signature block (JSON, see below); S = 0 means unsigned
//	20+H+S    data_size data: the image, compressed as the header says, then end of file
//
// The header is decoded strictly: it must be valid UTF-8 holding exactly one
// JSON object; every key must be one of the fields below, spelled exactly
// (case-sensitive), at most once; required fields must be present. So a
// signed header means exactly one thing to every reader.
//
//	format        1
//	version       OS version, required, 1..64 printable ASCII characters, no spaces
//	board         optional, e.g. "amd64-usr", same character rules
//	created       RFC 3339 time in UTC ("Z" suffix)
//	compression   "none", "gzip" or "zstd"
//	image_size    bytes of the decompressed image, > 0
//	image_sha256  SHA-256 of the decompressed image, 64 lower-case hex digits
//	data_size     bytes of the stored data, > 0; must equal file size - (20+H+S)
//	data_sha256   SHA-256 of the stored data, 64 lower-case hex digits
//
// With compression "none" the data is the image, so data_size must equal
// image_size and data_sha256 must equal image_sha256.
//
// The signature block is not signed itself; it carries the signatures:
//
//	{"signatures":[{"key_id":"<16 hex>","algorithm":"ed25519","signature":"<base64>"}]}
//
// An ed25519 signature covers "flotilla-payload-v1\x00" followed by the
// header bytes (the prefix separates this use of the key from any other).
// A key's ID is the first 8 bytes, in lower-case hex, of the SHA-256 of its
// PKIX (DER) encoding. A payload may carry several signatures, so a release
// can be signed by the old and the new key during a key rotation. It
// verifies when at least one ed25519 signature by a key in the keyring is
// valid; signatures by unknown keys or with other algorithms are ignored.
//
// # Installing
//
// The intended order on a machine that downloaded a payload is:
//
//  1. Open: parse and bounds-check the framing and header (no data read).
//  2. VerifySignature against the trusted keyring: fails closed when the
//     keyring is empty, the payload is unsigned, or nothing verifies.
//  3. VerifyData: one pass over the data, checking data and image hashes.
//  4. WriteImage to the inactive partition; it refuses images larger than
//     the partition before writing anything and re-checks the image hash.
//  5. Flush the partition, then read it back and compare (VerifyImage).
//
// Only after all of that may the boot configuration change. WriteImage does
// not depend on VerifySignature having been called, but the caller must not
// skip it: an unauthenticated header is worth nothing.
package payload
