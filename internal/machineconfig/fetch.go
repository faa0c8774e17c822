package machineconfig

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strings"
)

// maxFetch bounds one remote file; configs carry configuration, not disk
// images.
const maxFetch = 1 << 30

// ErrHashMismatch is returned when fetched or inline data does not match
// its verification hash.
var ErrHashMismatch = errors.New("hash mismatch")

// parseHash splits "sha512-<hex>" into the hash constructor and the digest.
func parseHash(s string) (func() hash.Hash, []byte, error) {
	algo, sum, ok := strings.Cut(s, "-")
	var newHash func() hash.Hash
	var size int
	switch algo {
	case "sha512":
		newHash, size = sha512.New, sha512.Size
	case "sha256":
		newHash, size = sha256.New, sha256.Size
	default:
		return nil, nil, fmt.Errorf("verification hash %q: want sha512-<hex> or sha256-<hex>", s)
	}
	digest, err := hex.DecodeString(sum)
	if !ok || err != nil || len(digest) != size {
		return nil, nil, fmt.Errorf("verification hash %q: digest must be %d hex digits", s, 2*size)
	}
	return newHash, digest, nil
}

func verifyHash(want string, data []byte) error {
	newHash, digest, err := parseHash(want)
	if err != nil {
		return err
	}
	h := newHash()
	h.Write(data)
	got := h.Sum(nil)
	if subtle.ConstantTimeCompare(got, digest) != 1 {
		algo, _, _ := strings.Cut(want, "-")
		return fmt.Errorf("%w: data has %s-%s, the config expects %s", ErrHashMismatch, algo, hex.EncodeToString(got), want)
	}
	return nil
}

// fetchContent returns the bytes of c: inline data as is, remote data
// fetched, decompressed and verified.
func fetchContent(ctx context.Context, client *http.Client, c Content) ([]byte, error) {
	if !c.IsRemote() {
		return c.Inline, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Source, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", c.Source, err)
	}
	for _, h := range c.Headers {
		req.Header.Set(h.Name, h.Value)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", c.Source, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch %s: HTTP %s", c.Source, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxFetch+1))
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", c.Source, err)
	}
	if len(data) > maxFetch {
		return nil, fmt.Errorf("fetch %s: larger than %d bytes", c.Source, maxFetch)
	}
	if c.Compression == "gzip" {
		if data, err = gunzip(data); err != nil {
			return nil, fmt.Errorf("fetch %s: compression is gzip but the data does not decompress: %w", c.Source, err)
		}
	}
	if c.Hash != "" {
		if err := verifyHash(c.Hash, data); err != nil {
			return nil, fmt.Errorf("fetch %s: %w", c.Source, err)
		}
	}
	return data, nil
}

// fetchAll resolves every remote content of the files into inline data,
// returning a copy of files. Nothing is written; a single failure fails the
// whole apply before its first write.
func fetchAll(ctx context.Context, client *http.Client, files []File) ([]File, error) {
	out := make([]File, len(files))
	for i, f := range files {
		if f.Contents != nil && f.Contents.IsRemote() {
			data, err := fetchContent(ctx, client, *f.Contents)
			if err != nil {
				return nil, fmt.Errorf("file %s: %w", f.Path, err)
			}
			f.Contents = &Content{Inline: data}
		}
		if len(f.Append) > 0 {
			app := make([]Content, len(f.Append))
			for j, a := range f.Append {
				data, err := fetchContent(ctx, client, a)
				if err != nil {
					return nil, fmt.Errorf("file %s: append %d: %w", f.Path, j, err)
				}
				app[j] = Content{Inline: data}
			}
			f.Append = app
		}
		out[i] = f
	}
	return out, nil
}
