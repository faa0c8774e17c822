package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/omaha"
)

// Live updates: GET /events is a server-sent event stream. The browser
// names what its page shows (?app=&group= or ?app=&instance=, nothing for
// the overview); the stream sends "change" whenever that may have changed,
// and the page's script (static/live.js) fetches the page again and swaps
// the sections marked data-live. Both sources are pushed by the update
// service through Events, so an idle page costs no reads:
//   - activity entries (pauses, rollouts started or finished, failures…),
//     from updatesvc.WithActivityHook;
//   - instance status changes, from updatesvc.WithStatusHook. A rollout
//     makes many; a stream sends at most one "change" per statusInterval
//     for them, so a page at 100,000 machines is not refetched per machine.
//
// Events are local to one server process: with several replicas a page
// sees the changes made through its own replica.

const (
	statusInterval = 500 * time.Millisecond
	// sessionCheckInterval bounds how long a stream outlives its session
	// (logout, token deleted, expiry).
	sessionCheckInterval = 2 * time.Second
	heartbeatInterval    = 15 * time.Second
	writeTimeout         = 10 * time.Second
	// subscriberBuffer messages may queue per stream; more are dropped, and
	// the stream then tells its page to refresh anyway.
	subscriberBuffer = 256
)

// liveMsg is one pushed change: an activity entry or a status change.
type liveMsg struct {
	act    *store.Activity
	status *store.StatusChange
}

// subscriber is one open stream's queue. dropped is set when a message did
// not fit, so that the stream refreshes its page instead of missing it.
type subscriber struct {
	ch      chan liveMsg
	dropped atomic.Bool
}

// Events fans activity entries and status changes out to the dashboard's
// open event streams. Create it before the update service so that its
// Activity and Status methods can be the service's hooks
// (updatesvc.WithActivityHook, updatesvc.WithStatusHook), and pass it to
// New with WithEvents. Close ends every stream (call it on shutdown: the
// streams never end on their own).
type Events struct {
	mu     sync.Mutex
	subs   map[*subscriber]struct{}
	done   chan struct{}
	closed bool
}

// NewEvents returns an empty broadcaster.
func NewEvents() *Events {
	return &Events{subs: map[*subscriber]struct{}{}, done: make(chan struct{})}
}

// Activity hands an activity entry to every open stream. It never blocks.
func (e *Events) Activity(a store.Activity) { e.broadcast(liveMsg{act: &a}) }

// Status hands an instance status change to every open stream. It never
// blocks.
func (e *Events) Status(c store.StatusChange) { e.broadcast(liveMsg{status: &c}) }

func (e *Events) broadcast(m liveMsg) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for sub := range e.subs {
		select {
		case sub.ch <- m:
		default:
			sub.dropped.Store(true)
		}
	}
}

// Close ends every stream and refuses new ones.
func (e *Events) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.closed {
		e.closed = true
		close(e.done)
	}
}

// subscribe registers a stream; ok is false after Close.
func (e *Events) subscribe() (sub *subscriber, cancel func(), ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, nil, false
	}
	sub = &subscriber{ch: make(chan liveMsg, subscriberBuffer)}
	e.subs[sub] = struct{}{}
	return sub, func() {
		e.mu.Lock()
		delete(e.subs, sub)
		e.mu.Unlock()
	}, true
}

// subscribers is the number of open streams.
func (e *Events) subscribers() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.subs)
}

// Option configures New.
type Option func(*Handler)

// WithEvents makes the handler's streams use e (see Events).
func WithEvents(e *Events) Option { return func(h *Handler) { h.events = e } }

// watch is what one stream's page shows.
type watch struct {
	app, group, machine string
}

// eventsURL is the stream URL of a page, "" for pages without live updates.
func eventsURL(name string, r *http.Request) string {
	q := url.Values{"app": {r.PathValue("app")}}
	switch name {
	case "overview":
		return "/events"
	case "group":
		q.Set("group", r.PathValue("group"))
	case "instance":
		q.Set("instance", r.PathValue("id"))
	default:
		return ""
	}
	return "/events?" + q.Encode()
}

// relevant reports whether an activity entry concerns the watched page.
// instGroup is the watched instance's group.
func (wt watch) relevant(a store.Activity, instGroup, channel string) bool {
	switch {
	case wt.app == "":
		return true
	case a.AppID != wt.app:
		return false
	case wt.machine != "":
		return slices.Contains(a.MachineIDs, wt.machine) || (a.Group != "" && a.Group == instGroup)
	default:
		return a.Group == wt.group || (a.Channel != "" && a.Channel == channel)
	}
}

// statusRelevant reports whether an instance status change concerns the
// watched page.
func (wt watch) statusRelevant(c store.StatusChange) bool {
	switch {
	case wt.app == "":
		return true
	case c.AppID != wt.app:
		return false
	case wt.machine != "":
		return c.MachineID == wt.machine
	default:
		return c.Group == wt.group
	}
}

// lookup returns the watched instance's group or the watched group's
// channel, which decide whether group and channel activity is relevant.
func (h *Handler) lookup(ctx context.Context, wt watch) (group, channel string, err error) {
	switch {
	case wt.machine != "":
		in, err := h.st.GetInstance(ctx, wt.app, wt.machine)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return "", "", err
		}
		return in.Group, "", nil
	case wt.group != "":
		g, err := h.st.GetGroup(ctx, wt.app, wt.group)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return "", "", err
		}
		return "", g.Channel, nil
	}
	return "", "", nil
}

// serveEvents is GET /events. Without a valid session it answers 401 (an
// EventSource does not follow a redirect to the sign-in page usefully).
func (h *Handler) serveEvents(w http.ResponseWriter, r *http.Request) {
	v, err := h.currentViewer(r)
	if err != nil {
		h.log.Error("dashboard: session check failed", "err", err)
		http.Error(w, "session check failed", http.StatusInternalServerError)
		return
	}
	if v == nil {
		http.Error(w, "not signed in", http.StatusUnauthorized)
		return
	}
	q := r.URL.Query()
	var wt watch
	if a := q.Get("app"); a != "" {
		id, err := omaha.NormalizeAppID(a)
		if err != nil {
			http.Error(w, "bad app id", http.StatusBadRequest)
			return
		}
		wt.app = id
	}
	wt.group, wt.machine = q.Get("group"), q.Get("instance")
	if wt.app == "" && (wt.group != "" || wt.machine != "") || wt.group != "" && wt.machine != "" {
		http.Error(w, "give app with group or instance, or nothing", http.StatusBadRequest)
		return
	}
	sub, unsubscribe, ok := h.events.subscribe()
	if !ok {
		http.Error(w, "server is shutting down", http.StatusServiceUnavailable)
		return
	}
	defer unsubscribe()

	ctx := r.Context()
	rc := http.NewResponseController(w)
	// The server's read and write timeouts are for ordinary requests; a
	// stream lives on, with a deadline per write instead.
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(s string) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := fmt.Fprint(w, s); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	send := func(event string, data any) bool {
		b, _ := json.Marshal(data)
		return write("event: " + event + "\ndata: " + string(b) + "\n\n")
	}

	group, channel, err := h.lookup(ctx, wt)
	if err != nil && ctx.Err() == nil {
		h.log.Warn("dashboard: live lookup", "err", err)
	}
	if !write("retry: 3000\n\n") || !send("ready", map[string]string{"user": v.token.Name}) {
		return
	}
	session := time.NewTicker(sessionCheckInterval)
	defer session.Stop()
	beat := time.NewTicker(heartbeatInterval)
	defer beat.Stop()
	// Status changes are coalesced: the first one arms throttle, and one
	// "change" goes out when it fires.
	throttle := time.NewTimer(statusInterval)
	throttle.Stop()
	pending := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.events.done:
			return
		case <-beat.C:
			if !write(": heartbeat\n\n") {
				return
			}
		case <-session.C:
			if v, err := h.currentViewer(r); err == nil && v == nil {
				return
			}
		case m := <-sub.ch:
			if sub.dropped.Swap(false) {
				// Something was missed; whatever it was, refresh.
				if !send("change", map[string]string{"reason": "overflow"}) {
					return
				}
			}
			switch {
			case m.act != nil && wt.relevant(*m.act, group, channel):
				if m.act.Kind == store.ActivityPolicyChanged {
					// The watched group may follow another channel now.
					if g, c, err := h.lookup(ctx, wt); err == nil {
						group, channel = g, c
					}
				}
				if !send("change", map[string]any{"reason": "activity", "kind": m.act.Kind, "message": m.act.Message}) {
					return
				}
			case m.status != nil && wt.statusRelevant(*m.status):
				if wt.machine != "" {
					group = m.status.Group
				}
				if !pending {
					pending = true
					throttle.Reset(statusInterval)
				}
			}
		case <-throttle.C:
			pending = false
			if !send("change", map[string]string{"reason": "status"}) {
				return
			}
		}
	}
}
