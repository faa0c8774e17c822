package docker

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/flotilla/flotilla/api/v1"
	"github.com/flotilla/flotilla/client"
)

// dockerCmd runs docker and returns its trimmed stdout.
func dockerCmd(args ...string) (string, error) {
	cmd := exec.Command("docker", args...)
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = strings.TrimSpace(string(ee.Stderr))
		}
		return "", fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, msg)
	}
	return strings.TrimSpace(string(out)), nil
}

func must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := dockerCmd(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// needDocker skips unless a docker engine answers, quickly.
func needDocker(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("docker test skipped with -short")
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("docker test skipped: no docker command on PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("docker test skipped: the docker engine does not answer: %v %s", err, strings.TrimSpace(string(out)))
	}
}

// buildImage builds flotilla statically into a FROM scratch image and
// returns its tag; the image is removed when the test ends.
func buildImage(t *testing.T, suffix string) string {
	t.Helper()
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "flotilla"), "../../cmd/flotilla")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, out)
	}
	df := "FROM scratch\nCOPY flotilla /flotilla\nENTRYPOINT [\"/flotilla\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	tag := "flotilla-test:" + suffix
	must(t, "build", "-q", "-t", tag, dir)
	t.Cleanup(func() { _, _ = dockerCmd("rmi", "-f", tag) })
	return tag
}

// testUnit runs `flotilla testunit`, which logs start/stop lines to the
// unit's log, since the image has nothing else to run.
func testUnit(xfleet string) string {
	u := "[Unit]\nDescription=container test unit\n[Service]\nExecStart=/flotilla testunit %n\n"
	if xfleet != "" {
		u += "[X-Fleet]\n" + xfleet + "\n"
	}
	return u
}

type run struct {
	unit, machine string
	start, end    float64
}

// unitRuns collects the runs recorded in the unit logs of the agent
// containers (docker cp works on FROM scratch containers).
func unitRuns(t *testing.T, containers map[string]string) []run {
	t.Helper()
	var runs []run
	for machine, c := range containers {
		dir := t.TempDir()
		if _, err := dockerCmd("cp", c+":/data/units/.", dir); err != nil {
			continue // no unit ever ran there
		}
		files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
		for _, f := range files {
			fh, err := os.Open(f)
			if err != nil {
				t.Fatal(err)
			}
			open := map[string]int{} // pid → index in runs
			sc := bufio.NewScanner(fh)
			for sc.Scan() {
				w := strings.Fields(sc.Text())
				if len(w) != 5 || (w[0] != "start" && w[0] != "stop") {
					continue
				}
				ts, err := strconv.ParseFloat(w[4], 64)
				if err != nil {
					t.Fatalf("unit log line %q", sc.Text())
				}
				if w[2] != machine {
					t.Errorf("unit log of %s has a line from %s", machine, w[2])
				}
				if w[0] == "start" {
					open[w[3]] = len(runs)
					runs = append(runs, run{unit: w[1], machine: machine, start: ts, end: math.Inf(1)})
				} else if i, ok := open[w[3]]; ok {
					runs[i].end = ts
					delete(open, w[3])
				}
			}
			fh.Close()
		}
	}
	return runs
}

// TestUnitsAcrossContainers: a server and three agents in FROM scratch
// containers on a private network. One agent is disconnected from the
// network: it stops its units once cut off for its grace period, the
// cluster moves them after its own (longer) deadline, and a Conflicts
// unit with nowhere else to go waits. Reconnected, the machine takes that
// unit back. The units' own logs show no unit running on two machines at
// once, and the API shows every unit on exactly one live machine.
func TestUnitsAcrossContainers(t *testing.T) {
	needDocker(t)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	image := buildImage(t, id)
	network := "flotilla-test-" + id
	// Fixed container addresses (etcd advertises an IP) need a subnet of
	// our own; pick one at random and try another if it is taken.
	var subnet string
	for try := 0; ; try++ {
		subnet = fmt.Sprintf("10.%d.%d.0/24", 200+int(b[0])%50, (int(b[1])+try)%256)
		_, err := dockerCmd("network", "create", "--subnet", subnet, network)
		if err == nil {
			break
		}
		if try == 5 {
			t.Fatal(err)
		}
	}
	var containers []string
	t.Cleanup(func() {
		for _, c := range containers {
			if t.Failed() {
				if logs, err := exec.Command("docker", "logs", "--tail", "60", c).CombinedOutput(); err == nil {
					t.Logf("--- %s:\n%s", c, logs)
				}
			}
			_, _ = dockerCmd("rm", "-f", c)
		}
		_, _ = dockerCmd("network", "rm", network)
	})
	_, ipnet, err := net.ParseCIDR(subnet)
	if err != nil {
		t.Fatalf("subnet %q: %v", subnet, err)
	}
	ip := func(host byte) string {
		a := ipnet.IP.To4()
		return net.IPv4(a[0], a[1], a[2], host).String()
	}
	const grace = "5s"
	srvIP := ip(10)
	srv := "flotilla-srv-" + id
	containers = append(containers, srv)
	must(t, "run", "-d", "--name", srv, "--network", network, "--ip", srvIP, "-p", "127.0.0.1::8080", image,
		"server", "--data-dir", "/data", "--listen", "0.0.0.0:8080", "--sqlite-sync", "NORMAL",
		"--etcd-client-url", "http://"+srvIP+":2379", "--etcd-peer-url", "http://"+srvIP+":2380",
		"--unit-grace", grace, "--unit-engine-ttl", "2s")
	hostPort := must(t, "port", srv, "8080/tcp")
	hostPort = strings.Split(hostPort, "\n")[0]

	agents := map[string]string{} // machine id → container
	for i := 1; i <= 3; i++ {
		mid := fmt.Sprintf("c%d", i)
		c := fmt.Sprintf("flotilla-%s-%s", mid, id)
		containers = append(containers, c)
		agents[mid] = c
		must(t, "run", "-d", "--name", c, "--network", network, "--ip", ip(byte(20+i)), image,
			"agent", "--data-dir", "/data", "--socket", "/data/agent.sock", "--update-conf", "/data/update.conf",
			"--update-server", "disabled", "--machine-id", mid, "--boot-id", "boot-"+mid, "--os-version", "1.0.0",
			"--booted-partuuid", "none", "--etcd-endpoints", "http://"+srvIP+":2379",
			"--units", "--unit-driver", "process", "--public-ip", ip(byte(20+i)),
			"--unit-grace", grace, "--unit-presence-ttl", "2s")
	}

	var c *client.Client
	if err := poll(60*time.Second, func() bool {
		dir := t.TempDir()
		if _, err := dockerCmd("cp", srv+":/data/admin.token", dir); err != nil {
			return false
		}
		b, err := os.ReadFile(filepath.Join(dir, "admin.token"))
		if err != nil {
			return false
		}
		c = client.New("http://"+hostPort, strings.TrimSpace(string(b)), nil)
		ml, err := c.ListMachines(t.Context())
		return err == nil && len(ml.Machines) == 3
	}); err != nil {
		t.Fatal("server up with three machines: not within 60s")
	}

	ctx := t.Context()
	if _, err := c.SubmitUnit(ctx, "app@.service", testUnit(""), false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SubmitUnit(ctx, "web@.service", testUnit("Conflicts=web@*.service"), false); err != nil {
		t.Fatal(err)
	}
	var units []string
	for i := 1; i <= 6; i++ {
		units = append(units, fmt.Sprintf("app@%d.service", i))
	}
	for i := 1; i <= 3; i++ {
		units = append(units, fmt.Sprintf("web@%d.service", i))
	}
	for _, u := range units {
		if _, err := c.SetUnitState(ctx, u, v1.UnitLaunched); err != nil {
			t.Fatal(err)
		}
	}
	var where map[string]string
	if err := poll(60*time.Second, func() bool {
		where, err = launched(ctx, c)
		return err == nil && len(where) == len(units)
	}); err != nil {
		t.Fatalf("units launched: %v", where)
	}

	victim := where["web@1.service"]
	var moving []string
	for u, m := range where {
		if m == victim {
			moving = append(moving, u)
		}
	}
	t.Logf("disconnecting %s, which runs %v", victim, moving)
	cutAt := time.Now()
	must(t, "network", "disconnect", network, agents[victim])

	// Its units other than web@1 run elsewhere; web@1 (Conflicts with the
	// web units on both other machines) has nowhere to go.
	if err := poll(60*time.Second, func() bool {
		where, err = launched(ctx, c)
		if err != nil {
			return false
		}
		for _, u := range moving {
			if u == "web@1.service" {
				if _, ok := where[u]; ok {
					return false
				}
				continue
			}
			if m := where[u]; m == "" || m == victim {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatalf("the units of the disconnected %s did not move: %v", victim, where)
	}
	t.Logf("moved %s after the disconnect", time.Since(cutAt).Round(time.Millisecond))
	// The isolated agent stopped its units on its own, before the cluster
	// moved them: its log says so (it cannot report while cut off).
	if err := poll(30*time.Second, func() bool {
		logs, _ := exec.Command("docker", "logs", agents[victim]).CombinedOutput()
		return strings.Contains(string(logs), "stopping all units")
	}); err != nil {
		t.Fatalf("the isolated agent %s did not stop its units", victim)
	}

	must(t, "network", "connect", "--ip", ip(byte(20+victim[1]-'0')), network, agents[victim])
	backAt := time.Now()
	if err := poll(60*time.Second, func() bool {
		where, err = launched(ctx, c)
		return err == nil && where["web@1.service"] == victim && len(where) == len(units)
	}); err != nil {
		t.Fatalf("web@1 did not come back to %s: %v", victim, where)
	}
	t.Logf("web@1 back on %s %s after the reconnect", victim, time.Since(backAt).Round(time.Millisecond))

	// Exactly one live machine per unit, by the machines' own reports.
	sl, err := c.ListUnitStates(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	activeOn := map[string][]string{}
	for _, s := range sl.States {
		if s.Active == "active" {
			activeOn[s.Unit] = append(activeOn[s.Unit], s.Machine)
		}
	}
	for _, u := range units {
		if len(activeOn[u]) != 1 {
			t.Errorf("%s reported active on %v", u, activeOn[u])
		}
	}
	ml, err := c.ListMachines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ml.Machines {
		if m.State != "alive" {
			t.Errorf("machine %s is %s after the reconnect", m.ID, m.State)
		}
	}

	runs := unitRuns(t, agents)
	for i := range runs {
		for j := i + 1; j < len(runs); j++ {
			a, b := runs[i], runs[j]
			if a.unit == b.unit && a.machine != b.machine && a.start < b.end && b.start < a.end {
				t.Errorf("%s ran on %s and %s at once: [%.3f, %.3f] and [%.3f, %.3f]", a.unit, a.machine, b.machine, a.start, a.end, b.start, b.end)
			}
		}
	}
	starts := map[string]int{}
	for _, r := range runs {
		starts[r.unit]++
	}
	for _, u := range units {
		want := 1
		for _, m := range moving {
			if m == u {
				want = 2
			}
		}
		if starts[u] != want {
			t.Errorf("%s started %d times, want %d", u, starts[u], want)
		}
	}
}

// launched maps units launched on exactly one machine to that machine.
func launched(ctx context.Context, c *client.Client) (map[string]string, error) {
	l, err := c.ListUnits(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, u := range l.Units {
		if u.CurrentState == v1.UnitLaunched && len(u.Machines) == 1 {
			out[u.Name] = u.Machines[0]
		}
	}
	return out, nil
}

func poll(limit time.Duration, ok func() bool) error {
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}
