package updatesvc

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/flotilla/flotilla/internal/store"
)

// snapshot is an immutable copy of the configuration the Omaha hot path
// reads on every request: applications, groups, channels and packages.
// These change rarely (operator actions), so serving them from memory keeps
// an update check to one indexed instance read.
type snapshot struct {
	loadedAt time.Time
	apps     map[string]store.Application
	groups   map[[2]string]store.Group // (app, track)
	channels map[[2]string]store.Channel
	packages map[[3]string]store.Package // (app, version, arch)
}

// configCache holds the current snapshot. Writers through this process call
// invalidate, which also tells the other replicas (the onInvalidate hook,
// an etcd key they watch); a TTL bounds staleness from writers nobody
// announced (a restore, a hook that failed).
type configCache struct {
	st  store.Store
	ttl time.Duration
	now func() time.Time
	// onInvalidate, if set, announces a local write to other replicas.
	onInvalidate func()

	mu   sync.Mutex
	snap *snapshot
	gen  uint64
}

// invalidate drops the snapshot after a write through this process and
// announces it.
func (c *configCache) invalidate() {
	c.dropLocal()
	if c.onInvalidate != nil {
		c.onInvalidate()
	}
}

// dropLocal drops the snapshot without announcing anything (the change was
// announced by whoever made it).
func (c *configCache) dropLocal() {
	c.mu.Lock()
	c.snap = nil
	c.gen++
	c.mu.Unlock()
}

func (c *configCache) get(ctx context.Context) (*snapshot, error) {
	c.mu.Lock()
	s, gen := c.snap, c.gen
	c.mu.Unlock()
	if s != nil && c.now().Sub(s.loadedAt) < c.ttl {
		return s, nil
	}
	s, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	// Only install the snapshot if nobody invalidated while we loaded;
	// otherwise a write that raced the load could be hidden for a TTL.
	if c.gen == gen {
		c.snap = s
	}
	c.mu.Unlock()
	return s, nil
}

func (c *configCache) load(ctx context.Context) (*snapshot, error) {
	s := &snapshot{
		loadedAt: c.now(),
		apps:     map[string]store.Application{},
		groups:   map[[2]string]store.Group{},
		channels: map[[2]string]store.Channel{},
		packages: map[[3]string]store.Package{},
	}
	apps, err := c.st.ListApps(ctx)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	for _, a := range apps {
		s.apps[a.ID] = a
		groups, err := c.st.ListGroups(ctx, a.ID)
		if err != nil {
			return nil, fmt.Errorf("load config: %w", err)
		}
		for _, g := range groups {
			s.groups[[2]string{a.ID, g.Track}] = g
		}
		chans, err := c.st.ListChannels(ctx, a.ID)
		if err != nil {
			return nil, fmt.Errorf("load config: %w", err)
		}
		for _, ch := range chans {
			s.channels[[2]string{a.ID, ch.Name}] = ch
		}
		pkgs, err := c.st.ListPackages(ctx, a.ID)
		if err != nil {
			return nil, fmt.Errorf("load config: %w", err)
		}
		for _, p := range pkgs {
			s.packages[[3]string{a.ID, p.Version, p.Arch}] = p
		}
	}
	return s, nil
}
