package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/flotilla/flotilla/internal/fleetlock"
)

// FleetLockConfig is the contention workload of `flotilla bench
// fleetlock`: Machines clients contend for Slots slots of one group over
// FleetLock HTTP, each holding a granted slot for Hold, for Duration.
type FleetLockConfig struct {
	BaseURL  string // e.g. http://127.0.0.1:8080/fleetlock
	Group    string
	Machines int
	Slots    int
	Hold     time.Duration
	Duration time.Duration
	// Retry is how long a machine waits after a "full" answer before it
	// asks again (the server may also hold the request until a slot frees).
	Retry time.Duration
	// Uncontended lock+unlock cycles measured first, alone.
	Uncontended int
}

// DefaultFleetLockConfig is the workload the issue specifies.
func DefaultFleetLockConfig() FleetLockConfig {
	return FleetLockConfig{Group: "bench", Machines: 50, Slots: 3, Hold: 50 * time.Millisecond,
		Duration: 30 * time.Second, Retry: 20 * time.Millisecond, Uncontended: 1000}
}

// FleetLockResult is what the run measured.
type FleetLockResult struct {
	Cycles       int64         `json:"cycles"`
	CyclesPerSec float64       `json:"cycles_per_sec"`
	Limit        float64       `json:"limit_cycles_per_sec"` // slots / hold
	LongestWait  time.Duration `json:"-"`
	// MinCycles and MaxCycles per machine show fairness: nobody starved.
	MinCycles int `json:"min_cycles_per_machine"`
	MaxCycles int `json:"max_cycles_per_machine"`
	// Full answers are expected (the group is full); every other failed
	// request counts in Failed, by kind.
	FullAnswers int64            `json:"full_answers"`
	Failed      map[string]int64 `json:"failed"`
	// MaxHolders is the most machines that believed they held a slot at
	// the same time (must not exceed Slots).
	MaxHolders       int           `json:"max_concurrent_holders"`
	UncontendedP50   time.Duration `json:"-"`
	UncontendedP99   time.Duration `json:"-"`
	UncontendedCount int           `json:"uncontended_cycles"`
}

// Summary is one human line per figure.
func (r FleetLockResult) Summary() string {
	return fmt.Sprintf(`cycles:              %d in the run, %.1f/s (limit %.1f/s, ratio %.2f)
longest wait:        %s
cycles per machine:  min %d, max %d
full answers:        %d (expected)
failed requests:     %v
max holders at once: %d
uncontended lock+unlock (%d cycles): p50 %s, p99 %s
`, r.Cycles, r.CyclesPerSec, r.Limit, r.CyclesPerSec/r.Limit, r.LongestWait.Round(time.Millisecond),
		r.MinCycles, r.MaxCycles, r.FullAnswers, r.Failed, r.MaxHolders,
		r.UncontendedCount, r.UncontendedP50.Round(10*time.Microsecond), r.UncontendedP99.Round(10*time.Microsecond))
}

// RunFleetLock runs the workload against cfg.BaseURL.
func RunFleetLock(ctx context.Context, cfg FleetLockConfig) (FleetLockResult, error) {
	res := FleetLockResult{Failed: map[string]int64{}, Limit: float64(cfg.Slots) / cfg.Hold.Seconds()}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Machines + 4}, Timeout: time.Minute}
	client := &fleetlock.Client{BaseURL: cfg.BaseURL, HTTP: hc}

	// Uncontended latency first, on a group of its own.
	lat := make([]time.Duration, 0, cfg.Uncontended)
	for i := 0; i < cfg.Uncontended; i++ {
		start := time.Now()
		if err := client.PreReboot(ctx, cfg.Group+"-solo", "solo"); err != nil {
			return res, fmt.Errorf("uncontended lock: %w", err)
		}
		if err := client.SteadyState(ctx, cfg.Group+"-solo", "solo"); err != nil {
			return res, fmt.Errorf("uncontended unlock: %w", err)
		}
		lat = append(lat, time.Since(start))
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		res.UncontendedP50, res.UncontendedP99 = percentile(lat, 50), percentile(lat, 99)
		res.UncontendedCount = len(lat)
	}

	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	var (
		mu      sync.Mutex
		holders int
		cycles  = make([]int, cfg.Machines)
		wg      sync.WaitGroup
	)
	fail := func(err error) {
		kind := "transport"
		var ae *fleetlock.APIError
		if errors.As(err, &ae) {
			kind = ae.Kind
		}
		mu.Lock()
		res.Failed[kind]++
		mu.Unlock()
	}
	start := time.Now()
	for m := 0; m < cfg.Machines; m++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("machine-%03d", m)
			for runCtx.Err() == nil {
				asked := time.Now()
				for {
					err := client.PreReboot(runCtx, cfg.Group, id)
					if err == nil {
						break
					}
					if runCtx.Err() != nil {
						return
					}
					if fleetlock.IsFull(err) {
						mu.Lock()
						res.FullAnswers++
						mu.Unlock()
					} else {
						fail(err)
					}
					select {
					case <-runCtx.Done():
						return
					case <-time.After(cfg.Retry):
					}
				}
				waited := time.Since(asked)
				mu.Lock()
				holders++
				res.MaxHolders = max(res.MaxHolders, holders)
				res.LongestWait = max(res.LongestWait, waited)
				mu.Unlock()
				time.Sleep(cfg.Hold) // the simulated reboot: the work being measured
				mu.Lock()
				holders--
				mu.Unlock()
				// The release must go through even when the run ends.
				rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
				err := client.SteadyState(rctx, cfg.Group, id)
				rcancel()
				if err != nil {
					fail(err)
					continue
				}
				mu.Lock()
				cycles[m]++
				res.Cycles++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	res.CyclesPerSec = float64(res.Cycles) / elapsed.Seconds()
	res.MinCycles, res.MaxCycles = slices.Min(cycles), slices.Max(cycles)
	return res, nil
}

// RunFleetLockInProcess starts a flotilla server (with its embedded etcd)
// in this process, gives cfg.Group cfg.Slots slots and runs the workload
// against its FleetLock endpoint.
func RunFleetLockInProcess(ctx context.Context, cfg FleetLockConfig, logger *slog.Logger) (FleetLockResult, error) {
	p, err := startServer(ctx, OmahaConfig{SQLiteSync: "NORMAL"}, logger, "")
	if err != nil {
		return FleetLockResult{}, err
	}
	defer p.stop()
	if err := p.srv.Locks().SetMax(ctx, cfg.Group, cfg.Slots); err != nil {
		return FleetLockResult{}, fmt.Errorf("set max: %w", err)
	}
	cfg.BaseURL = "http://" + p.srv.Addr() + "/fleetlock"
	return RunFleetLock(ctx, cfg)
}
