package rebootlock

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// holderHistory is the authoritative history of a group's holder keys,
// taken from an etcd watch: every create and delete with its revision.
type holderHistory struct {
	cli    *clientv3.Client
	m      *Manager
	group  string
	events clientv3.WatchChan
	cancel context.CancelFunc
}

// watchHolders starts recording group's key changes from the current
// revision on. The watch covers the whole group so that finish can end it
// with a marker key.
func watchHolders(t testing.TB, cli *clientv3.Client, m *Manager, group string) *holderHistory {
	t.Helper()
	resp, err := cli.Get(opCtx(t), "watch-start")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return &holderHistory{
		cli: cli, m: m, group: group, cancel: cancel,
		events: cli.Watch(ctx, m.groupPrefix(group), clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)),
	}
}

// historyStats summarises a replayed history.
type historyStats struct {
	grants, releases int
	maxHolders       int
	revisions        int64 // revisions spanned
}

// finish ends the recording (writing a marker key inside the group, which
// is not a holder key) and replays it, checking that no revision had more
// than limit holders and that every delete removed an existing holder.
func (h *holderHistory) finish(t testing.TB, limit int, initial int) historyStats {
	t.Helper()
	marker := h.m.groupPrefix(h.group) + "zz-history-end"
	var resp *clientv3.PutResponse
	waitFor(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		var err error
		resp, err = h.cli.Put(ctx, marker, "x")
		return err
	})
	defer h.cancel()
	hp := h.m.holdersPrefix(h.group)
	var st historyStats
	holders := initial
	var first int64
	timeout := time.After(30 * time.Second)
	for {
		select {
		case wr, ok := <-h.events:
			if !ok {
				t.Fatal("holder watch closed early")
			}
			if err := wr.Err(); err != nil {
				t.Fatalf("holder watch: %v", err)
			}
			for _, ev := range wr.Events {
				if first == 0 {
					first = ev.Kv.ModRevision
				}
				key := string(ev.Kv.Key)
				if key == marker {
					st.revisions = ev.Kv.ModRevision - first
					if ev.Kv.ModRevision != resp.Header.Revision {
						t.Fatalf("marker at revision %d, put at %d", ev.Kv.ModRevision, resp.Header.Revision)
					}
					return st
				}
				if !strings.HasPrefix(key, hp) {
					continue
				}
				switch {
				case ev.Type == mvccpb.DELETE:
					holders--
					st.releases++
					if holders < 0 {
						t.Fatalf("revision %d: delete of %s leaves %d holders", ev.Kv.ModRevision, key, holders)
					}
				case ev.IsCreate():
					holders++
					st.grants++
					st.maxHolders = max(st.maxHolders, holders)
					if holders > limit {
						t.Errorf("revision %d: grant of %s makes %d holders, max %d", ev.Kv.ModRevision, key, holders, limit)
					}
				}
			}
		case <-timeout:
			t.Fatal(fmt.Sprintf("holder watch did not reach the marker; %d grants seen", st.grants))
		}
	}
}
