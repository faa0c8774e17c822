package omaha

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeServer answers like a minimal Omaha server and records what it saw.
type fakeServer struct {
	mu          sync.Mutex
	paths       []string
	contentType string
	userAgent   string
	got         *Request
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.paths = append(f.paths, r.URL.Path)
	f.contentType = r.Header.Get("Content-Type")
	f.userAgent = r.Header.Get("User-Agent")
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	req, err := ParseRequest(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.got = req
	resp := &Response{Server: "test"}
	for _, a := range req.Apps {
		ra := ResponseApp{AppID: a.AppID, Status: AppStatusOK}
		if a.Ping != nil {
			ra.Ping = &PingResponse{Status: "ok"}
		}
		for range a.Events {
			ra.Events = append(ra.Events, EventResponse{Status: "ok"})
		}
		if a.UpdateCheck != nil {
			ra.UpdateCheck = &UpdateCheckResponse{Status: UpdateStatusNoUpdate, PollInterval: 1800}
		}
		resp.Apps = append(resp.Apps, ra)
	}
	b, err := resp.Marshal()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	_, _ = w.Write(b)
}

func checkRequest() *Request {
	return &Request{
		Version:       "flotilla-agent",
		InstallSource: InstallSourceScheduler,
		IsMachine:     1,
		Apps: []App{{
			AppID:       "{" + FlatcarAppID + "}",
			Version:     "3975.2.1",
			Track:       "stable",
			MachineID:   "8f14e45fceea167a5a36dedd4bea2543",
			Board:       "amd64-usr",
			Ping:        &Ping{Active: 1},
			UpdateCheck: &UpdateCheck{},
			Events:      []Event{{Type: EventTypeUpdateComplete, Result: EventResultSuccessReboot, PreviousVersion: "0.0.0.0"}},
		}},
	}
}

func TestClientSend(t *testing.T) {
	fake := &fakeServer{}
	srv := httptest.NewServer(fake) // loopback only
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for _, tt := range []struct{ url, path string }{
		{srv.URL, "/v1/update/"},
		{srv.URL + "/", "/v1/update/"},
		{srv.URL + "/v1/update", "/v1/update"},
		{srv.URL + "/v1/update/secret", "/v1/update/secret"},
	} {
		c := &Client{URL: tt.url, HTTP: srv.Client(), UserAgent: "flotilla-test/1"}
		resp, err := c.Send(ctx, checkRequest())
		if err != nil {
			t.Fatalf("Send to %s: %v", tt.url, err)
		}
		fake.mu.Lock()
		path, ct, ua, got := fake.paths[len(fake.paths)-1], fake.contentType, fake.userAgent, fake.got
		fake.mu.Unlock()
		if path != tt.path {
			t.Errorf("URL %s: server saw path %q, want %q", tt.url, path, tt.path)
		}
		if ct != "text/xml" || ua != "flotilla-test/1" {
			t.Errorf("headers: Content-Type %q, User-Agent %q", ct, ua)
		}
		if got.Protocol != "3.0" || got.Apps[0].MachineID != "8f14e45fceea167a5a36dedd4bea2543" {
			t.Errorf("server parsed %+v", got)
		}
		uc := resp.Apps[0].UpdateCheck
		if resp.Server != "test" || uc == nil || uc.Status != UpdateStatusNoUpdate || uc.PollInterval != 1800 || len(resp.Apps[0].Events) != 1 {
			t.Errorf("response = %+v", resp)
		}
	}
}

func TestClientErrors(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/update/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/garbage/", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "<html>captive portal</html>")
	})
	mux.HandleFunc("/slow/", func(w http.ResponseWriter, r *http.Request) {
		// The server notices a gone client only once the body is read.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ctx := context.Background()

	t.Run("non-200", func(t *testing.T) {
		_, err := (&Client{URL: srv.URL, HTTP: srv.Client()}).Send(ctx, checkRequest())
		var he *HTTPError
		if !errors.As(err, &he) || he.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("want *HTTPError 503, got %v", err)
		}
		if !errors.Is(err, ErrHTTPStatus) || !strings.Contains(err.Error(), "503") || !strings.HasPrefix(err.Error(), "send to ") {
			t.Errorf("error = %v", err)
		}
	})
	t.Run("not omaha", func(t *testing.T) {
		_, err := (&Client{URL: srv.URL + "/garbage/", HTTP: srv.Client()}).Send(ctx, checkRequest())
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "root element is <html>") {
			t.Errorf("error = %v", err)
		}
	})
	t.Run("context", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		_, err := (&Client{URL: srv.URL + "/slow/", HTTP: srv.Client()}).Send(ctx, checkRequest())
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("error = %v, want deadline exceeded", err)
		}
	})
	if _, err := (&Client{URL: srv.URL}).Send(ctx, nil); err == nil {
		t.Error("Send(nil) succeeded")
	}
	for _, bad := range []string{"", "ftp://example.net/", "http://", "::nope"} {
		t.Run("bad URL "+bad, func(t *testing.T) {
			_, err := (&Client{URL: bad}).Send(ctx, checkRequest())
			if err == nil || !strings.HasPrefix(err.Error(), "send: endpoint: server URL") {
				t.Errorf("error = %v", err)
			}
		})
	}
}
