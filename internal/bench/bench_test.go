package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/flotilla/flotilla/omaha"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one value p50", ms(7), 50, 7 * time.Millisecond},
		{"one value p99", ms(7), 99, 7 * time.Millisecond},
		{"two values p50 is the lower", ms(1, 2), 50, 1 * time.Millisecond},
		{"two values p51 is the upper", ms(1, 2), 51, 2 * time.Millisecond},
		{"1..100 p50", ms(hundred...), 50, 50 * time.Millisecond},
		{"1..100 p90", ms(hundred...), 90, 90 * time.Millisecond},
		{"1..100 p99", ms(hundred...), 99, 99 * time.Millisecond},
		{"1..100 p100", ms(hundred...), 100, 100 * time.Millisecond},
		{"ten values p99 is the max", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{"ten values p90", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
		{"tiny p rounds up to the first", ms(3, 4, 5), 0.001, 3 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarizeSortsAndTakesMax(t *testing.T) {
	lat := []time.Duration{5, 1, 4, 2, 3}
	got := summarize(lat)
	want := Latency{P50: 3, P90: 5, P99: 5, Max: 5}
	if got != want {
		t.Errorf("summarize = %+v, want %+v", got, want)
	}
}

// TestTemplateMatchesMarshal checks that rendered bodies are exactly what
// omaha.Request.Marshal produces for the machine, and that they parse to
// the identity the in-process server's instances are registered with.
func TestTemplateMatchesMarshal(t *testing.T) {
	kinds := map[string]requestKind{
		"check":    {version: "3975.2.1", aleph: "3975.2.1", check: true, previousVersion: noPreviousVersion},
		"rebooted": {version: "4081.2.0", aleph: "3975.2.1", check: true, previousVersion: "3975.2.1"},
		"event":    {version: "3975.2.1", aleph: "3975.2.1", eventType: omaha.EventTypeUpdateDownloadStarted, eventResult: omaha.EventResultSuccess},
	}
	for name, kind := range kinds {
		t.Run(name, func(t *testing.T) {
			tmpl, err := newBodyTemplate(omaha.FlatcarAppID, "stable", kind)
			if err != nil {
				t.Fatal(err)
			}
			for _, i := range []int{0, 1, 99999} {
				got := tmpl.render(nil, i, 1)
				bootID := string(appendBootID(nil, i, 1))
				want, err := simRequest(omaha.FlatcarAppID, "stable", kind, machineID(i), bootID).Marshal()
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(string(want), string(got)); diff != "" {
					t.Fatalf("machine %d: rendered body differs from Marshal (-want +got):\n%s", i, diff)
				}
				req, err := omaha.ParseRequest(bytes.NewReader(got))
				if err != nil {
					t.Fatalf("machine %d: rendered body does not parse: %v", i, err)
				}
				a := req.Apps[0]
				if a.MachineID != machineID(i) || a.BootID != bootID || a.Version != kind.version || a.AlephVersion != kind.aleph {
					t.Errorf("machine %d: parsed identity %q %q %q %q", i, a.MachineID, a.BootID, a.Version, a.AlephVersion)
				}
				if (a.UpdateCheck != nil) != kind.check || len(a.Events) != 1 {
					t.Errorf("machine %d: parsed updatecheck=%v events=%d, want check=%v and one event", i, a.UpdateCheck != nil, len(a.Events), kind.check)
				}
			}
		})
	}
}

func TestMachineIDs(t *testing.T) {
	seen := map[string]bool{}
	for i := range 10000 {
		id := machineID(i)
		if len(id) != 32 || strings.Trim(id, hexDigits) != "" {
			t.Fatalf("machine %d: id %q is not 32 hex digits", i, id)
		}
		if seen[id] {
			t.Fatalf("machine %d: id %q repeats", i, id)
		}
		seen[id] = true
	}
}

func testLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestRunOmahaCheck runs check mode against a real in-process server and
// the reference handler, and checks that every request got a parsed
// "noupdate" answer.
func TestRunOmahaCheck(t *testing.T) {
	cfg := DefaultOmahaConfig()
	cfg.Machines = 200
	cfg.Concurrency = []int{4}
	cfg.Duration = 0
	cfg.Requests = 300
	cfg.Reference = true
	cfg.SQLiteSync = "NORMAL"
	res, err := RunOmaha(t.Context(), cfg, testLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Instances != 200 || len(res.Phases) != 1 {
		t.Fatalf("instances %d, phases %d; want 200 and 1", res.Instances, len(res.Phases))
	}
	ph := res.Phases[0]
	for _, s := range []Stats{ph.Server, *ph.Reference} {
		if s.Requests != 300 || s.Errors != 0 || s.OmahaErrors != 0 {
			t.Errorf("%s: %d requests, %d errors, %d Omaha errors (first: %s); want 300, 0, 0",
				s.Server, s.Requests, s.Errors, s.OmahaErrors, s.FirstError)
		}
		if diff := cmp.Diff(map[string]int64{omaha.UpdateStatusNoUpdate: 300}, s.Responses); diff != "" {
			t.Errorf("%s: responses (-want +got):\n%s", s.Server, diff)
		}
		if s.Latency.Max <= 0 || s.Latency.P50 > s.Latency.P99 || s.Latency.P99 > s.Latency.Max {
			t.Errorf("%s: inconsistent latency %+v", s.Server, s.Latency)
		}
	}
	if ph.Ratio <= 0 {
		t.Errorf("ratio %v, want > 0", ph.Ratio)
	}
	if res.Failed() != 0 {
		t.Errorf("Failed() = %d, want 0", res.Failed())
	}
	checkReports(t, res)
}

// checkReports renders every format; JSON must decode, text must name the
// server rows.
func checkReports(t *testing.T, res OmahaResult) {
	t.Helper()
	for _, f := range []string{FormatTable, FormatMarkdown, FormatJSON} {
		var b bytes.Buffer
		if err := res.Write(&b, f); err != nil {
			t.Fatalf("write %s: %v", f, err)
		}
		if f == FormatJSON {
			var v map[string]any
			if err := json.Unmarshal(b.Bytes(), &v); err != nil {
				t.Fatalf("json report does not decode: %v\n%s", err, b.String())
			}
			continue
		}
		if strings.Contains(b.String(), "WARNING") {
			t.Errorf("%s report warns about failures:\n%s", f, b.String())
		}
	}
}

// TestRunOmahaExternalServer points check mode at an already running
// endpoint (here the reference handler) instead of an in-process server.
func TestRunOmahaExternalServer(t *testing.T) {
	ref, err := ServeReference(omaha.FlatcarAppID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ref.Close(); err != nil {
			t.Error(err)
		}
	})
	cfg := DefaultOmahaConfig()
	cfg.ServerURL = strings.TrimSuffix(ref.URL, omaha.DefaultPath) // no path: /v1/update/ is assumed
	cfg.Machines = 10
	cfg.Concurrency = []int{2, 3}
	cfg.Duration = 0
	cfg.Requests = 20
	res, err := RunOmaha(t.Context(), cfg, testLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Endpoint != ref.URL || res.Instances != 0 || len(res.Phases) != 2 {
		t.Fatalf("endpoint %q, instances %d, phases %d; want %q, 0, 2", res.Endpoint, res.Instances, len(res.Phases), ref.URL)
	}
	for _, ph := range res.Phases {
		if ph.Server.Requests != 20 || ph.Server.Responses[omaha.UpdateStatusNoUpdate] != 20 {
			t.Errorf("concurrency %d: %d requests, responses %v", ph.Concurrency, ph.Server.Requests, ph.Server.Responses)
		}
	}
}

// TestRunOmahaRollout rolls a release across 50 machines of an in-process
// server and checks the group's final state in the store.
func TestRunOmahaRollout(t *testing.T) {
	cfg := DefaultOmahaConfig()
	cfg.Mode = ModeRollout
	cfg.Machines = 50
	cfg.Concurrency = []int{4}
	cfg.Duration = 5 * time.Minute // an upper bound only: the run ends when all are updated
	cfg.SQLiteSync = "NORMAL"
	res, err := RunOmaha(t.Context(), cfg, testLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	rr := res.Rollout
	if rr == nil {
		t.Fatal("no rollout result")
	}
	if rr.Completed != 50 || rr.Stats.Failed() != 0 {
		t.Errorf("completed %d of 50, %d failed (first error: %s)", rr.Completed, rr.Stats.Failed(), rr.Stats.FirstError)
	}
	// Five requests per machine: check, 13.1, 14.1, 3.1, check after reboot.
	wantResponses := map[string]int64{"ok": 50, "event": 150, "noupdate": 50}
	if diff := cmp.Diff(wantResponses, rr.Stats.Responses); diff != "" || rr.Holds != 0 {
		t.Errorf("holds %d; responses (-want +got):\n%s", rr.Holds, diff)
	}
	want := &FinalStatus{Total: 50, ByVersion: map[string]int{cfg.ToVersion: 50}, ByStatus: map[string]int{"complete": 50}}
	if diff := cmp.Diff(want, rr.Final); diff != "" {
		t.Errorf("group %s final status (-want +got):\n%s", rr.Group, diff)
	}
	checkReports(t, res)
}

func TestRunOmahaInvalidConfig(t *testing.T) {
	tests := map[string]func(*OmahaConfig){
		"bad app id":              func(c *OmahaConfig) { c.AppID = "flatcar" },
		"no machines":             func(c *OmahaConfig) { c.Machines = 0 },
		"unbounded":               func(c *OmahaConfig) { c.Duration, c.Requests = 0, 0 },
		"zero concurrency":        func(c *OmahaConfig) { c.Concurrency = []int{16, 0} },
		"unknown mode":            func(c *OmahaConfig) { c.Mode = "soak" },
		"rollout two levels":      func(c *OmahaConfig) { c.Mode = ModeRollout },
		"rollout to older":        func(c *OmahaConfig) { c.Mode, c.Concurrency, c.ToVersion = ModeRollout, []int{4}, "3000.0.0" },
		"rollout with reference":  func(c *OmahaConfig) { c.Mode, c.Concurrency, c.Reference = ModeRollout, []int{4}, true },
		"server without a scheme": func(c *OmahaConfig) { c.ServerURL = "localhost:8080" },
	}
	for name, mod := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultOmahaConfig()
			mod(&cfg)
			_, err := RunOmaha(t.Context(), cfg, testLogger(), nil)
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("RunOmaha error = %v, want ErrInvalidConfig", err)
			}
		})
	}
}
