package updatesvc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/store/sqlite"
)

func TestTouchBatcher(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "t.db"), sqlite.Options{Synchronous: "NORMAL"}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const app = "e96281a6-d1af-4bde-9a0a-97b76e56dc57"
	if err := st.CreateApp(ctx, store.Application{ID: app, Name: "a"}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const n = 300
	for i := range n {
		if err := st.PutInstance(ctx, store.Instance{AppID: app, MachineID: fmt.Sprintf("m%03d", i), Status: store.StatusIdle, LastCheck: t0}); err != nil {
			t.Fatal(err)
		}
	}
	b := &touchBatcher{st: st, maxBatch: 7} // small batches exercise the hand-over
	var wg sync.WaitGroup
	errs := make([]error, n+1)
	for i := range n + 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("m%03d", i) // m300 does not exist
			errs[i] = b.touch(ctx, app, id, t0.Add(time.Duration(i+1)*time.Second))
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("touch m%03d: %v", i, errs[i])
		}
		in, err := st.GetInstance(ctx, app, fmt.Sprintf("m%03d", i))
		if err != nil {
			t.Fatal(err)
		}
		if want := t0.Add(time.Duration(i+1) * time.Second); !in.LastCheck.Equal(want) {
			t.Fatalf("m%03d last check %v, want %v", i, in.LastCheck, want)
		}
	}
	if !errors.Is(errs[n], store.ErrNotFound) {
		t.Fatalf("touch of a missing instance: %v, want ErrNotFound", errs[n])
	}
	if b.busy || len(b.pending) != 0 {
		t.Fatalf("batcher not idle after all touches: busy=%v pending=%d", b.busy, len(b.pending))
	}
}
