package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flotilla/flotilla/internal/restapi"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/store/sqlite"
	"github.com/flotilla/flotilla/omaha"
)

// runDev runs `flotilla dev` as a process until it exits and opens the
// server's database it leaves behind, so the outcome is checked from the
// server's own records rather than from what the command printed.
func runDev(t *testing.T, args ...string) (store.Store, string) {
	t.Helper()
	dir := t.TempDir()
	args = append([]string{"dev", "--data-dir", dir, "--listen", "127.0.0.1:0", "--exit-when-done", "--timeout", "3m"}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, flotillaBinary(t), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("flotilla %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "server", "flotilla.db"), sqlite.Options{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if t.Failed() {
		t.Log(out.String())
	}
	return st, out.String()
}

var heldRE = regexp.MustCompile(`\(token \d+, (\d+) of max (\d+) held\)`)

// maxRebooting reads the most reboot slots held at once from the lock
// history: every grant records how many slots were held with it, checked
// in the same etcd transaction that enforced the limit.
func maxRebooting(t *testing.T, st store.Store) (most, grants int) {
	t.Helper()
	acts, err := st.ListActivity(context.Background(), store.ActivityFilter{AppID: restapi.LockActivityScope, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range acts {
		if a.Kind != "lock-granted" {
			continue
		}
		m := heldRE.FindStringSubmatch(a.Message)
		if m == nil {
			t.Fatalf("lock grant %q does not say how many slots were held", a.Message)
		}
		n, _ := strconv.Atoi(m[1])
		most, grants = max(most, n), grants+1
	}
	return most, grants
}

func groupInstances(t *testing.T, st store.Store) []store.Instance {
	t.Helper()
	pg, err := st.ListInstances(context.Background(), store.InstanceFilter{AppID: omaha.FlatcarAppID, Group: "stable", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return pg.Instances
}

// TestDevRollout: `flotilla dev --machines 10 --max-reboots 2` rolls 1.0.1
// out to all ten machines, never more than two rebooting at once.
func TestDevRollout(t *testing.T) {
	t.Parallel()
	st, out := runDev(t, "--machines", "10", "--max-reboots", "2")
	ins := groupInstances(t, st)
	if len(ins) != 10 {
		t.Fatalf("%d instances, want 10\n%s", len(ins), out)
	}
	for _, in := range ins {
		if in.Version != "1.0.1" || in.Status != store.StatusComplete {
			t.Errorf("%s (%s): version %s status %s, want 1.0.1 complete", in.MachineID, in.Alias, in.Version, in.Status)
		}
	}
	most, grants := maxRebooting(t, st)
	if grants < 10 {
		t.Errorf("%d reboot slots granted for 10 updates", grants)
	}
	if most > 2 || most < 1 {
		t.Errorf("at most %d machines rebooting at once, want 1..2", most)
	}
	if !strings.Contains(out, "rollout complete: all 10 machines run 1.0.1") {
		t.Errorf("no completion summary in the output:\n%s", out)
	}
}

// TestDevFailure: with --fail 1 the failing machine rolls back, the group
// pauses itself, and no machine is granted the update after the pause.
func TestDevFailure(t *testing.T) {
	t.Parallel()
	st, out := runDev(t, "--machines", "10", "--max-reboots", "2", "--fail", "1")
	ctx := context.Background()
	g, err := st.GetGroup(ctx, omaha.FlatcarAppID, "stable")
	if err != nil {
		t.Fatal(err)
	}
	if !g.Policy.Paused || !strings.Contains(g.PausedReason, "auto-paused") {
		t.Fatalf("group paused %t (%q), want auto-paused\n%s", g.Policy.Paused, g.PausedReason, out)
	}
	var rolledBack []store.Instance
	for _, in := range groupInstances(t, st) {
		if in.Status == store.StatusRolledBack {
			rolledBack = append(rolledBack, in)
		}
		if in.Status.InProgress() {
			t.Errorf("%s still %s after the run", in.Alias, in.Status)
		}
	}
	if len(rolledBack) != 1 {
		t.Fatalf("%d machines rolled back, want 1\n%s", len(rolledBack), out)
	}
	if in := rolledBack[0]; in.Version != "1.0.0" || in.BlockedVersion != "1.0.1" {
		t.Errorf("rolled-back machine runs %s with %q blocked, want 1.0.0 with 1.0.1 blocked", in.Version, in.BlockedVersion)
	}
	// The pause is the auto-pause's activity entry; nothing was granted
	// after it, from any machine's status history.
	acts, err := st.ListActivity(ctx, store.ActivityFilter{AppID: omaha.FlatcarAppID, Group: "stable", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var pausedAt time.Time
	for _, a := range acts {
		if a.Kind == store.ActivityRolloutFailed {
			pausedAt = a.At
		}
	}
	if pausedAt.IsZero() {
		t.Fatalf("no auto-pause in the activity log")
	}
	for _, in := range groupInstances(t, st) {
		cs, err := st.ListStatusChanges(ctx, omaha.FlatcarAppID, in.MachineID, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if c.Status == store.StatusGranted && c.At.After(pausedAt) {
				t.Errorf("%s was granted %s at %s, after the pause at %s", in.Alias, c.Version, c.At, pausedAt)
			}
		}
	}
	if most, _ := maxRebooting(t, st); most > 2 {
		t.Errorf("%d machines rebooting at once, limit 2", most)
	}
}
