// Package replica holds what several `flotilla server` replicas share
// through etcd so that any of them can answer any request:
//
//   - Leader runs a job (retention, grant-timeout sweeps, version samples)
//     on exactly one replica at a time, through an etcd election;
//   - Bus tells every replica that something changed (the update service's
//     configuration cache), through a watched key;
//   - SharedSecret makes every replica use the same dashboard session key;
//   - Revocations are signed-out dashboard sessions, kept in etcd under
//     leases that end when the sessions would have expired.
//
// A single server uses the same code against its embedded etcd member, so
// there is one code path whether there is one replica or ten.
package replica

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// DefaultPrefix is where replicas keep their shared keys.
const DefaultPrefix = "/flotilla/replica/"

// Leader runs fn while this process leads the election name, and campaigns
// again when it loses the lead (session expiry after an etcd partition, or
// fn returning). fn's context ends when the lead is lost. Leader returns
// when ctx ends. ttl is the session lease in seconds: how long a crashed
// leader keeps the job from running elsewhere.
func Leader(ctx context.Context, cli *clientv3.Client, prefix, name string, ttl int, logger *slog.Logger, leading prometheus.Gauge, fn func(ctx context.Context) error) error {
	id := randomID()
	for ctx.Err() == nil {
		err := leadOnce(ctx, cli, prefix+"leader/"+name, id, ttl, logger, leading, fn)
		if err != nil && ctx.Err() == nil {
			logger.Warn("leader election", "job", name, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

func leadOnce(ctx context.Context, cli *clientv3.Client, key, id string, ttl int, logger *slog.Logger, leading prometheus.Gauge, fn func(ctx context.Context) error) error {
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(ttl), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	defer sess.Close()
	e := concurrency.NewElection(sess, key)
	if err := Campaign(ctx, e, id); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("campaign: %w", err)
	}
	logger.Info("leading", "job", key, "id", id)
	if leading != nil {
		leading.Set(1)
		defer leading.Set(0)
	}
	jctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- fn(jctx) }()
	select {
	case <-sess.Done():
		// The lease is gone: another replica may lead already, so stop at
		// once rather than run the job twice.
		cancel()
		<-done
		logger.Warn("lost the lead (etcd session ended)", "job", key)
		return nil
	case err := <-done:
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer rcancel()
		_ = e.Resign(rctx)
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("job: %w", err)
		}
		return nil
	}
}

// Campaign is Election.Campaign that returns as soon as ctx ends. On
// cancellation etcd's Campaign resigns with the client's own context, which
// blocks for as long as etcd is unreachable; a shutdown must not wait for
// that. The abandoned call ends when the client is closed.
func Campaign(ctx context.Context, e *concurrency.Election, val string) error {
	done := make(chan error, 1)
	go func() { done <- e.Campaign(ctx, val) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Bus announces changes between replicas: Publish writes a new value under
// the topic's key, and every replica's Watch callback runs once per change
// it sees (its own included). A watch that falls behind a compaction
// simply calls back once more: the callbacks are invalidations, so an
// extra call is harmless and a missed one is not possible.
type Bus struct {
	cli    *clientv3.Client
	prefix string
	log    *slog.Logger
}

// NewBus returns a bus under prefix (DefaultPrefix + "bus/" by default).
func NewBus(cli *clientv3.Client, prefix string, logger *slog.Logger) *Bus {
	return &Bus{cli: cli, prefix: prefix + "bus/", log: logger}
}

// Publish announces a change of topic.
func (b *Bus) Publish(ctx context.Context, topic string) error {
	if _, err := b.cli.Put(ctx, b.prefix+topic, randomID()); err != nil {
		return fmt.Errorf("bus: publish %s: %w", topic, err)
	}
	return nil
}

// Watch calls fn for every change of topic until ctx ends, and once more
// whenever the watch had to be re-established (changes may have been
// missed meanwhile).
func (b *Bus) Watch(ctx context.Context, topic string, fn func()) error {
	key := b.prefix + topic
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := b.cli.Watch(wctx, key)
		for resp := range wch {
			if err := resp.Err(); err != nil {
				if ctx.Err() == nil {
					b.log.Debug("bus watch", "topic", topic, "err", err)
				}
				break
			}
			if len(resp.Events) > 0 {
				fn()
			}
		}
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		fn()
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	return nil
}

// SharedSecret returns the secret every replica uses under name: the one
// already in etcd, or local when there is none yet (so a single server that
// had a key keeps its sessions when it starts sharing).
func SharedSecret(ctx context.Context, cli *clientv3.Client, prefix, name string, local []byte) ([]byte, error) {
	key := prefix + "secret/" + name
	resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(local))).
		Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return nil, fmt.Errorf("shared secret %s: %w", name, err)
	}
	if resp.Succeeded {
		return local, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return nil, errors.New("shared secret " + name + ": vanished")
	}
	return kvs[0].Value, nil
}

// Revocations are signed-out session ids shared by every replica. Each is a
// key under a lease that ends when the session would have expired anyway;
// every replica mirrors the set in memory through a watch, so checking a
// request costs no etcd read.
type Revocations struct {
	cli    *clientv3.Client
	prefix string
	log    *slog.Logger

	mu    sync.Mutex
	ids   map[string]struct{}
	ready chan struct{}
	once  sync.Once
}

// NewRevocations returns the shared set; Run keeps it current.
func NewRevocations(cli *clientv3.Client, prefix string, logger *slog.Logger) *Revocations {
	return &Revocations{cli: cli, prefix: prefix + "revoked/", log: logger, ids: map[string]struct{}{}, ready: make(chan struct{})}
}

// Revoke records id as signed out until expires.
func (r *Revocations) Revoke(ctx context.Context, id string, expires time.Time) error {
	ttl := int64(time.Until(expires).Seconds()) + 1
	if ttl <= 1 {
		return nil
	}
	lease, err := r.cli.Grant(ctx, ttl)
	if err != nil {
		return fmt.Errorf("revoke session: %w", err)
	}
	if _, err := r.cli.Put(ctx, r.prefix+id, "", clientv3.WithLease(lease.ID)); err != nil {
		return fmt.Errorf("revoke session: %w", err)
	}
	// Visible on this replica at once, not only when the watch delivers.
	r.mu.Lock()
	r.ids[id] = struct{}{}
	r.mu.Unlock()
	return nil
}

// Revoked reports whether id was signed out (on any replica).
func (r *Revocations) Revoked(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.ids[id]
	return ok
}

// Ready is closed once the set was loaded from etcd for the first time.
func (r *Revocations) Ready() <-chan struct{} { return r.ready }

// Run loads the set and follows it until ctx ends.
func (r *Revocations) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		resp, err := r.cli.Get(ctx, r.prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("load revoked sessions", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
			continue
		}
		ids := map[string]struct{}{}
		for _, kv := range resp.Kvs {
			ids[string(kv.Key[len(r.prefix):])] = struct{}{}
		}
		r.mu.Lock()
		r.ids = ids
		r.mu.Unlock()
		r.once.Do(func() { close(r.ready) })

		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for w := range r.cli.Watch(wctx, r.prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
			if w.Err() != nil {
				break // re-list: the watch was compacted or lost its leader
			}
			r.mu.Lock()
			for _, ev := range w.Events {
				id := string(ev.Kv.Key[len(r.prefix):])
				if ev.Type == clientv3.EventTypeDelete {
					delete(r.ids, id)
				} else {
					r.ids[id] = struct{}{}
				}
			}
			r.mu.Unlock()
		}
		cancel()
	}
	return nil
}

func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
