package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/flotilla/flotilla/api/v1"
	"github.com/flotilla/flotilla/client"
)

// request is what the fake server saw.
type request struct {
	Method, Path, RawQuery, Auth, ContentType string
	Body                                      string
}

// fakeServer records requests and answers each with the canned response
// registered for "METHOD /path" (unescaped path), or 404 with an envelope.
type fakeServer struct {
	*httptest.Server
	mu      sync.Mutex
	reqs    []request
	answers map[string]func(w http.ResponseWriter, r *http.Request)
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	f := &fakeServer{answers: map[string]func(http.ResponseWriter, *http.Request){}}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, request{
			Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
			Auth: r.Header.Get("Authorization"), ContentType: r.Header.Get("Content-Type"),
			Body: string(b),
		})
		h := f.answers[r.Method+" "+r.URL.Path]
		f.mu.Unlock()
		if h == nil {
			writeJSON(w, http.StatusNotFound, v1.Error{Kind: v1.KindNotFound, Message: "no route " + r.URL.Path})
			return
		}
		h(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeServer) answer(route string, status int, body any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[route] = func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, status, body) }
}

func (f *fakeServer) last(t *testing.T) request {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		t.Fatal("no request reached the server")
	}
	return f.reqs[len(f.reqs)-1]
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if v != nil {
		_ = json.NewEncoder(w).Encode(v)
	}
}

const app = "e96281a6-d1af-4bde-9a0a-97b76e56dc57"

func TestRequestShapes(t *testing.T) {
	ctx := context.Background()
	f := newFakeServer(t)
	c := client.New(f.URL+"/", "s3cret", f.Client())
	base := "/api/v1/apps/" + app

	type check struct {
		name        string
		route       string // answered "METHOD path"
		status      int
		resp        any
		call        func() error
		wantQuery   string
		wantBody    string // JSON, compared after normalizing; "" = no body
		wantPathRaw string // path if it differs from the route's
	}
	var gotGroup v1.Group
	var gotInstances v1.InstanceList
	seenBefore := time.Date(2024, 5, 1, 12, 0, 0, 0, time.FixedZone("CEST", 2*3600))
	checks := []check{
		{name: "ListApps", route: "GET /api/v1/apps", status: 200, resp: []v1.App{{ID: app}},
			call: func() error { _, err := c.ListApps(ctx); return err }},
		{name: "CreateApp", route: "POST /api/v1/apps", status: 201, resp: v1.App{ID: app, Name: "OS"},
			call: func() error {
				_, err := c.CreateApp(ctx, v1.App{ID: app, Name: "OS", Description: "d"})
				return err
			},
			wantBody: `{"id":"` + app + `","name":"OS","description":"d","created_at":"0001-01-01T00:00:00Z"}`},
		{name: "UpdateApp", route: "PATCH " + base, status: 200, resp: v1.App{ID: app},
			call: func() error {
				name := "New"
				_, err := c.UpdateApp(ctx, app, client.AppPatch{Name: &name})
				return err
			},
			wantBody: `{"name":"New"}`},
		{name: "DeleteApp", route: "DELETE " + base, status: 204,
			call: func() error { return c.DeleteApp(ctx, app) }},
		{name: "GetPackage", route: "GET " + base + "/packages/3815.2.0+b1", status: 200, resp: v1.Package{Version: "3815.2.0+b1"},
			call: func() error {
				_, err := c.GetPackage(ctx, app, "3815.2.0+b1", "arm64")
				return err
			},
			wantQuery: "arch=arm64"},
		{name: "DeletePackageDefaultArch", route: "DELETE " + base + "/packages/1.0.0", status: 204,
			call: func() error { return c.DeletePackage(ctx, app, "1.0.0", "") }},
		{name: "CreateChannel", route: "POST " + base + "/channels", status: 201, resp: v1.Channel{Name: "stable"},
			call: func() error {
				_, err := c.CreateChannel(ctx, app, v1.Channel{Name: "stable", Package: "1.0.0"})
				return err
			},
			wantBody: `{"name":"stable","package":"1.0.0"}`},
		{name: "SetChannelPackage", route: "PUT " + base + "/channels/stable/package", status: 200, resp: v1.Channel{Name: "stable"},
			call: func() error {
				_, err := c.SetChannelPackage(ctx, app, "stable", "1.0.1")
				return err
			},
			wantBody: `{"version":"1.0.1"}`},
		{name: "PauseGroup", route: "POST " + base + "/groups/prod/pause", status: 200, resp: v1.Group{Name: "prod", Policy: v1.Policy{Paused: true}},
			call: func() error {
				var err error
				gotGroup, err = c.PauseGroup(ctx, app, "prod", "bad build")
				return err
			},
			wantBody: `{"reason":"bad build"}`},
		{name: "ResumeGroup", route: "POST " + base + "/groups/prod/resume", status: 200, resp: v1.Group{Name: "prod"},
			call: func() error { _, err := c.ResumeGroup(ctx, app, "prod"); return err }},
		{name: "PatchPolicy", route: "PATCH " + base + "/groups/prod/policy", status: 200, resp: v1.Group{Name: "prod"},
			call: func() error {
				n := 20
				_, err := c.PatchPolicy(ctx, app, "prod", v1.PolicyPatch{MaxUpdatesPerPeriod: &n})
				return err
			},
			wantBody: `{"max_updates_per_period":20}`},
		{name: "ListInstances", route: "GET " + base + "/instances", status: 200,
			resp: v1.InstanceList{Instances: []v1.Instance{{MachineID: "m1"}}, Total: 7, NextCursor: "c2"},
			call: func() error {
				var err error
				gotInstances, err = c.ListInstances(ctx, app, client.InstanceQuery{
					Group: "prod", Status: "error", SeenBefore: seenBefore, Sort: "-last_check", Limit: 5,
				})
				return err
			},
			wantQuery: "group=prod&limit=5&seen_before=2024-05-01T10%3A00%3A00Z&sort=-last_check&status=error"},
		{name: "InstanceHistory", route: "GET " + base + "/instances/m 1/history", status: 200, resp: v1.InstanceHistory{},
			call:      func() error { _, err := c.InstanceHistory(ctx, app, "m 1", 5); return err },
			wantQuery: "limit=5"},
		{name: "ListActivity", route: "GET " + base + "/activity", status: 200, resp: v1.ActivityList{},
			call: func() error {
				_, err := c.ListActivity(ctx, app, client.ActivityQuery{Group: "prod", Before: 42, Limit: 3})
				return err
			},
			wantQuery: "before=42&group=prod&limit=3"},
		{name: "DecodeErrorCode", route: "GET /api/v1/errorcodes/2147483658", status: 200, resp: v1.ErrorCode{Raw: 2147483658, Code: 10},
			call: func() error { _, err := c.DecodeErrorCode(ctx, 2147483658); return err }},
		{name: "BracedAppID", route: "GET /api/v1/apps/{" + app + "}", status: 200, resp: v1.App{ID: app},
			call: func() error { _, err := c.GetApp(ctx, "{"+app+"}"); return err }},
	}
	for _, tc := range checks {
		t.Run(tc.name, func(t *testing.T) {
			f.answer(tc.route, tc.status, tc.resp)
			if err := tc.call(); err != nil {
				t.Fatalf("call: %v", err)
			}
			got := f.last(t)
			method, path, _ := strings.Cut(tc.route, " ")
			if got.Method != method || got.Path != path {
				t.Errorf("request = %s %s, want %s %s", got.Method, got.Path, method, path)
			}
			if got.RawQuery != tc.wantQuery {
				t.Errorf("query = %q, want %q", got.RawQuery, tc.wantQuery)
			}
			if got.Auth != "Bearer s3cret" {
				t.Errorf("Authorization = %q", got.Auth)
			}
			if tc.wantBody == "" {
				if got.Body != "" {
					t.Errorf("body = %q, want none", got.Body)
				}
				return
			}
			if got.ContentType != "application/json" {
				t.Errorf("Content-Type = %q", got.ContentType)
			}
			if !jsonEqual(t, got.Body, tc.wantBody) {
				t.Errorf("body = %s, want %s", got.Body, tc.wantBody)
			}
		})
	}
	if !gotGroup.Policy.Paused || gotGroup.Name != "prod" {
		t.Errorf("PauseGroup decoded %+v", gotGroup)
	}
	if gotInstances.Total != 7 || gotInstances.NextCursor != "c2" || len(gotInstances.Instances) != 1 {
		t.Errorf("ListInstances decoded %+v", gotInstances)
	}
}

func jsonEqual(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		t.Fatalf("bad JSON %q: %v", a, err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatalf("bad JSON %q: %v", b, err)
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}

func TestAPIError(t *testing.T) {
	ctx := context.Background()
	f := newFakeServer(t)
	c := client.New(f.URL, "tok", nil)
	f.answer("GET /api/v1/apps/"+app+"/groups/nope", http.StatusNotFound,
		v1.Error{Kind: v1.KindNotFound, Message: `group "nope" not found`})
	f.answer("POST /api/v1/apps", http.StatusConflict,
		v1.Error{Kind: v1.KindConflict, Message: "app exists"})

	_, err := c.GetGroup(ctx, app, "nope")
	var ae *client.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("err = %T %v, want *APIError", err, err)
	}
	if ae.Status != 404 || ae.Kind != v1.KindNotFound || ae.Message != `group "nope" not found` {
		t.Errorf("APIError = %+v", ae)
	}
	if err.Error() != `group "nope" not found` {
		t.Errorf("Error() = %q", err.Error())
	}
	if !client.IsNotFound(err) || client.IsConflict(err) {
		t.Errorf("IsNotFound/IsConflict wrong for %v", err)
	}
	if !client.IsNotFound(errors.Join(errors.New("wrapped"), err)) {
		t.Error("IsNotFound does not see through wrapping")
	}

	_, err = c.CreateApp(ctx, v1.App{ID: app})
	if !client.IsConflict(err) || client.Kind(err) != v1.KindConflict {
		t.Errorf("CreateApp err = %v, want conflict", err)
	}
	if client.IsNotFound(errors.New(`not_found: group "x" not found`)) {
		t.Error("IsNotFound matched a plain error by its text")
	}
}

func TestNonEnvelopeError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	}))
	defer srv.Close()
	_, err := client.New(srv.URL, "", nil).ListApps(context.Background())
	var ae *client.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v, want *APIError", err)
	}
	if ae.Status != 502 || ae.Kind != "" || !strings.Contains(ae.Message, "502") {
		t.Errorf("APIError = %+v", ae)
	}
}

func TestNoContentAndNoToken(t *testing.T) {
	var auth []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Values("Authorization")
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	if err := client.New(srv.URL, "", nil).DeleteGroup(context.Background(), app, "g"); err != nil {
		t.Fatal(err)
	}
	if len(auth) != 0 {
		t.Errorf("Authorization sent without a token: %q", auth)
	}
}

func TestConnError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there any more
	_, err := client.New(url, "t", nil).ListApps(context.Background())
	var ce *client.ConnError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %T %v, want *ConnError", err, err)
	}
	msg := err.Error()
	if !strings.Contains(msg, url) || !strings.Contains(msg, "flotilla server") {
		t.Errorf("message %q should name %s and suggest running flotilla server", msg, url)
	}
}

func TestCanceledContextIsNotConnError(t *testing.T) {
	f := newFakeServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := client.New(f.URL, "", nil).ListApps(ctx)
	var ce *client.ConnError
	if errors.As(err, &ce) || !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled and no ConnError", err)
	}
}

func TestEmptyPathParameter(t *testing.T) {
	f := newFakeServer(t)
	_, err := client.New(f.URL, "", nil).GetGroup(context.Background(), app, "")
	if err == nil {
		t.Fatal("GetGroup with an empty name succeeded")
	}
	f.mu.Lock()
	n := len(f.reqs)
	f.mu.Unlock()
	if n != 0 {
		t.Errorf("%d requests sent, want none", n)
	}
}

func TestListAllInstancesFollowsCursors(t *testing.T) {
	var cursors []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cur := r.URL.Query().Get("cursor")
		cursors = append(cursors, cur)
		switch cur {
		case "":
			writeJSON(w, 200, v1.InstanceList{Instances: []v1.Instance{{MachineID: "a"}, {MachineID: "b"}}, Total: 3, NextCursor: "p2"})
		case "p2":
			writeJSON(w, 200, v1.InstanceList{Instances: []v1.Instance{{MachineID: "c"}}, Total: 3})
		default:
			writeJSON(w, 400, v1.Error{Kind: v1.KindBadRequest, Message: "bad cursor"})
		}
	}))
	defer srv.Close()
	list, err := client.New(srv.URL, "", nil).ListAllInstances(context.Background(), app, client.InstanceQuery{Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Instances) != 3 || list.Total != 3 || list.NextCursor != "" {
		t.Errorf("list = %+v", list)
	}
	if strings.Join(cursors, ",") != ",p2" {
		t.Errorf("cursors = %q", cursors)
	}
}

func TestNewDefaultsScheme(t *testing.T) {
	if got := client.New("127.0.0.1:8080/", "", nil).BaseURL(); got != "http://127.0.0.1:8080" {
		t.Errorf("BaseURL = %q", got)
	}
}
