package server

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/flotilla/flotilla/internal/etcdserver"
	"github.com/flotilla/flotilla/internal/etcdtest"
	"github.com/flotilla/flotilla/internal/testenv"
)

// TestReplicasStartTogether starts two servers at the same moment on one
// empty PostgreSQL database and one etcd: both start (the second's seed
// meets the first's and backs off), only one creates and shows an admin
// token, and that token works on both. Then one replica loses its store:
// its /readyz turns 503 naming the store, its /healthz stays 200 and says
// so too, and the other replica stays ready.
func TestReplicasStartTogether(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	etcd := etcdtest.Start(t, 1)

	cfgs := make([]Config, 2)
	srvs := make([]*Server, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range cfgs {
		cfgs[i] = testConfig(t)
		cfgs[i].Database = dsn
		cfgs[i].Etcd = etcdserver.DefaultConfig()
		cfgs[i].Etcd.Endpoints = etcd.Endpoints()
		wg.Add(1)
		go func() {
			defer wg.Done()
			srvs[i], errs[i] = New(t.Context(), cfgs[i], discardLogger())
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}
	bases := make([]string, 2)
	for i, srv := range srvs {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("server run: %v", err)
			}
		})
		bases[i] = "http://" + srv.Addr()
	}

	var token string
	for i, srv := range srvs {
		if srv.AdminToken != "" {
			if token != "" {
				t.Fatal("both replicas created an admin token")
			}
			token = srv.AdminToken
			continue
		}
		t.Logf("replica %d found the store seeded", i)
	}
	if token == "" {
		t.Fatal("no replica created an admin token")
	}
	toks, err := srvs[0].Store().ListTokens(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(toks) != 1 {
		t.Errorf("%d tokens in the store after two starts, want 1", len(toks))
	}
	for i, base := range bases {
		req, _ := http.NewRequest("GET", base+"/api/v1/apps", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "Flatcar") {
			t.Errorf("replica %d: GET /api/v1/apps with the admin token: %d %s", i, resp.StatusCode, body)
		}
	}
	for i, base := range bases {
		if code, body := httpGet(t, base+"/readyz"); code != 200 || body != "store: ok\netcd: ok\n" {
			t.Errorf("replica %d /readyz: %d %q", i, code, body)
		}
		if code, body := httpGet(t, base+"/healthz"); code != 200 || body != "ok\nstore: ok\netcd: ok\n" {
			t.Errorf("replica %d /healthz: %d %q", i, code, body)
		}
	}

	// Closing the pool is the surest way to make this replica's database
	// unreachable without touching the other's.
	if err := srvs[1].Store().Close(); err != nil {
		t.Fatal(err)
	}
	code, body := httpGet(t, bases[1]+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "store: ") || strings.Contains(body, "store: ok") ||
		!strings.HasSuffix(body, "etcd: ok\n") {
		t.Errorf("/readyz with the store closed: %d %q", code, body)
	}
	code, body = httpGet(t, bases[1]+"/healthz")
	if code != 200 || !strings.HasPrefix(body, "ok\nstore: ") || strings.Contains(body, "store: ok") {
		t.Errorf("/healthz with the store closed: %d %q (want 200, naming the store)", code, body)
	}
	if code, body := httpGet(t, bases[0]+"/readyz"); code != 200 {
		t.Errorf("other replica's /readyz: %d %q", code, body)
	}
}
