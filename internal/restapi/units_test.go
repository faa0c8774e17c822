package restapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	v1 "github.com/flotilla/flotilla/api/v1"
	"github.com/flotilla/flotilla/internal/fleet"
	"github.com/flotilla/flotilla/internal/server"
	"github.com/flotilla/flotilla/internal/servertest"
	"github.com/flotilla/flotilla/internal/testenv"
)

// unitServer is a real server with a short grace period and one unit
// agent (process driver) registered as machine m1.
type unitServer struct {
	srv   *servertest.Running
	token string
}

func startUnitServer(t *testing.T) *unitServer {
	t.Helper()
	srv := servertest.Start(t, func(c *server.Config) {
		c.Units = fleet.EngineConfig{Grace: 2 * time.Second, SessionTTL: time.Second, Debounce: 20 * time.Millisecond}
	})
	cfg := fleet.DefaultAgentConfig()
	cfg.Machine = fleet.Machine{ID: "m1", Address: "10.0.0.1", Metadata: map[string]string{"zone": "a"}}
	cfg.PresenceTTL, cfg.Grace, cfg.StateInterval = time.Second, 2*time.Second, 100*time.Millisecond
	drv := fleet.NewProcessDriver(fleet.ProcessConfig{MaxStopTimeout: time.Second}, nil)
	ua, err := fleet.NewUnitAgent(srv.Etcd().Client(), cfg, drv, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = ua.Run(ctx) }()
	// Registered before the server stops (cleanups run last first), so
	// the agent stops its units while etcd is still there.
	t.Cleanup(func() { cancel(); <-done })
	return &unitServer{srv: srv, token: srv.AdminToken}
}

// do sends one request and returns the status and body.
func (s *unitServer) do(t *testing.T, token, method, path, contentType string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, s.srv.URL()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (s *unitServer) want(t *testing.T, method, path, body string, status int, out any) {
	t.Helper()
	ct := "text/plain"
	if strings.HasSuffix(path, "/desired-state") {
		ct = "application/json"
	}
	got, b := s.do(t, s.token, method, path, ct, []byte(body))
	if got != status {
		t.Fatalf("%s %s = %d, want %d: %s", method, path, got, status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

func wantKind(t *testing.T, b []byte, kind string) {
	t.Helper()
	var e v1.Error
	if err := json.Unmarshal(b, &e); err != nil || e.Kind != kind {
		t.Fatalf("error body %s, want kind %s", b, kind)
	}
}

const helloUnit = "[Unit]\nDescription=hello\n[Service]\nExecStart=/bin/sleep 1000\n[X-Fleet]\nMachineMetadata=zone=a\n"

func TestUnitsLifecycle(t *testing.T) {
	s := startUnitServer(t)
	var u v1.Unit
	s.want(t, "PUT", "/api/v1/units/hello.service", helloUnit, http.StatusCreated, &u)
	if u.Name != "hello.service" || u.DesiredState != "inactive" || u.CurrentState != "inactive" || u.Raw != helloUnit || len(u.Hash) != 64 {
		t.Fatalf("submitted unit = %+v", u)
	}
	// Identical again: a no-op. Different: a conflict unless replaced.
	s.want(t, "PUT", "/api/v1/units/hello.service", helloUnit, http.StatusOK, nil)
	st, b := s.do(t, s.token, "PUT", "/api/v1/units/hello.service", "text/plain", []byte(helloUnit+"# changed\n"))
	if st != http.StatusConflict {
		t.Fatalf("different body without replace = %d %s", st, b)
	}
	wantKind(t, b, v1.KindConflict)

	s.want(t, "PUT", "/api/v1/units/hello.service/desired-state", `{"desired_state":"launched"}`, http.StatusOK, &u)
	if u.DesiredState != "launched" {
		t.Fatalf("after start: %+v", u)
	}
	testenv.Until(t, 20*time.Second, "hello.service launched on m1", func() bool {
		s.want(t, "GET", "/api/v1/units/hello.service", "", http.StatusOK, &u)
		return u.CurrentState == "launched" && len(u.Machines) == 1 && u.Machines[0] == "m1" &&
			len(u.States) == 1 && u.States[0].Active == "active"
	})

	var ml v1.MachineList
	s.want(t, "GET", "/api/v1/machines", "", http.StatusOK, &ml)
	if len(ml.Machines) != 1 || ml.Machines[0].ID != "m1" || ml.Machines[0].State != "alive" ||
		ml.Machines[0].Metadata["zone"] != "a" || ml.Machines[0].Address != "10.0.0.1" || ml.Machines[0].Units != 1 {
		t.Fatalf("machines = %+v", ml)
	}
	var sl v1.UnitStateList
	s.want(t, "GET", "/api/v1/unit-states?machine=m1", "", http.StatusOK, &sl)
	if len(sl.States) != 1 || sl.States[0].Unit != "hello.service" || sl.States[0].Sub != "running" {
		t.Fatalf("unit states = %+v", sl)
	}
	s.want(t, "GET", "/api/v1/unit-states?machine=m2", "", http.StatusOK, &sl)
	if len(sl.States) != 0 {
		t.Fatalf("unit states of m2 = %+v", sl)
	}

	// Replacing keeps the desired state; the machine restarts the unit
	// with the new body.
	s.want(t, "PUT", "/api/v1/units/hello.service?replace=true", helloUnit+"# v2\n", http.StatusOK, &u)
	if u.DesiredState != "launched" || !strings.HasSuffix(u.Raw, "# v2\n") {
		t.Fatalf("replaced = %+v", u)
	}
	st, b = s.do(t, s.token, "GET", "/api/v1/units/hello.service/file", "", nil)
	if st != http.StatusOK || string(b) != helloUnit+"# v2\n" {
		t.Fatalf("file = %d %q", st, b)
	}

	s.want(t, "PUT", "/api/v1/units/hello.service/desired-state", `{"desired_state":"loaded"}`, http.StatusOK, nil)
	testenv.Until(t, 20*time.Second, "hello.service stopped", func() bool {
		s.want(t, "GET", "/api/v1/units/hello.service", "", http.StatusOK, &u)
		return u.CurrentState == "loaded" && len(u.States) == 1 && u.States[0].Active != "active"
	})
	s.want(t, "DELETE", "/api/v1/units/hello.service", "", http.StatusNoContent, nil)
	st, b = s.do(t, s.token, "DELETE", "/api/v1/units/hello.service", "", nil)
	if st != http.StatusNotFound {
		t.Fatalf("second delete = %d %s", st, b)
	}
	wantKind(t, b, v1.KindNotFound)
	testenv.Until(t, 20*time.Second, "hello.service gone from m1", func() bool {
		s.want(t, "GET", "/api/v1/unit-states", "", http.StatusOK, &sl)
		return len(sl.States) == 0
	})
}

func TestUnitsTemplates(t *testing.T) {
	s := startUnitServer(t)
	tmpl := "[Service]\nExecStart=/bin/sleep 1000\n[X-Fleet]\nConflicts=web@*.service\n"
	s.want(t, "PUT", "/api/v1/units/web@.service", tmpl, http.StatusCreated, nil)
	// Templates are stored, never run.
	st, b := s.do(t, s.token, "PUT", "/api/v1/units/web@.service/desired-state", "application/json", []byte(`{"desired_state":"launched"}`))
	if st != http.StatusUnprocessableEntity {
		t.Fatalf("launching a template = %d %s", st, b)
	}
	// Instances come from the template on first use; with one machine the
	// second conflicts and cannot be placed.
	for i := 1; i <= 2; i++ {
		s.want(t, "PUT", fmt.Sprintf("/api/v1/units/web@%d.service/desired-state", i), `{"desired_state":"launched"}`, http.StatusOK, nil)
	}
	var l v1.UnitList
	testenv.Until(t, 20*time.Second, "web@1 launched, web@2 unschedulable", func() bool {
		s.want(t, "GET", "/api/v1/units", "", http.StatusOK, &l)
		by := map[string]v1.Unit{}
		for _, u := range l.Units {
			by[u.Name] = u
		}
		return len(l.Units) == 3 && by["web@.service"].Template && by["web@1.service"].CurrentState == "launched" &&
			strings.Contains(by["web@2.service"].Unschedulable, "Conflicts")
	})
	for _, u := range l.Units {
		if u.Raw != "" || u.States != nil {
			t.Errorf("list entry %s carries its file or states", u.Name)
		}
	}
}

func TestUnitsBadInput(t *testing.T) {
	s := startUnitServer(t)
	for _, c := range []struct {
		name, method, path, ct, body string
		status                       int
		kind                         string
	}{
		{"invalid name", "PUT", "/api/v1/units/no-suffix", "text/plain", helloUnit, 422, v1.KindInvalid},
		{"unknown type", "PUT", "/api/v1/units/x.banana", "text/plain", helloUnit, 422, v1.KindInvalid},
		{"invalid option", "PUT", "/api/v1/units/x.service", "text/plain", "[X-Fleet]\nGlobal=maybe\n", 422, v1.KindInvalid},
		{"contradictory options", "PUT", "/api/v1/units/x.service", "text/plain", "[X-Fleet]\nGlobal=true\nMachineID=m1\n", 422, v1.KindInvalid},
		{"JSON body", "PUT", "/api/v1/units/x.service", "application/json", `{"raw":"x"}`, 415, v1.KindBadRequest},
		{"too large", "PUT", "/api/v1/units/x.service", "text/plain", "[Service]\n#" + strings.Repeat("x", 70<<10), 413, v1.KindTooLarge},
		{"bad replace", "PUT", "/api/v1/units/x.service?replace=yes please", "text/plain", helloUnit, 400, v1.KindBadRequest},
		{"unknown query", "GET", "/api/v1/units?state=launched", "", "", 400, v1.KindBadRequest},
		{"bad desired state", "PUT", "/api/v1/units/x.service/desired-state", "application/json", `{"desired_state":"running"}`, 422, v1.KindInvalid},
		{"desired state of a missing unit", "PUT", "/api/v1/units/x.service/desired-state", "application/json", `{"desired_state":"launched"}`, 404, v1.KindNotFound},
		{"instance of a missing template", "PUT", "/api/v1/units/db@1.service/desired-state", "application/json", `{"desired_state":"launched"}`, 404, v1.KindNotFound},
		{"unknown field", "PUT", "/api/v1/units/x.service/desired-state", "application/json", `{"state":"launched"}`, 400, v1.KindBadRequest},
		{"missing unit", "GET", "/api/v1/units/x.service", "", "", 404, v1.KindNotFound},
		{"missing file", "GET", "/api/v1/units/x.service/file", "", "", 404, v1.KindNotFound},
		{"wrong method", "POST", "/api/v1/units/x.service", "text/plain", helloUnit, 405, v1.KindMethod},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, b := s.do(t, s.token, c.method, strings.ReplaceAll(c.path, " ", "%20"), c.ct, []byte(c.body))
			if st != c.status {
				t.Fatalf("%s %s = %d, want %d: %s", c.method, c.path, st, c.status, b)
			}
			wantKind(t, b, c.kind)
		})
	}
}

func TestUnitsAuth(t *testing.T) {
	s := startUnitServer(t)
	st, b := s.do(t, "", "GET", "/api/v1/units", "", nil)
	if st != http.StatusUnauthorized {
		t.Fatalf("no token = %d %s", st, b)
	}
	var tok v1.CreatedToken
	st, b = s.do(t, s.token, "POST", "/api/v1/tokens", "application/json", []byte(`{"name":"ro","role":"viewer"}`))
	if st != http.StatusCreated || json.Unmarshal(b, &tok) != nil {
		t.Fatalf("create viewer token = %d %s", st, b)
	}
	if st, b = s.do(t, tok.Secret, "GET", "/api/v1/machines", "", nil); st != http.StatusOK {
		t.Fatalf("viewer lists machines = %d %s", st, b)
	}
	for _, r := range []struct{ method, path, body string }{
		{"PUT", "/api/v1/units/x.service", helloUnit},
		{"PUT", "/api/v1/units/x.service/desired-state", `{"desired_state":"launched"}`},
		{"DELETE", "/api/v1/units/x.service", ""},
	} {
		st, b := s.do(t, tok.Secret, r.method, r.path, "text/plain", []byte(r.body))
		if st != http.StatusForbidden {
			t.Errorf("viewer %s %s = %d %s", r.method, r.path, st, b)
		}
	}
}
