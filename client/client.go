package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	v1 "github.com/flotilla/flotilla/api/v1"
)

// maxErrorBody bounds how much of an error response is read.
const maxErrorBody = 1 << 20

// Client talks to one flotilla server. It is safe for concurrent use.
type Client struct {
	baseURL string
	token   string
	hc      *http.Client
}

// New returns a client for the server at baseURL (for example
// "http://127.0.0.1:8080"; a URL without a scheme gets "http://", and a
// path prefix is kept for servers behind a proxy). token is sent as a bearer
// token unless empty. A nil httpClient means http.DefaultClient.
func New(baseURL, token string, httpClient *http.Client) *Client {
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	base := strings.TrimRight(strings.TrimSpace(baseURL), "/")
	if base != "" && !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return &Client{baseURL: base, token: token, hc: httpClient}
}

// BaseURL returns the server URL the client talks to.
func (c *Client) BaseURL() string { return c.baseURL }

// APIError is a non-2xx response of the API.
type APIError struct {
	Status  int    // HTTP status code
	Kind    string // error kind (api/v1 Kind* constants); "" if the body was not an error envelope
	Message string // human-readable message from the server
}

// Error returns the server's message.
func (e *APIError) Error() string {
	if e.Message != "" {
		return e.Message
	}
	if t := http.StatusText(e.Status); t != "" {
		return fmt.Sprintf("server answered %d %s", e.Status, t)
	}
	return fmt.Sprintf("server answered status %d", e.Status)
}

// ConnError means the server could not be reached (connection refused, DNS,
// TLS, timeout before a response).
type ConnError struct {
	URL string // the server's base URL
	Err error  // the underlying error, usually a *url.Error
}

// Error names the server and suggests that it may not be running.
func (e *ConnError) Error() string {
	inner := e.Err
	var ue *url.Error
	if errors.As(inner, &ue) {
		inner = ue.Err
	}
	return fmt.Sprintf("cannot reach flotilla server at %s: %v (is 'flotilla server' running there?)", e.URL, inner)
}

// Unwrap returns the underlying error.
func (e *ConnError) Unwrap() error { return e.Err }

// Kind returns the API error kind of err ("" if err is not an *APIError).
func Kind(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Kind
	}
	return ""
}

// IsNotFound reports whether err is an API error of kind not_found.
func IsNotFound(err error) bool { return Kind(err) == v1.KindNotFound }

// IsConflict reports whether err is an API error of kind conflict (the
// object exists already or is still referenced).
func IsConflict(err error) bool { return Kind(err) == v1.KindConflict }

// IsInvalid reports whether err is an API error of kind invalid or
// bad_request: the server rejected the request as sent.
func IsInvalid(err error) bool {
	k := Kind(err)
	return k == v1.KindInvalid || k == v1.KindBadRequest
}

// IsUnauthorized reports whether err is an API error of kind unauthorized
// (missing or unknown token).
func IsUnauthorized(err error) bool { return Kind(err) == v1.KindUnauthorized }

// IsForbidden reports whether err is an API error of kind forbidden (the
// token lacks the role).
func IsForbidden(err error) bool { return Kind(err) == v1.KindForbidden }

// IsUnavailable reports whether err is an API error of kind unavailable.
func IsUnavailable(err error) bool { return Kind(err) == v1.KindUnavailable }

// apiPath joins "/api/v1" and path-escaped segments. Empty segments are an
// error: they would address a different route.
func apiPath(segs ...string) (string, error) {
	var b strings.Builder
	b.WriteString("/api/v1")
	for _, s := range segs {
		if s == "" {
			return "", errors.New("empty path parameter")
		}
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String(), nil
}

// call sends one request. in, when not nil, is sent as JSON; out, when not
// nil, receives the decoded 2xx response body.
func (c *Client) call(ctx context.Context, method string, segs []string, query url.Values, in, out any) error {
	p, err := apiPath(segs...)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, strings.Join(segs, "/"), err)
	}
	u := c.baseURL + p
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "flotilla-client")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s %s: %w", method, p, ctx.Err())
		}
		return &ConnError{URL: c.baseURL, Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return decodeError(resp)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode response of %s %s: %w", method, p, err)
	}
	return nil
}

// decodeError turns a non-2xx response into an *APIError.
func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	ae := &APIError{Status: resp.StatusCode}
	var env v1.Error
	if json.Unmarshal(b, &env) == nil && (env.Kind != "" || env.Message != "") {
		ae.Kind, ae.Message = env.Kind, env.Message
		return ae
	}
	// Not an API error envelope: a proxy, or not a flotilla server at all.
	snippet := strings.TrimSpace(string(b))
	if len(snippet) > 200 {
		snippet = snippet[:200] + "…"
	}
	ae.Message = "unexpected response " + resp.Status
	if snippet != "" {
		ae.Message += ": " + snippet
	}
	return ae
}

func (c *Client) get(ctx context.Context, segs []string, q url.Values, out any) error {
	return c.call(ctx, http.MethodGet, segs, q, nil, out)
}
