package dashboard_test

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flotilla/flotilla/internal/server"
	"github.com/flotilla/flotilla/internal/servertest"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/omaha"
)

// BenchmarkPages measures the server's time to render the group page and
// one page of its instance list with 100,000 instances in the group,
// beside the same pages of an empty group, through the server's whole
// handler (session check, template, store queries; no network):
//
//	go test -run '^$' -bench Pages -benchtime 50x ./internal/dashboard
func BenchmarkPages(b *testing.B) {
	const n = 100_000
	srv, cookie := benchServer(b, n)
	get := func(b *testing.B, path string) string {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.AddCookie(cookie)
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("GET %s: %d\n%s", path, rec.Code, rec.Body.String())
		}
		return rec.Body.String()
	}
	app := "/apps/" + omaha.FlatcarAppID + "/groups/"
	first := get(b, app+"stable")
	m := regexp.MustCompile(`href="([^"]*cursor=[^"]*)"`).FindStringSubmatch(first)
	if m == nil {
		b.Fatal("the group page of 100,000 instances has no next-page link")
	}
	page2 := html.UnescapeString(m[1])
	for _, tc := range []struct{ name, path string }{
		{"100k/group", app + "stable"},
		{"100k/instances-page-2", page2},
		{"100k/search-alias-prefix", app + "stable?q=node-00424"},
		{"100k/search-id-prefix", app + "stable?q=" + fmt.Sprintf("%032x", 4242)[:30]},
		{"100k/filter-status", app + "stable?status=error"},
		{"empty/group", app + "beta"},
		{"overview", "/"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				get(b, tc.path)
			}
		})
	}
	// What the chart's data costs to collect: one sample of every group's
	// version breakdown (the server takes one a minute).
	b.Run("100k/sample-versions", func(b *testing.B) {
		at := time.Now()
		for b.Loop() {
			at = at.Add(time.Second)
			if _, err := srv.Store().SampleVersions(context.Background(), at); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchServer starts a server whose stable group holds n instances (a
// mix of statuses and versions) and signs in.
func benchServer(b *testing.B, n int) (*server.Server, *http.Cookie) {
	b.Helper()
	srv := servertest.Start(b).Server
	ctx := context.Background()

	statuses := []store.Status{store.StatusComplete, store.StatusComplete, store.StatusIdle, store.StatusGranted,
		store.StatusInstalled, store.StatusError, store.StatusRolledBack, store.StatusOnHold}
	now := time.Now().UTC()
	err := srv.Store().Update(ctx, func(q store.TxQueries) error {
		for i := range n {
			v := "4081.2.0"
			if i%3 == 0 {
				v = "4152.2.0"
			}
			err := q.PutInstance(ctx, store.Instance{
				AppID: omaha.FlatcarAppID, MachineID: fmt.Sprintf("%032x", i), Alias: fmt.Sprintf("node-%06d", i),
				IP: "10.0.0.1", OEM: "qemu", Board: "amd64-usr", Group: "stable", Version: v,
				Status: statuses[i%len(statuses)], LastCheck: now.Add(-time.Duration(i) * time.Second),
				StatusChanged: now, CreatedAt: now,
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	// A day of version samples for the chart, one every 5 minutes (the
	// default is one a minute: the page reads at most as many rows as this
	// times 5, and draws at most 320 points either way).
	for i := 288; i > 0; i-- {
		if _, err := srv.Store().SampleVersions(ctx, now.Add(-time.Duration(i)*5*time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	req := httptest.NewRequest(http.MethodPost, "/login", strings.NewReader(url.Values{"token": {srv.AdminToken}, "next": {"/"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, req)
	c := sessionCookie(rec.Header())
	if c == nil {
		b.Fatalf("sign-in failed: %d %s", rec.Code, rec.Body.String())
	}
	return srv, &http.Cookie{Name: c.Name, Value: c.Value}
}

// BenchmarkReferenceHandler is the yardstick for BenchmarkPages in the same
// run: a trivial handler through the same recorder, writing a page of the
// group page's size from memory.
func BenchmarkReferenceHandler(b *testing.B) {
	page := []byte(strings.Repeat("<tr><td>x</td></tr>\n", 2500))
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(page)
	})
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	}
}
