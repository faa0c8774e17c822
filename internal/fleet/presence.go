package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// presenceHooks let the unit agent follow the presence lease: states are
// written under it, and keepalive answers prove contact with the cluster.
type presenceHooks struct {
	onLease   func(clientv3.LeaseID) // a new lease holds the presence key
	onContact func(time.Time)        // the cluster answered at this time
}

// Register keeps m's presence key alive under a lease until ctx ends, then
// revokes the lease so the machine shows as unknown at once. If the lease
// is lost (etcd unreachable for longer than the TTL) it registers again
// with backoff. It returns nil when ctx ends, or an error if m is invalid.
func (r *Registry) Register(ctx context.Context, m Machine) error {
	return r.register(ctx, m, presenceHooks{})
}

func (r *Registry) register(ctx context.Context, m Machine, hooks presenceHooks) error {
	if m.ID == "" || strings.ContainsAny(m.ID, "/ \t\n") {
		return fmt.Errorf("register machine %q: invalid id", m.ID)
	}
	m.State, m.Draining, m.LapsedAt = "", false, time.Time{}
	backoff := 100 * time.Millisecond
	for {
		err := r.registerOnce(ctx, m, hooks)
		if ctx.Err() != nil {
			return nil
		}
		r.log.Warn("presence lost, registering again", "machine", m.ID, "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// registerOnce grants a lease, writes the presence and known keys and
// keeps the lease alive until it is lost or ctx ends.
func (r *Registry) registerOnce(ctx context.Context, m Machine, hooks presenceHooks) error {
	ttl := int64((r.cfg.PresenceTTL + time.Second - 1) / time.Second)
	rctx, cancel := context.WithTimeout(ctx, r.cfg.PresenceTTL)
	lease, err := r.cli.Grant(rctx, ttl)
	cancel()
	if err != nil {
		return fmt.Errorf("grant presence lease: %w", err)
	}
	m.RegisteredAt = r.now().UTC()
	val, _ := json.Marshal(m)
	known, _ := json.Marshal(knownRecord{Machine: m})
	rctx, cancel = context.WithTimeout(ctx, r.cfg.PresenceTTL)
	_, err = r.cli.Txn(rctx).Then(
		clientv3.OpPut(r.key(machinesDir, m.ID), string(val), clientv3.WithLease(lease.ID)),
		clientv3.OpPut(r.key(knownDir, m.ID), string(known)),
	).Commit()
	cancel()
	if err != nil {
		return fmt.Errorf("write presence: %w", err)
	}
	kctx, stop := context.WithCancel(ctx)
	defer stop()
	ka, err := r.cli.KeepAlive(kctx, lease.ID)
	if err != nil {
		return fmt.Errorf("keep presence alive: %w", err)
	}
	r.log.Info("machine registered", "machine", m.ID, "lease", int64(lease.ID))
	if hooks.onLease != nil {
		hooks.onLease(lease.ID)
	}
	if hooks.onContact != nil {
		hooks.onContact(r.now())
	}
	for resp := range ka {
		if hooks.onContact != nil && resp != nil {
			hooks.onContact(r.now())
		}
	}
	if ctx.Err() != nil {
		// Shutting down: give the lease back so the engine need not wait
		// for the TTL to notice.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_, _ = r.cli.Revoke(rctx, lease.ID)
		cancel()
		return ctx.Err()
	}
	return fmt.Errorf("presence lease %x expired", int64(lease.ID))
}
