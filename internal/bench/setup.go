package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/flotilla/flotilla/internal/etcdserver"
	"github.com/flotilla/flotilla/internal/server"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/omaha"
)

// inProcess is a flotilla server running inside the benchmark process on
// 127.0.0.1:0 with its data in a temporary directory.
type inProcess struct {
	srv    *server.Server
	dir    string
	cancel context.CancelFunc
	done   chan error
}

// startServer starts the in-process server, with its own embedded etcd or,
// for a further replica, the etcd at etcdURL. Stop it with stop, which
// also removes its data directory.
func startServer(ctx context.Context, cfg OmahaConfig, logger *slog.Logger, etcdURL string) (*inProcess, error) {
	dir, err := os.MkdirTemp("", "flotilla-bench-*")
	if err != nil {
		return nil, fmt.Errorf("start server: %w", err)
	}
	scfg := server.DefaultConfig()
	scfg.DataDir = dir
	scfg.Listen = "127.0.0.1:0"
	scfg.SQLiteSync = cfg.SQLiteSync
	scfg.Database = cfg.Database
	scfg.ShutdownTimeout = 10 * time.Second
	// Its own etcd on free ports, so it never collides with a server
	// already running on this machine.
	scfg.Etcd.ClientURL = "http://127.0.0.1:0"
	scfg.Etcd.PeerURL = "http://127.0.0.1:0"
	if etcdURL != "" {
		scfg.Etcd = etcdserver.DefaultConfig()
		scfg.Etcd.Endpoints = []string{etcdURL}
	}
	srv, err := server.New(ctx, scfg, logger.With("component", "bench-server"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start server: %w", err)
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p := &inProcess{srv: srv, dir: dir, cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- srv.Run(rctx) }()
	return p, nil
}

// url is the server's Omaha endpoint.
func (p *inProcess) url() string { return "http://" + p.srv.Addr() + omaha.DefaultPath }

// stop shuts the server down gracefully and removes its data.
func (p *inProcess) stop() error {
	p.cancel()
	err := <-p.done
	if rmErr := os.RemoveAll(p.dir); err == nil && rmErr != nil {
		err = rmErr
	}
	if err != nil {
		return fmt.Errorf("stop server: %w", err)
	}
	return nil
}

// prepare makes the in-process server answer the simulated fleet: the
// application, a group for the track (created with its own channel when the
// seeded ones do not match), a package for version and the group's channel
// pointing at it. It returns the group.
func (p *inProcess) prepare(ctx context.Context, appID, track, version string) (store.Group, error) {
	svc, st := p.srv.Service(), p.srv.Store()
	if _, err := st.GetApp(ctx, appID); errors.Is(err, store.ErrNotFound) {
		if err := svc.CreateApp(ctx, store.Application{ID: appID, Name: "bench"}); err != nil {
			return store.Group{}, fmt.Errorf("prepare: %w", err)
		}
	} else if err != nil {
		return store.Group{}, fmt.Errorf("prepare: %w", err)
	}
	g, err := st.GetGroupByTrack(ctx, appID, track)
	if errors.Is(err, store.ErrNotFound) {
		if _, err := st.GetChannel(ctx, appID, track); errors.Is(err, store.ErrNotFound) {
			if err := svc.CreateChannel(ctx, store.Channel{AppID: appID, Name: track}); err != nil {
				return store.Group{}, fmt.Errorf("prepare: %w", err)
			}
		}
		g = store.Group{AppID: appID, Name: track, Track: track, Channel: track, Policy: store.DefaultPolicy()}
		if err := svc.CreateGroup(ctx, g); err != nil {
			return store.Group{}, fmt.Errorf("prepare: %w", err)
		}
	} else if err != nil {
		return store.Group{}, fmt.Errorf("prepare: %w", err)
	}
	err = svc.CreatePackage(ctx, store.Package{
		AppID: appID, Version: version, Arch: "amd64",
		BaseURL:  "https://bench.invalid/amd64-usr/" + version + "/",
		FileName: "flatcar_production_update.gz", Size: 465881871,
		SHA1:   "bh+HmSJWrofZCGq9+Zwr00Id9cE=",
		SHA256: "3twpmKMOhUE4jamEnUBDF37BM70/RU3ZA6de281oiNs=",
	})
	if err != nil && !errors.Is(err, store.ErrConflict) {
		return store.Group{}, fmt.Errorf("prepare: %w", err)
	}
	if err := svc.SetChannelPackage(ctx, appID, g.Channel, version); err != nil {
		return store.Group{}, fmt.Errorf("prepare: %w", err)
	}
	g, err = st.GetGroup(ctx, appID, g.Name)
	if err != nil {
		return store.Group{}, fmt.Errorf("prepare: %w", err)
	}
	return g, nil
}

// register inserts n instances (simulated machines 0..n-1) into group in
// one store transaction, running version, with the identity attributes the
// simulated machines send, so their checks find nothing to change. Their
// last check is lastSeenAge ago: 0 keeps steady-state checks read-only for
// the server's last-seen resolution; an age above it makes each machine's
// first check write its row, as in a real fleet checking every ~45 min.
func (p *inProcess) register(ctx context.Context, g store.Group, n int, version string, lastSeenAge time.Duration) error {
	now := time.Now().UTC()
	err := p.srv.Store().Update(ctx, func(q store.TxQueries) error {
		for i := range n {
			err := q.PutInstance(ctx, store.Instance{
				AppID: g.AppID, MachineID: machineID(i), IP: simIP,
				OEM: simOEM, OEMVersion: simOEMVersion, AlephVersion: version, Board: simBoard,
				Group: g.Name, Version: version, Status: store.StatusIdle,
				LastCheck: now.Add(-lastSeenAge), StatusChanged: now, CreatedAt: now,
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("register %d instances: %w", n, err)
	}
	return nil
}
