// Package servertest starts a real flotilla server for the tests of other
// packages: a temporary data directory, a loopback listener, SQLite with
// synchronous NORMAL and an embedded etcd on free ports (so that test
// packages running side by side never collide on 2379/2380).
package servertest

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/flotilla/flotilla/internal/server"
)

// Running is a started server.
type Running struct {
	*server.Server
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// Start starts a server, applying configure to its config first, and stops
// it when the test ends (failing the test if Run returned an error).
func Start(tb testing.TB, configure ...func(*server.Config)) *Running {
	tb.Helper()
	cfg := server.DefaultConfig()
	cfg.DataDir = tb.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.SQLiteSync = "NORMAL"
	cfg.Etcd.ClientURL = "http://127.0.0.1:0"
	cfg.Etcd.PeerURL = "http://127.0.0.1:0"
	for _, c := range configure {
		c(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	r := &Running{Server: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- srv.Run(ctx) }()
	tb.Cleanup(func() {
		if err := r.Stop(); err != nil {
			tb.Errorf("server run: %v", err)
		}
	})
	return r
}

// URL is the server's base URL, e.g. http://127.0.0.1:34567.
func (r *Running) URL() string { return "http://" + r.Addr() }

// Stop shuts the server down and returns Run's error; later calls return
// the same.
func (r *Running) Stop() error {
	r.once.Do(func() {
		r.cancel()
		r.err = <-r.done
	})
	return r.err
}
