package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	v1 "github.com/flotilla/flotilla/api/v1"
)

// ListUnits returns every submitted unit with its desired and current
// state (GET /api/v1/units).
func (c *Client) ListUnits(ctx context.Context) (v1.UnitList, error) {
	var out v1.UnitList
	err := c.get(ctx, []string{"units"}, nil, &out)
	return out, err
}

// GetUnit returns one unit with its file and the machines' reports
// (GET /api/v1/units/{name}).
func (c *Client) GetUnit(ctx context.Context, name string) (v1.Unit, error) {
	var out v1.Unit
	err := c.get(ctx, []string{"units", name}, nil, &out)
	return out, err
}

// SubmitUnit stores a unit file under name (PUT /api/v1/units/{name}). An
// identical file is a no-op; a different one is a conflict unless replace
// is set. An empty body instantiates a submitted template.
func (c *Client) SubmitUnit(ctx context.Context, name, body string, replace bool) (v1.Unit, error) {
	var q url.Values
	if replace {
		q = url.Values{"replace": {"true"}}
	}
	var out v1.Unit
	err := c.text(ctx, http.MethodPut, []string{"units", name}, q, strings.NewReader(body), func(r io.Reader) error {
		return json.NewDecoder(r).Decode(&out)
	})
	return out, err
}

// UnitFile returns a unit file as submitted (GET /api/v1/units/{name}/file).
func (c *Client) UnitFile(ctx context.Context, name string) (string, error) {
	var b strings.Builder
	err := c.text(ctx, http.MethodGet, []string{"units", name, "file"}, nil, nil, func(r io.Reader) error {
		_, err := io.Copy(&b, r)
		return err
	})
	return b.String(), err
}

// SetUnitState sets a unit's desired state: inactive, loaded or launched
// (PUT /api/v1/units/{name}/desired-state).
func (c *Client) SetUnitState(ctx context.Context, name, desired string) (v1.Unit, error) {
	var out v1.Unit
	err := c.call(ctx, http.MethodPut, []string{"units", name, "desired-state"}, nil, v1.UnitDesiredState{DesiredState: desired}, &out)
	return out, err
}

// DestroyUnit deletes a unit; agents stop it (DELETE /api/v1/units/{name}).
func (c *Client) DestroyUnit(ctx context.Context, name string) error {
	return c.call(ctx, http.MethodDelete, []string{"units", name}, nil, nil, nil)
}

// ListUnitStates returns the unit states machines report, filtered by
// unit and machine when not empty (GET /api/v1/unit-states).
func (c *Client) ListUnitStates(ctx context.Context, unit, machine string) (v1.UnitStateList, error) {
	q := url.Values{}
	if unit != "" {
		q.Set("unit", unit)
	}
	if machine != "" {
		q.Set("machine", machine)
	}
	var out v1.UnitStateList
	err := c.get(ctx, []string{"unit-states"}, q, &out)
	return out, err
}

// ListMachines returns the machines registered by unit agents, alive or
// not (GET /api/v1/machines).
func (c *Client) ListMachines(ctx context.Context) (v1.MachineList, error) {
	var out v1.MachineList
	err := c.get(ctx, []string{"machines"}, nil, &out)
	return out, err
}

// text is call for routes whose request or response body is not JSON:
// body (may be nil) is sent as text/plain, and read gets the 2xx response
// body.
func (c *Client) text(ctx context.Context, method string, segs []string, query url.Values, body io.Reader, read func(io.Reader) error) error {
	p, err := apiPath(segs...)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, strings.Join(segs, "/"), err)
	}
	u := c.baseURL + p
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("User-Agent", "flotilla-client")
	if body != nil {
		req.Header.Set("Content-Type", "text/plain; charset=utf-8")
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
	if err := read(resp.Body); err != nil {
		return fmt.Errorf("read response of %s %s: %w", method, p, err)
	}
	return nil
}
