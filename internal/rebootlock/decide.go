package rebootlock

import (
	"cmp"
	"slices"
)

// queued is one waiter as the decision sees it.
type queued struct {
	id        string
	createRev int64 // position in the queue: lower is earlier
}

// decision is the outcome of one Lock attempt on a consistent snapshot.
type decision struct {
	// Held is true when id already holds a slot (recursive lock).
	Held bool
	// Grant is true when id may take a slot now.
	Grant bool
	// Position is id's 1-based place in the waiter queue, 0 when id is not
	// queued (or holds a slot).
	Position int
	// Queue is the number of waiters that count (holders excluded).
	Queue int
	// Available is max minus holders, never negative: it is 0 when max was
	// lowered below the number of current holders.
	Available int
}

// decide is the semaphore's policy: id is granted iff it is queued, there is
// a free slot, and fewer waiters than free slots are ahead of it. Waiters
// are ordered by create revision (ties, impossible in etcd, by id).
// Waiter entries of ids that already hold a slot are ignored, so a stale
// entry cannot take a queue position.
func decide(limit int, holders []string, waiters []queued, id string) decision {
	var d decision
	d.Available = max(0, limit-len(holders))
	if slices.Contains(holders, id) {
		d.Held = true
		return d
	}
	ws := slices.Clone(waiters)
	ws = slices.DeleteFunc(ws, func(w queued) bool { return slices.Contains(holders, w.id) })
	slices.SortFunc(ws, func(a, b queued) int {
		return cmp.Or(cmp.Compare(a.createRev, b.createRev), cmp.Compare(a.id, b.id))
	})
	d.Queue = len(ws)
	for i, w := range ws {
		if w.id == id {
			d.Position = i + 1
			break
		}
	}
	d.Grant = d.Position > 0 && d.Position <= d.Available
	return d
}
