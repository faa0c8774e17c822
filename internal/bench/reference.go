package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/flotilla/flotilla/omaha"
)

// ReferenceServer is a trivial Omaha endpoint on loopback: it reads the
// request body and answers every POST with the same fixed "noupdate"
// document, without parsing anything or touching a database. Measured with
// the same client, concurrency and duration as flotilla, it gives the
// ceiling that net/http and the load generator impose on this machine, so
// flotilla's throughput can be read as a fraction of it.
type ReferenceServer struct {
	// URL is the endpoint, "http://127.0.0.1:PORT/v1/update/".
	URL string

	hs   *http.Server
	done chan error
}

// ServeReference starts a reference server on 127.0.0.1 with a random port.
// Its answer carries appID (canonical form) like flotilla's. Stop it with
// Close.
func ServeReference(appID string) (*ReferenceServer, error) {
	body, err := (&omaha.Response{
		Protocol: omaha.ProtocolVersion,
		Server:   "bench-reference",
		Apps: []omaha.ResponseApp{{
			AppID:       "{" + appID + "}",
			Status:      omaha.AppStatusOK,
			Ping:        &omaha.PingResponse{Status: "ok"},
			Events:      []omaha.EventResponse{{Status: "ok"}},
			UpdateCheck: &omaha.UpdateCheckResponse{Status: omaha.UpdateStatusNoUpdate},
		}},
	}).Marshal()
	if err != nil {
		return nil, fmt.Errorf("serve reference: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("serve reference: %w", err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read the body as a real server must, so the connection is reused
		// and the request costs the same to receive.
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 64<<10))
		w.Header().Set("Content-Type", "text/xml; charset=utf-8")
		_, _ = w.Write(body)
	})
	rs := &ReferenceServer{
		URL: "http://" + ln.Addr().String() + omaha.DefaultPath,
		hs: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       120 * time.Second,
		},
		done: make(chan error, 1),
	}
	go func() {
		err := rs.hs.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		rs.done <- err
	}()
	return rs, nil
}

// Close stops the server and waits for it.
func (rs *ReferenceServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := rs.hs.Shutdown(ctx)
	if serveErr := <-rs.done; err == nil && serveErr != nil {
		err = serveErr
	}
	if err != nil {
		return fmt.Errorf("close reference server: %w", err)
	}
	return nil
}
