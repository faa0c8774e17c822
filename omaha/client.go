package omaha

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// ErrHTTPStatus is wrapped (through *HTTPError) by Client.Send when the
// server answers with a status other than 200 OK.
var ErrHTTPStatus = errors.New("unexpected HTTP status from Omaha server")

// HTTPError reports a non-200 answer. update_engine would report such a
// failure later as error code 2000 + StatusCode.
type HTTPError struct {
	// StatusCode is the HTTP status code, e.g. 503.
	StatusCode int
	// Status is the status line text, e.g. "503 Service Unavailable".
	Status string
}

// Error describes the status.
func (e *HTTPError) Error() string {
	status := e.Status
	if status == "" {
		status = fmt.Sprintf("%d", e.StatusCode)
	}
	return fmt.Sprintf("the Omaha server answered HTTP %s instead of 200 OK", status)
}

// Unwrap returns ErrHTTPStatus so that errors.Is(err, ErrHTTPStatus) works.
func (e *HTTPError) Unwrap() error { return ErrHTTPStatus }

// DefaultPath is where Omaha servers listen; Client uses it when URL has no
// path, as go-omaha's client does.
const DefaultPath = "/v1/update/"

// Client posts Omaha requests to one server. It is the minimal building
// block shared by flotilla's agent and load generator: no scheduling, no
// retries, no state. The zero value is not usable; set URL. A Client is safe
// for concurrent use if its HTTP client is.
type Client struct {
	// URL is the server, e.g. "https://updates.example.net/v1/update/".
	// When it has no path, DefaultPath is used.
	URL string
	// HTTP is the client to use; nil means http.DefaultClient. Bound the
	// time with the context passed to Send or with HTTP.Timeout.
	HTTP *http.Client
	// UserAgent, when set, is sent as the User-Agent header.
	UserAgent string
}

// Endpoint returns the URL requests are posted to, after applying
// DefaultPath. It fails when URL is not an absolute http(s) URL.
func (c *Client) Endpoint() (string, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return "", fmt.Errorf("endpoint: server URL %s: %w", quote(c.URL), err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("endpoint: server URL %s must start with http:// or https://", quote(c.URL))
	}
	if u.Host == "" {
		return "", fmt.Errorf("endpoint: server URL %s has no host", quote(c.URL))
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = DefaultPath
	}
	return u.String(), nil
}

// Send posts req as text/xml and parses the answer. A non-200 answer yields
// an error wrapping *HTTPError (and so ErrHTTPStatus); an answer that does
// not parse yields an error wrapping ErrMalformed.
func (c *Client) Send(ctx context.Context, req *Request) (*Response, error) {
	if req == nil {
		return nil, errors.New("send: the request is nil")
	}
	endpoint, err := c.Endpoint()
	if err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	body, err := req.Marshal()
	if err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	// update_engine sends exactly this content type.
	hreq.Header.Set("Content-Type", "text/xml")
	if c.UserAgent != "" {
		hreq.Header.Set("User-Agent", c.UserAgent)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	hresp, err := hc.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	defer hresp.Body.Close()
	if hresp.StatusCode != http.StatusOK {
		// Drain a little so the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(hresp.Body, 64<<10))
		return nil, fmt.Errorf("send to %s: %w", endpoint, &HTTPError{StatusCode: hresp.StatusCode, Status: hresp.Status})
	}
	resp, err := ParseResponse(hresp.Body)
	if err != nil {
		return nil, fmt.Errorf("send to %s: %w", endpoint, err)
	}
	return resp, nil
}
