package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/flotilla/flotilla/internal/store"
)

func testUpdateCommit(t *testing.T, s store.Store) {
	ctx := t.Context()
	a := store.Application{ID: appA, Name: "a", CreatedAt: t0}
	must(t, s.Update(ctx, func(q store.TxQueries) error {
		if err := q.CreateApp(ctx, a); err != nil {
			return err
		}
		// Reads inside the transaction see its writes.
		got, err := q.GetApp(ctx, appA)
		if err != nil {
			return err
		}
		diff(t, "GetApp inside Update", got, a)
		if err := q.CreateChannel(ctx, mkChannel(appA, "stable", "")); err != nil {
			return err
		}
		return q.CreateGroup(ctx, mkGroup(appA, "prod", "stable", "stable"))
	}))
	got, err := s.GetApp(ctx, appA)
	must(t, err)
	diff(t, "GetApp after Update", got, a)
	_, err = s.GetGroup(ctx, appA, "prod")
	must(t, err)
}

func testUpdateRollback(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkApp(t, s, appA)
	errBoom := errors.New("boom")
	err := s.Update(ctx, func(q store.TxQueries) error {
		must(t, q.CreateApp(ctx, store.Application{ID: appB, Name: "b", CreatedAt: t0}))
		must(t, q.UpdateApp(ctx, store.Application{ID: appA, Name: "renamed", CreatedAt: t0}))
		must(t, q.PutInstance(ctx, mkInstance(appA, "m1", "prod")))
		_, err := q.AddStatusChange(ctx, store.StatusChange{AppID: appA, MachineID: "m1", Status: store.StatusGranted, At: t0})
		must(t, err)
		return fmt.Errorf("decide: %w", errBoom)
	})
	wantErr(t, "Update returning an error", err, errBoom)
	assertUntouched(t, s)

	// An error from a query inside fn is returned with its sentinel.
	err = s.Update(ctx, func(q store.TxQueries) error {
		must(t, q.CreateApp(ctx, store.Application{ID: appB, Name: "b", CreatedAt: t0}))
		return q.CreateApp(ctx, store.Application{ID: appA, Name: "dup", CreatedAt: t0})
	})
	wantErr(t, "Update with a failing query", err, store.ErrConflict)
	assertUntouched(t, s)
}

// assertUntouched checks that the rolled-back transactions of
// testUpdateRollback and testUpdatePanic left no trace.
func assertUntouched(t *testing.T, s store.Store) {
	t.Helper()
	ctx := t.Context()
	_, err := s.GetApp(ctx, appB)
	wantErr(t, "GetApp created in rolled-back Update", err, store.ErrNotFound)
	a, err := s.GetApp(ctx, appA)
	must(t, err)
	if a.Name == "renamed" {
		t.Error("UpdateApp of a rolled-back Update is visible")
	}
	_, err = s.GetInstance(ctx, appA, "m1")
	wantErr(t, "GetInstance put in rolled-back Update", err, store.ErrNotFound)
	changes, err := s.ListStatusChanges(ctx, appA, "m1", 0)
	must(t, err)
	diff(t, "status changes of rolled-back Update", len(changes), 0)
}

func testUpdatePanic(t *testing.T, s store.Store) {
	ctx := t.Context()
	mkApp(t, s, appA)
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want the panic value \"boom\"", r)
			}
		}()
		_ = s.Update(ctx, func(q store.TxQueries) error {
			must(t, q.CreateApp(ctx, store.Application{ID: appB, Name: "b", CreatedAt: t0}))
			must(t, q.UpdateApp(ctx, store.Application{ID: appA, Name: "renamed", CreatedAt: t0}))
			must(t, q.PutInstance(ctx, mkInstance(appA, "m1", "prod")))
			panic("boom")
		})
		t.Error("Update returned after a panic in fn")
	}()
	assertUntouched(t, s)
	// The store is still usable: the panicking transaction released its
	// connection and locks.
	must(t, s.Update(ctx, func(q store.TxQueries) error {
		return q.CreateApp(ctx, store.Application{ID: appC, Name: "c", CreatedAt: t0})
	}))
	must(t, s.CreateApp(ctx, store.Application{ID: appB, Name: "b", CreatedAt: t0}))
}

func testUpdateLockGroup(t *testing.T, s store.Store) {
	ctx := t.Context()
	g := setupApp(t, s, appA)
	must(t, s.Update(ctx, func(q store.TxQueries) error {
		got, err := q.LockGroup(ctx, appA, g.Name)
		if err != nil {
			return err
		}
		diff(t, "LockGroup", got, g)
		_, err = q.LockGroup(ctx, appA, "nope")
		wantErr(t, "LockGroup unknown", err, store.ErrNotFound)
		_, err = q.LockGroup(ctx, appB, g.Name)
		wantErr(t, "LockGroup unknown app", err, store.ErrNotFound)
		return nil
	}))
}

// testUpdateConcurrentLimit is the property rate limits rely on: concurrent
// transactions that each lock the group, count grants and grant only below
// a limit never exceed it.
func testUpdateConcurrentLimit(t *testing.T, s store.Store) {
	ctx := t.Context()
	g := setupApp(t, s, appA)
	const workers, limit = 20, 10
	since := at(-time.Hour)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	start := make(chan struct{})
	for i := range workers {
		wg.Go(func() {
			<-start
			errs <- s.Update(ctx, func(q store.TxQueries) error {
				if _, err := q.LockGroup(ctx, appA, g.Name); err != nil {
					return err
				}
				c, err := q.GroupCounts(ctx, appA, g.Name, since, since)
				if err != nil {
					return err
				}
				if c.GrantedInPeriod >= limit {
					return nil
				}
				machine := fmt.Sprintf("m%02d", i)
				in := mkInstance(appA, machine, g.Name)
				in.Status, in.GrantedAt = store.StatusGranted, t0
				if err := q.PutInstance(ctx, in); err != nil {
					return err
				}
				_, err = q.AddStatusChange(ctx, store.StatusChange{
					AppID: appA, MachineID: machine, Group: g.Name, Status: store.StatusGranted, Version: "2.0.0", At: t0,
				})
				return err
			})
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Update: %v", err)
		}
	}
	c, err := s.GroupCounts(ctx, appA, g.Name, since, since)
	must(t, err)
	diff(t, "GroupCounts after concurrent grants", c, store.GroupCounts{GrantedInPeriod: limit, InProgress: limit})
}
