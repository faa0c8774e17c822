package updatesvc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/flotilla/flotilla/internal/store"
)

// touchBatcher group-commits last-seen updates. In a real fleet most update
// checks change nothing but the machine's last-seen time, and one write
// transaction per check would make the database's commit rate (one fsync
// each with synchronous=FULL) the server's throughput limit. Requests that
// arrive while a commit is running wait and are committed together in the
// next one; each request is answered only after its commit, so nothing
// acknowledged is lost in a crash.
//
// There is no background goroutine: the first request to find the batcher
// idle commits, and hands the next batch to the first request waiting in
// it, so each request commits at most one batch.
type touchBatcher struct {
	st       store.Store
	maxBatch int

	mu      sync.Mutex
	busy    bool
	pending []*touchReq
}

type touchReq struct {
	appID, machineID string
	at               time.Time
	err              error
	done             chan bool // true: you lead the next commit
}

func (b *touchBatcher) touch(ctx context.Context, appID, machineID string, at time.Time) error {
	r := &touchReq{appID: appID, machineID: machineID, at: at, done: make(chan bool, 1)}
	b.mu.Lock()
	b.pending = append(b.pending, r)
	if b.busy {
		b.mu.Unlock()
		// Wait without watching ctx: a leader may hand this request the
		// next commit, and abandoning it would stall everyone behind it.
		// Commits are bounded by their own timeout.
		if lead := <-r.done; !lead {
			return r.err
		}
		b.mu.Lock()
	}
	b.busy = true
	batch := b.pending
	if len(batch) > b.maxBatch {
		batch = batch[:b.maxBatch]
	}
	b.pending = b.pending[len(batch):]
	b.mu.Unlock()

	b.commit(ctx, batch)

	b.mu.Lock()
	if len(b.pending) > 0 {
		next := b.pending[0]
		b.mu.Unlock()
		next.done <- true
	} else {
		b.busy = false
		b.mu.Unlock()
	}
	for _, o := range batch {
		if o != r {
			o.done <- false
		}
	}
	return r.err
}

func (b *touchBatcher) commit(ctx context.Context, batch []*touchReq) {
	// The batch belongs to many requests: one caller going away must not
	// fail the others' writes.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	err := b.st.Update(ctx, func(q store.TxQueries) error {
		for _, r := range batch {
			r.err = q.TouchInstance(ctx, r.appID, r.machineID, r.at)
			if r.err != nil && !errors.Is(r.err, store.ErrNotFound) {
				return r.err
			}
		}
		return nil
	})
	if err != nil {
		for _, r := range batch {
			r.err = fmt.Errorf("touch instance: %w", err)
		}
	}
}
