package fleet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla/flotilla/internal/fleet/unitfile"
	"github.com/flotilla/flotilla/internal/testenv"
)

func mustParse(t *testing.T, name, body string) *unitfile.File {
	t.Helper()
	f, err := unitfile.Parse(name, body)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func waitState(t *testing.T, d *ProcessDriver, name, active string) DriverState {
	t.Helper()
	var st DriverState
	testenv.WaitFor(t, 10*time.Second, name+" "+active, func() error {
		st, _ = d.State(context.Background(), name)
		if st.Active != active {
			return fmt.Errorf("state %+v", st)
		}
		return nil
	})
	return st
}

func TestProcessDriver(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	d := NewProcessDriver(ProcessConfig{LogDir: dir, Env: []string{"FROM_AGENT=agent"}, MaxStopTimeout: 2 * time.Second}, nil)
	ctx := context.Background()

	f := mustParse(t, "svc@x.service", "[Service]\n"+
		"Environment=\"GREETING=hello world\" OTHER=1\n"+
		"ExecStartPre=/bin/sh -c 'echo pre-%i >> "+out+"'\n"+
		"ExecStartPre=-/bin/false\n"+
		"ExecStart=/bin/sh -c 'echo \"main ${GREETING} $FROM_AGENT\" >> "+out+"; sleep 1000 & wait'\n"+
		"ExecStop=/bin/sh -c 'echo stop $MAINPID >> "+out+"'\n")
	if err := d.Start(ctx, f); err != nil {
		t.Fatal(err)
	}
	st := waitState(t, d, f.Name.Full, "active")
	if st.Starts != 1 || st.Hash != f.Hash || st.Load != "loaded" {
		t.Errorf("state %+v", st)
	}
	if err := d.Start(ctx, f); err != nil { // same body: no restart
		t.Fatal(err)
	}
	if err := d.Stop(ctx, f.Name.Full); err != nil {
		t.Fatal(err)
	}
	if st, _ := d.State(ctx, f.Name.Full); st.Active != "inactive" || st.Starts != 1 {
		t.Errorf("after stop: %+v", st)
	}
	raw, _ := os.ReadFile(out)
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(lines) != 3 || lines[0] != "pre-x" || lines[1] != "main hello world agent" || !strings.HasPrefix(lines[2], "stop ") || lines[2] == "stop " {
		t.Errorf("output %q", lines)
	}

	// Restart=on-failure restarts a failing main process; a clean exit
	// with Restart=no ends inactive, a failing one failed.
	flaky := mustParse(t, "flaky.service", "[Service]\nExecStart=/bin/false\nRestart=on-failure\nRestartSec=50ms\n")
	if err := d.Start(ctx, flaky); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "restarts", func() error {
		if st, _ := d.State(ctx, "flaky.service"); st.Starts < 3 {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	if err := d.Stop(ctx, "flaky.service"); err != nil {
		t.Fatal(err)
	}
	once := mustParse(t, "once.service", "[Service]\nExecStart=/bin/true\n")
	fails := mustParse(t, "fails.service", "[Service]\nExecStart=/bin/false\n")
	for _, u := range []*unitfile.File{once, fails} {
		if err := d.Start(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	waitState(t, d, "once.service", "inactive")
	waitState(t, d, "fails.service", "failed")

	// A unit that ignores SIGTERM is killed after the stop timeout, with
	// its whole process group.
	stubborn := mustParse(t, "stubborn.service", "[Service]\nExecStart=/bin/sh -c 'trap \"\" TERM; sleep 1000 & wait'\nTimeoutStopSec=300ms\n")
	if err := d.Start(ctx, stubborn); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, "stubborn.service", "active")
	began := time.Now()
	if err := d.Stop(ctx, "stubborn.service"); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > 3*time.Second {
		t.Errorf("stop took %v", took)
	}
	if st, _ := d.State(ctx, "unknown.service"); st.Load != "not-found" {
		t.Errorf("unknown unit state %+v", st)
	}
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestExpandEnvAndSeconds(t *testing.T) {
	env := map[string]string{"A": "x", "B_2": "y"}
	if got := expandEnv("$A ${B_2} $C $$A ${A}z $", env); got != "x y $C $A xz $" {
		t.Errorf("expandEnv = %q", got)
	}
	for in, want := range map[string]time.Duration{"5": 5 * time.Second, "0.5": 500 * time.Millisecond, "1min 30s": 90 * time.Second, "200ms": 200 * time.Millisecond} {
		if got, err := parseSeconds(in); err != nil || got != want {
			t.Errorf("parseSeconds(%q) = %v, %v", in, got, err)
		}
	}
}
