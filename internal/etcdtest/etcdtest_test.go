package etcdtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/flotilla/flotilla/internal/etcdtest"
)

func TestSingleMember(t *testing.T) {
	c := etcdtest.Start(t, 1)
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	c.Kill(0)
	if got := c.Member(0); got.Running {
		t.Fatalf("member 0 running after Kill: %+v", got)
	}
	if err := c.Restart(0); err != nil {
		t.Fatal(err)
	}
	// Data survives the restart (same data directory).
	resp, err := cli.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("after restart: got %v", resp.Kvs)
	}
}

func TestThreeMembersKillRestartPartition(t *testing.T) {
	c := etcdtest.Start(t, 3)
	if n := len(c.Endpoints()); n != 3 {
		t.Fatalf("endpoints: %d", n)
	}
	cli := c.Client(t)
	put := func(key string) error {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		_, err := cli.Put(ctx, key, "x")
		return err
	}
	waitPut := func(key string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			err := put(key)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("put %s: %v", key, err)
			}
		}
	}
	waitPut("a")

	// One member down: the other two keep a quorum.
	c.Kill(1)
	waitPut("b")

	// Two down: no quorum, writes fail.
	c.Kill(2)
	if err := put("c"); err == nil {
		t.Fatal("put succeeded with 2 of 3 members down")
	}
	if err := c.Restart(1); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(2); err != nil {
		t.Fatal(err)
	}
	waitPut("d")

	// Partition a member: a client talking only to it cannot write,
	// the majority can.
	c.Partition(0)
	only0, err := clientv3New(c.Member(0).ClientURL)
	if err != nil {
		t.Fatal(err)
	}
	defer only0.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		_, err := only0.Put(ctx, "e", "x")
		cancel()
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("partitioned member still accepts writes")
		}
	}
	waitPut("f")
	c.Heal(0)
	deadline = time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		_, err := only0.Put(ctx, "g", "x")
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("healed member: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
}
