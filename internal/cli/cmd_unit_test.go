package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/flotilla/flotilla/api/v1"
	"github.com/flotilla/flotilla/internal/fleet"
	"github.com/flotilla/flotilla/internal/server"
	"github.com/flotilla/flotilla/internal/servertest"
)

// unitCluster is a real server and unit agents (process driver) in this
// process, driven through the CLI.
type unitCluster struct {
	url, token string
}

func startUnitCluster(t *testing.T, machines ...string) *unitCluster {
	t.Helper()
	srv := servertest.Start(t, func(c *server.Config) {
		c.Units = fleet.EngineConfig{Grace: 2 * time.Second, SessionTTL: time.Second, Debounce: 20 * time.Millisecond}
	})
	for i, id := range machines {
		cfg := fleet.DefaultAgentConfig()
		cfg.Machine = fleet.Machine{ID: id, Address: "10.0.0." + string(rune('1'+i)), Metadata: map[string]string{"disk": "ssd", "zone": id}}
		cfg.PresenceTTL, cfg.Grace, cfg.StateInterval = time.Second, 2*time.Second, 100*time.Millisecond
		ua, err := fleet.NewUnitAgent(srv.Etcd().Client(), cfg, fleet.NewProcessDriver(fleet.ProcessConfig{MaxStopTimeout: time.Second}, nil), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = ua.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	return &unitCluster{url: srv.URL(), token: srv.AdminToken}
}

func (c *unitCluster) run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	t.Setenv("FLOTILLA_TOKEN", "")
	var out, errb bytes.Buffer
	full := append([]string{"--server", c.url, "--token", c.token}, args...)
	code = Run(context.Background(), full, strings.NewReader(""), &out, &errb, nil)
	return code, out.String(), errb.String()
}

func (c *unitCluster) ok(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := c.run(t, args...)
	if code != 0 {
		t.Fatalf("flotilla %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

const cliUnit = "[Unit]\nDescription=hello\n[Service]\nExecStart=/bin/sleep 1000\n"

func TestUnitCommands(t *testing.T) {
	c := startUnitCluster(t, "machine-one-0123456789", "machine-two-0123456789")
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.WriteFile("hello.service", []byte(cliUnit), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("web@.service", []byte(cliUnit+"[X-Fleet]\nConflicts=web@*.service\nMachineMetadata=disk=ssd\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// start of a file submits it; the output names the machine fleet-style.
	out := c.ok(t, "unit", "start", "./hello.service")
	if !regexp.MustCompile(`^Unit hello\.service launched on machine-\.\.\./10\.0\.0\.[12]\n$`).MatchString(out) {
		t.Fatalf("start output %q", out)
	}
	// Instances from the template in the working directory, as the shell
	// expands web@{1..2}.service.
	out = c.ok(t, "unit", "start", "web@1.service", "web@2.service")
	if strings.Count(out, " launched on ") != 2 {
		t.Fatalf("start web@1 web@2:\n%s", out)
	}

	var l v1.UnitList
	if err := json.Unmarshal([]byte(c.ok(t, "unit", "list-files", "-o", "json")), &l); err != nil {
		t.Fatal(err)
	}
	where := map[string]string{}
	for _, u := range l.Units {
		if len(u.Machines) == 1 {
			where[u.Name] = u.Machines[0]
		}
	}
	if len(l.Units) != 4 || where["web@1.service"] == "" || where["web@1.service"] == where["web@2.service"] {
		t.Fatalf("list-files: %+v", l.Units)
	}
	out = c.ok(t, "unit", "list-files")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || !regexp.MustCompile(`^UNIT\s+HASH\s+DSTATE\s+STATE\s+TARGET$`).MatchString(lines[0]) {
		t.Fatalf("list-files table:\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^hello\.service\s+[0-9a-f]{7}\s+launched\s+launched\s+machine-\.\.\./10\.0\.0\.\d$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^web@\.service\s+\S+\s+inactive\s+-\s+template$`).MatchString(out) {
		t.Fatalf("list-files rows:\n%s", out)
	}

	out = c.ok(t, "unit", "list", "--no-legend", "--full")
	if strings.Count(out, "active") != 3 || strings.Contains(out, "UNIT") || !strings.Contains(out, "machine-one-0123456789/10.0.0.1") {
		t.Fatalf("unit list:\n%s", out)
	}
	out = c.ok(t, "unit", "status", "web@1.service")
	for _, want := range []string{"Unit:", "web@1.service", "Desired state:", "launched", "ACTIVE", "running", where["web@1.service"]} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if out := c.ok(t, "unit", "cat", "hello.service"); out != cliUnit {
		t.Errorf("cat = %q", out)
	}

	out = c.ok(t, "machine", "list")
	if !regexp.MustCompile(`(?m)^MACHINE\s+ADDRESS\s+METADATA\s+STATE\s+UNITS$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^machine-\.\.\.\s+10\.0\.0\.1\s+disk=ssd,zone=machine-one-0123456789\s+alive\s+\d$`).MatchString(out) {
		t.Fatalf("machine list:\n%s", out)
	}
	var ml v1.MachineList
	if err := json.Unmarshal([]byte(c.ok(t, "machine", "list", "-o", "json")), &ml); err != nil || len(ml.Machines) != 2 {
		t.Fatalf("machine list -o json: %v %+v", err, ml)
	}

	out = c.ok(t, "unit", "stop", "hello.service")
	if !strings.HasPrefix(out, "Unit hello.service loaded on ") {
		t.Errorf("stop output %q", out)
	}
	if out := c.ok(t, "unit", "unload", "hello.service"); out != "Unit hello.service inactive\n" {
		t.Errorf("unload output %q", out)
	}
	if out := c.ok(t, "unit", "destroy", "hello.service", "web@2.service"); out != "Destroyed hello.service\nDestroyed web@2.service\n" {
		t.Errorf("destroy output %q", out)
	}
	code, _, errOut := c.run(t, "unit", "destroy", "hello.service")
	if code != 1 || !strings.Contains(errOut, "not found") {
		t.Errorf("destroying a missing unit: exit %d, %q", code, errOut)
	}
}

func TestUnitSubmitAndErrors(t *testing.T) {
	c := startUnitCluster(t, "m1")
	dir := t.TempDir()
	path := filepath.Join(dir, "a.service")
	if err := os.WriteFile(path, []byte(cliUnit), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := c.ok(t, "unit", "submit", path); out != "" {
		t.Errorf("submit printed %q", out)
	}
	if err := os.WriteFile(path, []byte(cliUnit+"# v2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := c.run(t, "unit", "submit", path)
	if code != 1 || !strings.Contains(errOut, "--replace") {
		t.Errorf("submitting a changed file: exit %d, %q", code, errOut)
	}
	c.ok(t, "unit", "submit", "--replace", path)
	if out := c.ok(t, "unit", "cat", "a.service"); !strings.HasSuffix(out, "# v2\n") {
		t.Errorf("cat after replace = %q", out)
	}

	// A unit that cannot be placed: the wait fails and says why.
	pinned := filepath.Join(dir, "pinned.service")
	if err := os.WriteFile(pinned, []byte(cliUnit+"[X-Fleet]\nMachineID=elsewhere\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = c.run(t, "unit", "start", "--block-timeout", "1s", pinned)
	if code != 1 || !strings.Contains(errOut, "unschedulable") || !strings.Contains(errOut, "pinned.service is inactive") {
		t.Errorf("start of an unplaceable unit: exit %d, %q", code, errOut)
	}
	code, out, _ := c.run(t, "unit", "start", "--no-block", "a.service")
	if code != 0 || out != "Triggered unit a.service start\n" {
		t.Errorf("--no-block: exit %d, %q", code, out)
	}

	for _, args := range [][]string{
		{"unit", "start", "no-suffix"},
		{"unit", "submit", "missing.service"},
		{"unit", "start"},
		{"unit", "cat", "a.service", "b.service"},
		{"unit", "frobnicate"},
	} {
		if code, _, errOut := c.run(t, args...); code != 2 {
			t.Errorf("flotilla %s: exit %d (%q), want 2", strings.Join(args, " "), code, errOut)
		}
	}
	code, _, errOut = c.run(t, "unit", "status", "nope.service")
	if code != 1 || !strings.Contains(errOut, "not found") {
		t.Errorf("status of a missing unit: exit %d, %q", code, errOut)
	}
}
