package fleet

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flotilla/flotilla/internal/etcdtest"
	"github.com/flotilla/flotilla/internal/testenv"
)

// TestFailoverAndPartition runs three engines and three agents on a
// three-member etcd cluster. Cancelling the leading engine must hand
// over to another without restarting any unit; cutting the etcd member
// one agent talks to off from its peers must make that agent stop its
// units and the others take them over, with no unit ever running twice.
func TestFailoverAndPartition(t *testing.T) {
	cluster := etcdtest.Start(t, 3)
	ctx := t.Context()
	logPath := filepath.Join(t.TempDir(), "units.log")
	member := func(i ...int) *clientv3.Client {
		var eps []string
		for _, m := range i {
			eps = append(eps, cluster.Member(m).ClientURL)
		}
		cli, err := clientv3.New(etcdtest.ClientConfig(eps))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		return cli
	}
	// Engines and the registry avoid member 2, which gets partitioned.
	reg := NewRegistry(member(0, 1), RegistryConfig{Grace: testGrace}, nil)
	engines := make([]*Engine, 3)
	runners := make([]*runner, 3)
	for i := range engines {
		engines[i], runners[i] = startEngine(t, member(0, 1), fmt.Sprintf("engine-%d", i))
	}
	for i := range 3 {
		startAgent(t, member(i), machineID(i), nil)
	}

	const n = 12
	units := make([]string, n)
	for i := range units {
		units[i] = fmt.Sprintf("svc%02d.service", i)
		if _, err := reg.SubmitUnit(ctx, units[i], loggingUnit(logPath, ""), false); err != nil {
			t.Fatal(err)
		}
		if err := reg.SetDesiredState(ctx, units[i], Launched); err != nil {
			t.Fatal(err)
		}
	}
	allActive := func(alive ...string) func() error {
		return func() error {
			on, s, err := activeOn(ctx, reg)
			if err != nil {
				return err
			}
			for _, u := range units {
				if len(on[u]) != 1 {
					return fmt.Errorf("%s active on %v (%q)", u, on[u], s.Unschedulable[u])
				}
				ok := false
				for _, m := range alive {
					ok = ok || on[u][0] == m
				}
				if !ok {
					return fmt.Errorf("%s active on %s", u, on[u][0])
				}
			}
			return nil
		}
	}
	testenv.WaitFor(t, 30*time.Second, "units active", allActive("m00", "m01", "m02"))

	leader := func() int {
		found := -1
		for i, e := range engines {
			if e.IsLeader() {
				if found >= 0 {
					t.Errorf("engines %d and %d both lead", found, i)
				}
				found = i
			}
		}
		return found
	}
	old := leader()
	if old < 0 {
		t.Fatal("no leader")
	}
	before := starts(readLog(t, logPath))
	runners[old].stop()
	testenv.WaitFor(t, 10*time.Second, "new leader", func() error {
		if l := leader(); l < 0 || l == old {
			return fmt.Errorf("leader %d", l)
		}
		return nil
	})
	// The new leader schedules: a new unit runs.
	units = append(units, "late.service")
	if _, err := reg.SubmitUnit(ctx, "late.service", loggingUnit(logPath, ""), false); err != nil {
		t.Fatal(err)
	}
	if err := reg.SetDesiredState(ctx, "late.service", Launched); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "unit placed by the new leader", allActive("m00", "m01", "m02"))
	after := starts(readLog(t, logPath))
	for u, c := range before {
		if after[u] != c {
			t.Errorf("%s started %d times across failover, before %d", u, after[u], c)
		}
	}

	// A deposed leader's writes are fenced: a write with the old fence
	// fails once another engine won.
	stale := &leaderTerm{e: engines[old], fence: clientv3.Compare(clientv3.CreateRevision(DefaultPrefix+electionDir+"x"), "=", 1)}
	if err := stale.commit(ctx, []clientv3.Op{clientv3.OpPut(DefaultPrefix+assignDir+"m00/evil.service", "{}")}); err == nil {
		t.Error("fenced write with a stale election key succeeded")
	}

	onM02 := 0
	if on, _, err := activeOn(ctx, reg); err == nil {
		for _, ms := range on {
			if ms[0] == "m02" {
				onM02++
			}
		}
	}
	if onM02 == 0 {
		t.Fatal("nothing runs on m02; the partition would prove nothing")
	}
	cluster.Partition(2)
	cut := time.Now()
	testenv.WaitFor(t, testGrace+testTTL+10*time.Second, "units of the partitioned machine moved", allActive("m00", "m01"))
	t.Logf("moved %d units off the partitioned machine in %v", onM02, time.Since(cut).Round(time.Millisecond))
	checkNeverTwice(t, readLog(t, logPath), nil)

	cluster.Heal(2)
	testenv.WaitFor(t, 15*time.Second, "partitioned machine alive again", func() error {
		ms, err := reg.ListMachines(ctx)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.State != MachineAlive {
				return fmt.Errorf("%s is %s", m.ID, m.State)
			}
		}
		return nil
	})
	// Nothing moves back, nothing runs twice.
	testenv.WaitFor(t, 5*time.Second, "still active", allActive("m00", "m01"))
	checkNeverTwice(t, readLog(t, logPath), nil)
}
