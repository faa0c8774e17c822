package rebootlock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flotilla/flotilla/internal/etcdtest"
)

// seedEnv names the environment variable that fixes TestSafetyUnderFaults'
// seed (one subtest) to replay a failure; by default three seeds are drawn
// from the clock and printed in the subtest names.
const seedEnv = "FLOTILLA_SAFETY_SEED"

// TestSafetyUnderFaults checks the semaphore's one promise — never more
// than max machines rebooting or not yet healthy — end to end, against a
// real three-member etcd cluster while members are killed, restarted and
// partitioned (one at a time, and briefly two at once, which stops progress
// but must not break safety) and machines crash at any point of their reboot
// procedure, restarting from whatever etcd says they hold.
//
// Each simulated machine runs the agent's cycle: Lock (polling until
// granted; recursive, so a restarted machine gets its slot back), then
// MarkRebooting (the re-check), then "reboots" (downtime, new boot id),
// then, seeing its slot marked rebooting under an older boot id, reports
// healthy and Releases with its token. The shared history records each
// authorised reboot from MarkRebooting's success to the healthy report.
// After the faults stop, every machine must complete further cycles.
func TestSafetyUnderFaults(t *testing.T) {
	t.Parallel()
	var seeds []uint64
	if s := os.Getenv(seedEnv); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", seedEnv, s, err)
		}
		seeds = []uint64{seed}
	} else {
		base := uint64(time.Now().UnixNano())
		seeds = []uint64{base % 100000, (base/7 + 1) % 100000, (base/13 + 2) % 100000}
	}
	faultPhase := 10 * time.Second
	if testing.Short() {
		faultPhase = 4 * time.Second
	}
	// The seeds run in parallel, each on its own cluster: the test mostly
	// waits (downtimes, restarts), so this buys longer fault phases within
	// the same wall time. Under the race detector the CPU is the limit, and
	// parallel seeds only starve each other (and their etcd elections).
	if raceEnabled {
		faultPhase = min(faultPhase, 5*time.Second)
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			if !raceEnabled {
				t.Parallel()
			}
			runSafety(t, seed, faultPhase)
		})
	}
}

const (
	safetyMachines = 20
	safetyMax      = 2
	safetyCycles   = 2 // cycles each machine must complete once faults stop
	safetyGroup    = "fleet"
)

// rebootHistory is the ground truth of which machines are down for an
// authorised reboot (or up but not yet reported healthy).
type rebootHistory struct {
	mu         sync.Mutex
	limit      int
	down       map[string]int64 // machine → token that authorised its reboot
	maxSeen    int
	starts     int
	ends       int
	violations []string
	recent     []string // last entries, printed on failure
}

func (h *rebootHistory) note(format string, args ...any) {
	h.recent = append(h.recent, time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
	if len(h.recent) > 40 {
		h.recent = h.recent[1:]
	}
}

// start records that id begins the reboot authorised under token.
func (h *rebootHistory) start(id string, token int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.down[id]; ok {
		return
	}
	h.down[id] = token
	h.starts++
	h.maxSeen = max(h.maxSeen, len(h.down))
	h.note("start %s token %d (%d down)", id, token, len(h.down))
	if len(h.down) > h.limit {
		h.violations = append(h.violations, fmt.Sprintf("%d machines rebooting at once: %v", len(h.down), h.down))
	}
}

// end records that id is back and healthy. An end without a start (the
// machine crashed after marking but before it began the reboot, or after
// its healthy report but before releasing) is not an interval.
func (h *rebootHistory) end(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.down[id]; !ok {
		return
	}
	delete(h.down, id)
	h.ends++
	h.note("end %s (%d down)", id, len(h.down))
}

// safetyRun is one seed's run.
type safetyRun struct {
	t        *testing.T
	cluster  *etcdtest.Cluster
	hist     *rebootHistory
	machines []*machine

	// fault and outcome counters
	memberKills, doubleKills, partitions, leaderKills atomic.Int64
	machineCrashes, selfCrashes                       atomic.Int64
	lockErrors                                        atomic.Int64 // etcd unavailable etc. (retried)
	conflicts                                         atomic.Int64
}

type machine struct {
	id  string
	cli *clientv3.Client
	m   *Manager
	run *safetyRun
	rng *rand.Rand // used only by the machine's goroutine

	cycles atomic.Int64 // completed cycles (released after a healthy boot)
	boots  int

	mu       sync.Mutex
	crash    context.CancelFunc // cancels the current boot; nil while down
	extended bool               // crashed while down: stay down longer
}

// crashNow makes the machine lose power: its current boot ends wherever it
// is (an etcd request may or may not have been applied), or, if it is down
// already, it stays down longer.
func (mc *machine) crashNow() {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	if mc.crash != nil {
		mc.crash()
		mc.crash = nil
	} else {
		mc.extended = true
	}
}

func runSafety(t *testing.T, seed uint64, faultPhase time.Duration) {
	t.Logf("seed %d (rerun with %s=%d)", seed, seedEnv, seed)
	c := etcdtest.Start(t, 3)
	r := &safetyRun{
		t:       t,
		cluster: c,
		hist:    &rebootHistory{limit: safetyMax, down: map[string]int64{}},
	}
	admin := newTestManager(t, c.Client(t), Config{WaiterTTL: 2 * time.Second})
	if err := admin.SetMax(opCtx(t), safetyGroup, safetyMax); err != nil {
		t.Fatal(err)
	}
	holders := watchHolders(t, c.Client(t), admin, safetyGroup)
	for i := range safetyMachines {
		cli := c.Client(t)
		r.machines = append(r.machines, &machine{
			id:  fmt.Sprintf("machine-%02d", i),
			cli: cli,
			m:   newTestManager(t, cli, Config{WaiterTTL: 2 * time.Second}),
			run: r,
			rng: rand.New(rand.NewPCG(seed, uint64(i)+1)),
		})
	}

	machinesCtx, stopMachines := context.WithCancel(context.Background())
	defer stopMachines()
	var machinesWG sync.WaitGroup
	for _, mc := range r.machines {
		machinesWG.Go(func() { mc.live(machinesCtx) })
	}

	// Fault phase.
	faultCtx, stopFaults := context.WithTimeout(t.Context(), faultPhase)
	var faultsWG sync.WaitGroup
	faultsWG.Go(func() { r.etcdFaults(faultCtx, rand.New(rand.NewPCG(seed, 1000))) })
	faultsWG.Go(func() { r.machineFaults(faultCtx, rand.New(rand.NewPCG(seed, 2000))) })
	faultsWG.Wait()
	stopFaults()
	for i := range c.Size() { // the injectors undo their faults; make sure
		c.Heal(i)
		if err := c.Restart(i); err != nil {
			t.Fatal(err)
		}
	}
	hctx, hcancel := context.WithTimeout(t.Context(), 30*time.Second)
	if err := c.WaitHealthy(hctx); err != nil {
		t.Fatal(err)
	}
	hcancel()
	faultCycles := r.totalCycles()

	// Recovery phase: every machine completes safetyCycles more cycles.
	base := make([]int64, len(r.machines))
	for i, mc := range r.machines {
		base[i] = mc.cycles.Load()
	}
	recoveryStart := time.Now()
	waitFor(t, 90*time.Second, func() error {
		var behind []string
		for i, mc := range r.machines {
			if got := mc.cycles.Load() - base[i]; got < safetyCycles {
				behind = append(behind, fmt.Sprintf("%s:%d", mc.id, got))
			}
		}
		if len(behind) > 0 {
			return fmt.Errorf("machines short of %d cycles after the faults: %s", safetyCycles, strings.Join(behind, " "))
		}
		return nil
	})
	recovery := time.Since(recoveryStart)
	stopMachines()
	machinesWG.Wait()

	st := holders.finish(t, safetyMax, 0)

	r.hist.mu.Lock()
	defer r.hist.mu.Unlock()
	if len(r.hist.violations) > 0 {
		t.Errorf("seed %d: safety violated:\n%s\nrecent history:\n%s", seed,
			strings.Join(r.hist.violations, "\n"), strings.Join(r.hist.recent, "\n"))
	}
	if r.hist.maxSeen > safetyMax {
		t.Errorf("seed %d: up to %d machines rebooting at once, max %d", seed, r.hist.maxSeen, safetyMax)
	}
	for _, m := range append([]*Manager{admin}, r.machineManagers()...) {
		r.conflicts.Add(int64(metricValue(t, m.metrics.conflicts)))
	}
	t.Logf("seed %d: %d machines, max %d; %d cycles during %v of faults, %d total (recovery of %d cycles each took %v)",
		seed, safetyMachines, safetyMax, faultCycles, faultPhase, r.totalCycles(), safetyCycles, recovery.Round(time.Millisecond))
	t.Logf("seed %d: faults: %d member kills (%d of the leader), %d double kills, %d partitions, %d machine crashes injected, %d self-crashes at protocol steps",
		seed, r.memberKills.Load(), r.leaderKills.Load(), r.doubleKills.Load(), r.partitions.Load(), r.machineCrashes.Load(), r.selfCrashes.Load())
	t.Logf("seed %d: reboots started %d, ended %d; max concurrent reboots %d; etcd history: %d grants, %d releases, max %d holders; %d retried etcd errors, %d txn conflicts",
		seed, r.hist.starts, r.hist.ends, r.hist.maxSeen, st.grants, st.releases, st.maxHolders, r.lockErrors.Load(), r.conflicts.Load())
}

func (r *safetyRun) totalCycles() int64 {
	var n int64
	for _, mc := range r.machines {
		n += mc.cycles.Load()
	}
	return n
}

func (r *safetyRun) machineManagers() []*Manager {
	var ms []*Manager
	for _, mc := range r.machines {
		ms = append(ms, mc.m)
	}
	return ms
}

// etcdFaults kills, restarts and partitions members until ctx ends, one
// fault at a time, each undone before the next.
func (r *safetyRun) etcdFaults(ctx context.Context, rng *rand.Rand) {
	c := r.cluster
	pause := func(lo, hi int) bool {
		sleepCtx(ctx, time.Duration(lo+rng.IntN(hi-lo))*time.Millisecond)
		return ctx.Err() == nil
	}
	restart := func(i int) {
		if err := c.Restart(i); err != nil {
			r.t.Errorf("restart member %d: %v", i, err)
		}
	}
	for pause(50, 200) {
		n := c.Size()
		// Weights out of 20. A kill costs about a second (a restarted
		// member waits for its old incarnation to release the peer port),
		// a partition costs only its duration.
		switch k := rng.IntN(20); {
		case k < 6: // one member down
			i := rng.IntN(n)
			c.Kill(i)
			r.memberKills.Add(1)
			pause(100, 600)
			restart(i)
		case k < 10: // the leader down: forces an election
			i := r.leader()
			if i < 0 {
				continue
			}
			c.Kill(i)
			r.memberKills.Add(1)
			r.leaderKills.Add(1)
			pause(100, 600)
			restart(i)
		case k < 17: // a minority partition
			i := rng.IntN(n)
			c.Partition(i)
			r.partitions.Add(1)
			pause(200, 700)
			c.Heal(i)
		default: // two of three down: no quorum, no progress, still safe
			i := rng.IntN(n)
			j := (i + 1 + rng.IntN(n-1)) % n
			c.Kill(i)
			c.Kill(j)
			r.doubleKills.Add(1)
			r.memberKills.Add(2)
			sleepCtx(context.Background(), time.Duration(100+rng.IntN(300))*time.Millisecond)
			restart(i)
			restart(j)
		}
	}
}

// leader returns the index of the member that is currently leader, or -1.
func (r *safetyRun) leader() int {
	for i := range r.cluster.Size() {
		e := r.cluster.Etcd(i)
		if e != nil && e.Server.Leader() == e.Server.MemberID() {
			return i
		}
	}
	return -1
}

// machineFaults crashes random machines until ctx ends.
func (r *safetyRun) machineFaults(ctx context.Context, rng *rand.Rand) {
	for {
		sleepCtx(ctx, time.Duration(30+rng.IntN(150))*time.Millisecond)
		if ctx.Err() != nil {
			return
		}
		r.machines[rng.IntN(len(r.machines))].crashNow()
		r.machineCrashes.Add(1)
	}
}

// live runs the machine: boots until it reboots or crashes, stays down a
// while, boots again, until ctx ends.
func (mc *machine) live(ctx context.Context) {
	for ctx.Err() == nil {
		bootCtx, crash := context.WithCancel(ctx)
		mc.mu.Lock()
		mc.crash = crash
		mc.extended = false
		mc.mu.Unlock()

		mc.boots++
		mc.boot(bootCtx, fmt.Sprintf("%s-boot-%d", mc.id, mc.boots))

		mc.mu.Lock()
		mc.crash = nil
		mc.mu.Unlock()
		crash()
		// Down: a reboot takes 10-50 ms, a crash while down adds more.
		sleepCtx(ctx, time.Duration(10+mc.rng.IntN(40))*time.Millisecond)
		mc.mu.Lock()
		extended := mc.extended
		mc.mu.Unlock()
		if extended {
			sleepCtx(ctx, time.Duration(50+mc.rng.IntN(250))*time.Millisecond)
		}
	}
}

// selfCrash decides whether the machine crashes at a protocol step, so that
// crashes land exactly between the steps and not only while polling.
func (mc *machine) selfCrash() bool {
	if mc.rng.IntN(100) < 5 {
		mc.run.selfCrashes.Add(1)
		return true
	}
	return false
}

// boot is one boot of the machine's agent; it returns when the machine
// reboots (authorised) or crashes (ctx cancelled).
func (mc *machine) boot(ctx context.Context, bootID string) {
	r := mc.run
	for ctx.Err() == nil {
		// Recursive lock: on a machine that holds a slot (it crashed, or
		// it is back from the reboot) this returns that slot.
		h, ok := mc.lockUntilGranted(ctx, bootID)
		if !ok {
			return
		}
		if h.Phase == PhaseRebooting && h.BootID != bootID {
			// Back from the reboot this slot authorised, and healthy.
			r.hist.end(mc.id)
			if mc.selfCrash() {
				return
			}
			err := mc.retry(ctx, func(ctx context.Context) error { return mc.m.Release(ctx, safetyGroup, mc.id, h.Token) })
			if err != nil {
				if !errors.Is(err, context.Canceled) {
					r.t.Errorf("%s: release token %d: %v", mc.id, h.Token, err)
				}
				return
			}
			mc.cycles.Add(1)
			continue
		}
		// Granted (now, or in a boot that crashed before rebooting).
		if mc.selfCrash() {
			return
		}
		var marked Holder
		err := mc.retry(ctx, func(ctx context.Context) error {
			var err error
			marked, err = mc.m.MarkRebooting(ctx, safetyGroup, mc.id, h.Token)
			return err
		})
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				// Nobody force-unlocks in this test: the slot must still be ours.
				r.t.Errorf("%s: mark rebooting token %d: %v", mc.id, h.Token, err)
			}
			return
		}
		r.hist.start(mc.id, marked.Token)
		return // reboot
	}
}

// lockUntilGranted polls Lock until granted; false when ctx ends.
func (mc *machine) lockUntilGranted(ctx context.Context, bootID string) (Holder, bool) {
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		h, err := mc.m.Lock(cctx, safetyGroup, mc.id, LockInfo{BootID: bootID, VersionFrom: "1.0", VersionTo: "1.1"})
		cancel()
		if err == nil {
			return h, true
		}
		if ctx.Err() != nil {
			return Holder{}, false
		}
		if !errors.Is(err, ErrFull) {
			mc.run.lockErrors.Add(1)
		}
		sleepCtx(ctx, time.Duration(20+mc.rng.IntN(40))*time.Millisecond) // poll interval
	}
}

// retry runs op with a per-call timeout until it succeeds, fails with one
// of the package's sentinel errors, or ctx ends (context.Canceled).
func (mc *machine) retry(ctx context.Context, op func(context.Context) error) error {
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := op(cctx)
		cancel()
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return context.Canceled
		case slices.ContainsFunc([]error{ErrTokenMismatch, ErrNotHolder, ErrInvalidID, ErrInvalidGroup}, func(e error) bool { return errors.Is(err, e) }):
			return err
		}
		mc.run.lockErrors.Add(1)
		sleepCtx(ctx, time.Duration(10+mc.rng.IntN(30))*time.Millisecond)
	}
}
