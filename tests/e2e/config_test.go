package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/flotilla/flotilla/api/v1"
)

// groupConfigDoc is the stable group's cloud-config at one revision.
func groupConfigDoc(motd string) string {
	return `#cloud-config
hostname: fleet-node
write_files:
  - path: /etc/motd
    permissions: "0644"
    content: |
      ` + motd + `
  - path: /etc/flotilla/managed.conf
    permissions: "0600"
    content: |
      managed=true
`
}

// configStatus reads the group's config status through the CLI.
func configStatus(p *serverProc) (v1.GroupConfigStatus, error) {
	var st v1.GroupConfigStatus
	out, err := p.cliErr("config", "status", "stable", "-o", "json")
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal([]byte(out), &st)
}

// waitConfigConverged polls until every host reports version with no drift
// and no error, and returns how long that took.
func waitConfigConverged(t *testing.T, p *serverProc, hosts []*host, version int) time.Duration {
	t.Helper()
	start := time.Now()
	var st v1.GroupConfigStatus
	var err error
	if perr := pollFor(60*time.Second, func() bool {
		st, err = configStatus(p)
		if err != nil || st.Latest != version || len(st.Machines) != len(hosts) {
			return false
		}
		for _, m := range st.Machines {
			if m.Version != version || len(m.Drift) > 0 || m.Error != "" {
				return false
			}
		}
		return true
	}); perr != nil {
		t.Fatalf("fleet did not converge on config version %d: %v; last status %+v (err %v)", version, perr, st, err)
	}
	return time.Since(start)
}

// TestGroupConfigManagedByAgents stores a group config with the CLI, lets
// five agent processes with their own roots apply it, changes one value,
// and checks that all five converge on the new version and that a
// hand-edited file shows up on the server as that machine's drift.
func TestGroupConfigManagedByAgents(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test builds and runs the binary; skipped with -short")
	}
	e := newFleetEnv(t)
	p := e.srv
	docFile := filepath.Join(t.TempDir(), "user-data.yaml")
	setGroup := func(doc, comment string) string {
		t.Helper()
		if err := os.WriteFile(docFile, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		return p.cli(t, "config", "set-group", "stable", docFile, "--comment", comment)
	}

	// A document with an error never reaches the machines.
	if err := os.WriteFile(docFile, []byte("#cloud-config\nwrite_files:\n  - content: no path\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := p.cliErr("config", "set-group", "stable", docFile); err == nil {
		t.Fatalf("set-group accepted an invalid document: %s", out)
	}

	if out := setGroup(groupConfigDoc("welcome v1"), "first"); !strings.Contains(out, "version 1") {
		t.Fatalf("set-group printed %q, want version 1", out)
	}

	hosts := make([]*host, 5)
	roots := make([]string, len(hosts))
	for i := range hosts {
		hosts[i] = newHost(t, e)
		roots[i] = t.TempDir()
		hosts[i].extra = []string{"--config-root", roots[i], "--config-interval", "200ms"}
		hosts[i].start(t)
	}
	d1 := waitConfigConverged(t, p, hosts, 1)
	t.Logf("5 agents applied and reported version 1 in %s", d1.Round(time.Millisecond))
	motd := func(i int) string {
		b, err := os.ReadFile(filepath.Join(roots[i], "etc/motd"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for i := range hosts {
		if got := motd(i); got != "welcome v1\n" {
			t.Fatalf("host %d /etc/motd = %q after version 1", i, got)
		}
	}

	// Storing the same document again is not a new version.
	if out := setGroup(groupConfigDoc("welcome v1"), "again"); !strings.Contains(out, "unchanged") {
		t.Fatalf("set-group of the same document printed %q, want unchanged", out)
	}

	// Change one value for the whole group.
	changed := time.Now()
	if out := setGroup(groupConfigDoc("welcome v2"), "motd v2"); !strings.Contains(out, "version 2") {
		t.Fatalf("set-group printed %q, want version 2", out)
	}
	waitConfigConverged(t, p, hosts, 2)
	t.Logf("5 agents converged on version 2 %s after set-group", time.Since(changed).Round(time.Millisecond))
	for i := range hosts {
		if got := motd(i); got != "welcome v2\n" {
			t.Fatalf("host %d /etc/motd = %q after version 2", i, got)
		}
	}

	var hist []v1.GroupConfig
	p.cliJSON(t, &hist, "config", "history", "stable")
	if len(hist) != 2 || hist[0].Version != 2 || hist[0].Comment != "motd v2" || hist[1].Version != 1 {
		t.Fatalf("history = %+v, want versions 2 (motd v2), 1", hist)
	}
	if out := p.cli(t, "config", "diff-versions", "stable", "1", "2"); !strings.Contains(out, "-      welcome v1") || !strings.Contains(out, "+      welcome v2") {
		t.Fatalf("diff-versions 1 2:\n%s", out)
	}

	// An operator edits a managed file by hand on one machine: the server
	// sees that machine drift, and only that one.
	edited := hosts[2]
	if err := os.WriteFile(filepath.Join(roots[2], "etc/motd"), []byte("hand edit\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var st v1.GroupConfigStatus
	if err := pollFor(30*time.Second, func() bool {
		var err error
		st, err = configStatus(p)
		if err != nil {
			return false
		}
		for _, m := range st.Machines {
			if m.MachineID == edited.id {
				return len(m.Drift) == 1 && strings.Contains(m.Drift[0], "/etc/motd") && strings.Contains(m.Drift[0], "content")
			}
		}
		return false
	}); err != nil {
		t.Fatalf("drift of %s not reported: %+v", edited.id, st)
	}
	if st.Drifted != 1 || st.OnLatest != 5 {
		t.Fatalf("status after the hand edit: drifted %d, on latest %d; want 1, 5: %+v", st.Drifted, st.OnLatest, st)
	}
	table := p.cli(t, "config", "status", "stable")
	if !strings.Contains(table, edited.id) || !strings.Contains(table, "file /etc/motd: content") {
		t.Fatalf("config status table does not show the drift:\n%s", table)
	}
	// Drift is reported, not silently reverted: the agent applies only
	// when the version changes.
	if got := motd(2); got != "hand edit\n" {
		t.Fatalf("hand edit overwritten: %q", got)
	}
}
