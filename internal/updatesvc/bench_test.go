package updatesvc_test

import (
	"fmt"
	"testing"

	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/omaha"
)

// BenchmarkHandleCheck measures one steady-state update check (machine up
// to date, seen recently) through the service, without HTTP, with 100,000
// registered instances.
func BenchmarkHandleCheck(b *testing.B) {
	e := newEnv(b)
	e.group("stable", nil)
	const n = 100000
	now := e.clk.now()
	err := e.st.Update(e.ctx, func(q store.TxQueries) error {
		for i := range n {
			if err := q.PutInstance(e.ctx, store.Instance{
				AppID: appID, MachineID: fmt.Sprintf("%032x", i), Group: "stable", Version: "3975.2.1",
				Status: store.StatusIdle, Alias: "alias-" + fmt.Sprintf("%032x", i), IP: "192.0.2.10", OEM: "qemu",
				Board: "amd64-usr", LastCheck: now, StatusChanged: now, CreatedAt: now,
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i = (i*7919 + 13) % n
			a := omaha.App{AppID: "{" + appID + "}", Version: "3975.2.1", Track: "stable", MachineID: fmt.Sprintf("%032x", i),
				OEM: "qemu", Board: "amd64-usr", MachineAlias: "alias-" + fmt.Sprintf("%032x", i),
				Ping: &omaha.Ping{Active: 1}, UpdateCheck: &omaha.UpdateCheck{},
				Events: []omaha.Event{{Type: 3, Result: 2, PreviousVersion: "0.0.0.0"}}}
			r := e.svc.Handle(e.ctx, request("scheduler", a), "192.0.2.10")
			if r.Apps[0].UpdateCheck.Status != "noupdate" {
				b.Fatalf("answer %s", r.Apps[0].UpdateCheck.Status)
			}
		}
	})
}
