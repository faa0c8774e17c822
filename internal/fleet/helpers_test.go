package fleet

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// testLogger discards unless FLOTILLA_FLEET_TEST_LOG is set (to a slog
// level), since agents and engines outlive individual assertions.
func testLogger() *slog.Logger {
	lv := os.Getenv("FLOTILLA_FLEET_TEST_LOG")
	if lv == "" {
		return slog.New(slog.DiscardHandler)
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(lv))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// runner runs a component's Run in the background until stopped.
type runner struct {
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

func start(t *testing.T, run func(context.Context) error) *runner {
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		if err := run(ctx); err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	t.Cleanup(r.stop)
	return r
}

func (r *runner) stop() {
	r.once.Do(func() {
		r.cancel()
		<-r.done
	})
}

const (
	testGrace = 2 * time.Second
	testTTL   = time.Second
)

func startEngine(t *testing.T, cli *clientv3.Client, id string) (*Engine, *runner) {
	t.Helper()
	e, err := NewEngine(cli, EngineConfig{ID: id, Grace: testGrace, SessionTTL: time.Second, Debounce: 50 * time.Millisecond},
		testLogger().With("engine", id), nil)
	if err != nil {
		t.Fatal(err)
	}
	return e, start(t, e.Run)
}

func startAgent(t *testing.T, cli *clientv3.Client, id string, meta map[string]string) *runner {
	t.Helper()
	_, r := startUnitAgent(t, cli, id, meta)
	return r
}

func startUnitAgent(t *testing.T, cli *clientv3.Client, id string, meta map[string]string) (*UnitAgent, *runner) {
	t.Helper()
	cfg := DefaultAgentConfig()
	cfg.Machine = Machine{ID: id, Address: "127.0.0.1", Metadata: meta, Version: "test"}
	cfg.PresenceTTL, cfg.Grace, cfg.StateInterval = testTTL, testGrace, 200*time.Millisecond
	drv := NewProcessDriver(ProcessConfig{Env: []string{"FLOTILLA_MACHINE_ID=" + id}, MaxStopTimeout: 2 * time.Second}, nil)
	a, err := NewUnitAgent(cli, cfg, drv, testLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return a, start(t, a.Run)
}

// loggingUnit is a unit body whose process appends "start <unit>
// <machine>" to log when it starts and "stop <unit> <machine>" when it is
// terminated; the file's order is the order things happened in.
func loggingUnit(log, fleet string) string {
	body := "[Unit]\nDescription=test unit %n\n[Service]\n" +
		`ExecStart=/bin/sh -c 'trap "echo \"stop %n $FLOTILLA_MACHINE_ID\" >> ` + log + `; exit 0" TERM; ` +
		`echo "start %n $FLOTILLA_MACHINE_ID" >> ` + log + `; sleep 1000 & wait'` + "\n"
	if fleet != "" {
		body += "[X-Fleet]\n" + strings.ReplaceAll(fleet, ";", "\n") + "\n"
	}
	return body
}

// logEvent is one line of a loggingUnit log.
type logEvent struct{ kind, unit, machine string }

func readLog(t *testing.T, path string) []logEvent {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var evs []logEvent
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		w := strings.Fields(sc.Text())
		if len(w) == 3 {
			evs = append(evs, logEvent{w[0], w[1], w[2]})
		}
	}
	return evs
}

// checkNeverTwice fails if the log shows a non-global unit running on two
// machines at once, or any unit started twice on one machine without a
// stop in between.
func checkNeverTwice(t *testing.T, evs []logEvent, global map[string]bool) {
	t.Helper()
	running := map[string]map[string]bool{}
	for i, e := range evs {
		if running[e.unit] == nil {
			running[e.unit] = map[string]bool{}
		}
		on := running[e.unit]
		switch e.kind {
		case "start":
			if on[e.machine] {
				t.Errorf("line %d: %s started twice on %s", i+1, e.unit, e.machine)
			}
			if len(on) > 0 && !global[e.unit] {
				t.Errorf("line %d: %s started on %s while running on %v", i+1, e.unit, e.machine, on)
			}
			on[e.machine] = true
		case "stop":
			delete(on, e.machine)
		}
	}
}

// starts counts start lines per unit.
func starts(evs []logEvent) map[string]int {
	n := map[string]int{}
	for _, e := range evs {
		if e.kind == "start" {
			n[e.unit]++
		}
	}
	return n
}

// activeOn returns, per unit, the machines that report it active and are
// assigned it, read through reg.
func activeOn(ctx context.Context, reg *Registry) (map[string][]string, Snapshot, error) {
	s, err := reg.Snapshot(ctx)
	if err != nil {
		return nil, s, err
	}
	assigned := map[string]bool{}
	for _, a := range s.Assignments {
		assigned[a.Unit+"|"+a.Machine] = true
	}
	out := map[string][]string{}
	for _, st := range s.States {
		if st.Active == "active" && assigned[st.Unit+"|"+st.Machine] {
			out[st.Unit] = append(out[st.Unit], st.Machine)
		}
	}
	return out, s, nil
}

func machineID(i int) string { return fmt.Sprintf("m%02d", i) }
