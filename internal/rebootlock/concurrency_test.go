package rebootlock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flotilla/flotilla/internal/etcdtest"
)

// TestConcurrentLockUnlock hammers one group of max 3 from 50 goroutines
// (ten Managers on five clients, like several servers): Lock must only ever
// fail with ErrFull (conflicts are retried inside), the holder count read
// back at every grant's revision must be ≤ 3, and the full create/delete
// history from a watch must never exceed 3. FIFO means every goroutine
// gets slots, too.
func TestConcurrentLockUnlock(t *testing.T) {
	t.Parallel()
	const (
		workers = 50
		limit   = 3
		group   = "hammer"
	)
	duration := 4 * time.Second
	if testing.Short() {
		duration = 2 * time.Second
	}
	c := etcdtest.Start(t, 1)
	clis := make([]*clientv3.Client, 5)
	for i := range clis {
		clis[i] = c.Client(t)
	}
	ms := make([]*Manager, 10)
	for i := range ms {
		ms[i] = newTestManager(t, clis[i%len(clis)], Config{})
	}
	if err := ms[0].SetMax(opCtx(t), group, limit); err != nil {
		t.Fatal(err)
	}
	hist := watchHolders(t, clis[0], ms[0], group)

	type grant struct {
		id    string
		token int64
	}
	var (
		mu       sync.Mutex
		grants   []grant
		perID    = map[string]int{}
		fulls    atomic.Int64
		slow     atomic.Int64
		failures atomic.Int64
	)
	ctx, cancel := context.WithTimeout(t.Context(), duration)
	defer cancel()
	hardDeadline := time.Now().Add(duration + 60*time.Second)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			m := ms[w%len(ms)]
			id := fmt.Sprintf("node-%02d", w)
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			// Run for the test's duration, and beyond it (up to a hard
			// deadline) until this worker got a slot: FIFO promises that
			// everybody's turn comes, on slow machines and under -race too.
			mine := 0
			for ctx.Err() == nil || (mine == 0 && time.Now().Before(hardDeadline)) {
				// Each call gets its own deadline, not the test's: a call cut
				// short by the end of the test could commit a grant and
				// still report an error.
				lctx, lcancel := context.WithTimeout(context.Background(), 5*time.Second)
				h, err := m.Lock(lctx, group, id, LockInfo{BootID: id})
				lcancel()
				switch {
				case errors.Is(err, ErrFull):
					fulls.Add(1)
					time.Sleep(time.Duration(2+rng.IntN(8)) * time.Millisecond) // poll interval
					continue
				case errors.Is(err, context.DeadlineExceeded):
					// A call that ran out of its own time under load (-race
					// on two busy cores): Lock is recursive, so asking again
					// is what a real agent does, and it returns the slot if
					// the timed-out call did commit a grant.
					slow.Add(1)
					continue
				case err != nil:
					failures.Add(1)
					t.Errorf("%s: lock: %v", id, err)
					return
				}
				mine++
				mu.Lock()
				grants = append(grants, grant{id, h.Token})
				perID[id]++
				mu.Unlock()
				time.Sleep(time.Duration(5+rng.IntN(10)) * time.Millisecond) // "rebooting"
				uctx, ucancel := context.WithTimeout(context.Background(), 5*time.Second)
				released, err := m.Unlock(uctx, group, id)
				ucancel()
				if err != nil || !released {
					failures.Add(1)
					t.Errorf("%s: unlock = %v, %v", id, released, err)
					return
				}
			}
		})
	}
	wg.Wait()

	st := hist.finish(t, limit, 0)
	// Read back the holders at each grant's revision (= its token).
	check := clis[0]
	for _, g := range grants {
		resp, err := check.Get(opCtx(t), ms[0].holdersPrefix(group), clientv3.WithPrefix(), clientv3.WithRev(g.token), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count > limit {
			t.Errorf("at revision %d (grant to %s): %d holders", g.token, g.id, resp.Count)
		}
	}
	var conflicts float64
	for _, m := range ms {
		conflicts += metricValue(t, m.metrics.conflicts)
	}
	if st.grants != len(grants) || st.releases != len(grants) {
		t.Errorf("watch saw %d grants and %d releases; workers recorded %d grants", st.grants, st.releases, len(grants))
	}
	for w := range workers {
		if id := fmt.Sprintf("node-%02d", w); perID[id] == 0 {
			t.Errorf("%s was never granted a slot (starved)", id)
		}
	}
	t.Logf("%d grants over %d revisions, max %d concurrent holders, %d ErrFull polls, %v retried conflicts, %d calls out of time, %d failures",
		len(grants), st.revisions, st.maxHolders, fulls.Load(), conflicts, slow.Load(), failures.Load())
	if len(grants) < workers {
		t.Errorf("only %d grants", len(grants))
	}
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
