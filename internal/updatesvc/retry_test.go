package updatesvc_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/store/sqlite"
	"github.com/flotilla/flotilla/internal/updatesvc"
)

// retryingStore runs every Update's function twice, as PostgreSQL does
// after a deadlock: the first attempt's writes are rolled back by the real
// store, the second commits. It wraps a real store; only the retry is
// staged.
type retryingStore struct {
	store.Store
	retries int
}

var errStaged = errors.New("staged deadlock")

func (s *retryingStore) Update(ctx context.Context, fn func(q store.TxQueries) error) error {
	err := s.Store.Update(ctx, func(q store.TxQueries) error {
		if err := fn(q); err != nil {
			return err
		}
		return errStaged // roll the first attempt back
	})
	if !errors.Is(err, errStaged) {
		return err
	}
	s.retries++
	return s.Store.Update(ctx, fn)
}

// TestGrantSurvivesRetry: a retried transaction records one grant, not two
// (a second "granted" row would count against the rate limit).
func TestGrantSurvivesRetry(t *testing.T) {
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	inner, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "flotilla.db"), sqlite.Options{Synchronous: "NORMAL"}, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inner.Close() })
	st := &retryingStore{Store: inner}
	svc, err := updatesvc.New(st, updatesvc.Config{}, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, svc: svc, st: st, clk: &clock{}, ctx: ctx}
	e.must(svc.CreateApp(ctx, store.Application{ID: appID, Name: "Flatcar"}))
	e.must(svc.CreatePackage(ctx, store.Package{AppID: appID, Version: "4081.2.0", Arch: "amd64",
		BaseURL: "https://updates.example.net/", FileName: "u.gz", Size: 1000, SHA256: "3twpmKMOhUE4jamEnUBDF37BM70/RU3ZA6de281oiNs="}))
	e.must(svc.CreateChannel(ctx, store.Channel{AppID: appID, Name: "stable", PackageVersion: "4081.2.0"}))
	e.group("stable", nil)

	m := &machine{id: "0123456789abcdef0123456789abcdef", version: "3975.2.1", track: "stable"}
	if r := e.check(m); r.UpdateCheck == nil || r.UpdateCheck.Status != "ok" {
		t.Fatalf("no grant: %+v", r.UpdateCheck)
	}
	if st.retries == 0 {
		t.Fatal("no transaction was retried; the test stages nothing")
	}
	cs, err := inner.ListStatusChanges(ctx, appID, m.id, 100)
	if err != nil {
		t.Fatal(err)
	}
	granted := 0
	for _, c := range cs {
		if c.Status == store.StatusGranted {
			granted++
		}
	}
	if granted != 1 {
		t.Errorf("%d granted rows after one grant retried once, want 1: %+v", granted, cs)
	}
}
