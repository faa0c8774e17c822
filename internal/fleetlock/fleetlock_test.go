package fleetlock_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla/flotilla/internal/etcdtest"
	"github.com/flotilla/flotilla/internal/fleetlock"
	"github.com/flotilla/flotilla/internal/rebootlock"
)

// newServer serves FleetLock over a real embedded etcd at <url>/fleetlock.
func newServer(t *testing.T) (string, *rebootlock.Manager) {
	t.Helper()
	c := etcdtest.Start(t, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := rebootlock.New(c.Client(t), rebootlock.Config{}, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	h, err := fleetlock.NewHandler(m, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/fleetlock/", http.StripPrefix("/fleetlock", h))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL + "/fleetlock", m
}

type exchange struct {
	method, path string
	header       bool
	hval         string // header value when not "true"
	body         string
}

func do(t *testing.T, base string, x exchange) (int, fleetlock.ErrorBody, string) {
	t.Helper()
	if x.method == "" {
		x.method = http.MethodPost
	}
	req, err := http.NewRequest(x.method, base+x.path, strings.NewReader(x.body))
	if err != nil {
		t.Fatal(err)
	}
	if x.header {
		req.Header.Set(fleetlock.HeaderName, "true")
	}
	if x.hval != "" {
		req.Header.Set(fleetlock.HeaderName, x.hval)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var eb fleetlock.ErrorBody
	if resp.StatusCode != http.StatusOK {
		if err := json.Unmarshal(raw, &eb); err != nil {
			t.Fatalf("%s %s: error body is not {kind,value} JSON: %q", x.method, x.path, raw)
		}
	}
	return resp.StatusCode, eb, resp.Header.Get("Content-Type")
}

func body(id, group string) string {
	b, _ := json.Marshal(fleetlock.Request{ClientParams: fleetlock.ClientParams{ID: id, Group: group}})
	return string(b)
}

// TestConformance walks the protocol: request → status and body, in an
// order where each step depends on the state the previous ones left.
func TestConformance(t *testing.T) {
	base, m := newServer(t)
	ctx := context.Background()
	const pre, steady = fleetlock.PathPreReboot, fleetlock.PathSteadyState
	steps := []struct {
		name   string
		x      exchange
		status int
		kind   string
	}{
		{"grant", exchange{path: pre, header: true, body: body("node-a", "workers")}, 200, ""},
		{"repeated lock by the holder (recursive)", exchange{path: pre, header: true, body: body("node-a", "workers")}, 200, ""},
		{"lock when full", exchange{path: pre, header: true, body: body("node-b", "workers")}, 423, fleetlock.KindFull},
		{"unlock by a non-holder is success and releases nothing", exchange{path: steady, header: true, body: body("node-b", "workers")}, 200, ""},
		{"still full", exchange{path: pre, header: true, body: body("node-c", "workers")}, 423, fleetlock.KindFull},
		{"unlock by the holder", exchange{path: steady, header: true, body: body("node-a", "workers")}, 200, ""},
		{"unlock again (not holding) is success", exchange{path: steady, header: true, body: body("node-a", "workers")}, 200, ""},
		// node-b left the queue with its steady-state call; node-c waits.
		{"a machine behind the first waiter stays queued", exchange{path: pre, header: true, body: body("node-b", "workers")}, 423, fleetlock.KindFull},
		{"the first waiter gets the slot", exchange{path: pre, header: true, body: body("node-c", "workers")}, 200, ""},
		{"an unconfigured group has max 1", exchange{path: pre, header: true, body: body("node-a", "db.eu-1")}, 200, ""},
		{"ids are case-sensitive", exchange{path: pre, header: true, body: body("NODE-A", "db.eu-1")}, 423, fleetlock.KindFull},
		{"missing header", exchange{path: pre, body: body("node-x", "workers")}, 400, fleetlock.KindMissingHeader},
		{"header not true", exchange{path: pre, hval: "yes", body: body("node-x", "workers")}, 400, fleetlock.KindMissingHeader},
		{"malformed body", exchange{path: pre, header: true, body: `{"client_params":`}, 400, fleetlock.KindMalformedBody},
		{"unknown field", exchange{path: pre, header: true, body: `{"client_params":{"id":"a","group":"g","x":1}}`}, 400, fleetlock.KindMalformedBody},
		{"trailing data", exchange{path: pre, header: true, body: body("a", "g") + `{}`}, 400, fleetlock.KindMalformedBody},
		{"empty id", exchange{path: pre, header: true, body: body("", "workers")}, 400, fleetlock.KindInvalidIdentity},
		{"invalid group name", exchange{path: pre, header: true, body: body("node-x", "bad/group")}, 400, fleetlock.KindInvalidGroup},
		{"empty group", exchange{path: steady, header: true, body: body("node-x", "")}, 400, fleetlock.KindInvalidGroup},
		{"GET is not allowed", exchange{method: http.MethodGet, path: pre, header: true}, 405, fleetlock.KindMethod},
		{"oversized body", exchange{path: pre, header: true, body: `{"client_params":{"id":"` + strings.Repeat("a", 70<<10) + `","group":"g"}}`}, 413, fleetlock.KindTooLarge},
	}
	for _, s := range steps {
		status, eb, ctype := do(t, base, s.x)
		if status != s.status || eb.Kind != s.kind {
			t.Fatalf("%s: HTTP %d kind %q (%s), want %d %q", s.name, status, eb.Kind, eb.Value, s.status, s.kind)
		}
		if status != 200 && eb.Value == "" {
			t.Fatalf("%s: error without a value", s.name)
		}
		if ctype != "application/json" {
			t.Fatalf("%s: Content-Type %q", s.name, ctype)
		}
	}
	// The semaphore agrees with what the protocol said.
	st, err := m.Status(ctx, "workers")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Holders) != 1 || st.Holders[0].ID != "node-c" {
		t.Fatalf("workers holders %+v, want node-c only", st.Holders)
	}
	// Changing max takes effect at once.
	if err := m.SetMax(ctx, "workers", 2); err != nil {
		t.Fatal(err)
	}
	if status, eb, _ := do(t, base, exchange{path: pre, header: true, body: body("node-b", "workers")}); status != 200 {
		t.Fatalf("after set-max 2: %d %+v", status, eb)
	}
}

// TestClient: the agent's client against the handler.
func TestClient(t *testing.T) {
	base, _ := newServer(t)
	ctx := context.Background()
	c := &fleetlock.Client{BaseURL: base}
	if err := c.PreReboot(ctx, "default", "m1"); err != nil {
		t.Fatal(err)
	}
	err := c.PreReboot(ctx, "default", "m2")
	if !fleetlock.IsFull(err) {
		t.Fatalf("second machine: %v, want full", err)
	}
	var ae *fleetlock.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusLocked {
		t.Fatalf("error %v", err)
	}
	if err := c.SteadyState(ctx, "default", "m1"); err != nil {
		t.Fatal(err)
	}
	if err := c.PreReboot(ctx, "default", "m2"); err != nil {
		t.Fatalf("after release: %v", err)
	}
	if err := c.PreReboot(ctx, "no/such", "m2"); err == nil || fleetlock.IsFull(err) {
		t.Fatalf("invalid group: %v", err)
	}
}
