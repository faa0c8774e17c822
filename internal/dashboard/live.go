package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/omaha"
)

// Live updates: GET /events is a server-sent event stream. The browser
// names what its page shows (?app=&group= or ?app=&instance=, nothing for
// the overview); the stream sends "change" whenever that may have changed,
// and the page's script (static/live.js) fetches the page again and swaps
// the sections marked data-live. Two sources feed it:
//   - activity entries, pushed by the update service's activity hook
//     through Events (pauses, rollouts started or finished, failures…);
//   - a poll, once per pollInterval and only while the stream is open, of
//     what the page shows: the instance row, or the group rows and their
//     rollout counts. The update service has no hook for status changes,
//     and these reads are indexed and cached across streams.

const (
	pollInterval      = time.Second
	heartbeatInterval = 15 * time.Second
	writeTimeout      = 10 * time.Second
	// rolloutCacheTTL lets concurrent streams share RolloutStatus reads.
	rolloutCacheTTL = pollInterval / 2
	// subscriberBuffer activity entries may queue per stream; more are
	// dropped (the next poll still notices state changes).
	subscriberBuffer = 64
)

// Events fans activity entries out to the dashboard's open event streams.
// Create it before the update service so that its Activity method can be
// the service's activity hook (updatesvc.WithActivityHook), and pass it to
// New with WithEvents. Close ends every stream (call it on shutdown: the
// streams never end on their own).
type Events struct {
	mu     sync.Mutex
	subs   map[chan store.Activity]struct{}
	done   chan struct{}
	closed bool
}

// NewEvents returns an empty broadcaster.
func NewEvents() *Events {
	return &Events{subs: map[chan store.Activity]struct{}{}, done: make(chan struct{})}
}

// Activity hands an activity entry to every open stream. It never blocks.
func (e *Events) Activity(a store.Activity) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for ch := range e.subs {
		select {
		case ch <- a:
		default:
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
func (e *Events) subscribe() (ch chan store.Activity, cancel func(), ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, nil, false
	}
	ch = make(chan store.Activity, subscriberBuffer)
	e.subs[ch] = struct{}{}
	return ch, func() {
		e.mu.Lock()
		delete(e.subs, ch)
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

type rolloutEntry struct {
	rs store.RolloutStatus
	at time.Time
}

// rolloutStatus is RolloutStatus cached for rolloutCacheTTL.
func (h *Handler) rolloutStatus(ctx context.Context, app, group string) (store.RolloutStatus, error) {
	key := app + "\x00" + group
	now := time.Now()
	h.rsMu.Lock()
	if e, ok := h.rsCache[key]; ok && now.Sub(e.at) < rolloutCacheTTL {
		h.rsMu.Unlock()
		return e.rs, nil
	}
	h.rsMu.Unlock()
	rs, err := h.st.RolloutStatus(ctx, app, group)
	if err != nil {
		return rs, err
	}
	h.rsMu.Lock()
	defer h.rsMu.Unlock()
	for k, e := range h.rsCache { // keep the map small
		if now.Sub(e.at) >= rolloutCacheTTL {
			delete(h.rsCache, k)
		}
	}
	h.rsCache[key] = rolloutEntry{rs, now}
	return rs, nil
}

func groupPrint(g store.Group, rs store.RolloutStatus) string {
	// fmt prints maps with sorted keys, so equal states print equally.
	return fmt.Sprintf("%s|%s|%t|%s|%s|%s|%d|%v|%v;", g.Name, g.Channel, g.Policy.Paused, g.PausedReason, g.RolloutVersion,
		g.RolloutStartedAt, rs.Total, rs.ByStatus, rs.ByVersion)
}

// snapshot returns a fingerprint of what the watched page shows, plus the
// watched instance's group or the watched group's channel.
func (h *Handler) snapshot(ctx context.Context, wt watch) (print, group, channel string, err error) {
	switch {
	case wt.machine != "":
		in, err := h.st.GetInstance(ctx, wt.app, wt.machine)
		if errors.Is(err, store.ErrNotFound) {
			return "missing", "", "", nil
		}
		if err != nil {
			return "", "", "", err
		}
		return fmt.Sprintf("%s|%s|%s|%s|%s|%s|%d|%s", in.Status, in.StatusChanged, in.Version, in.GrantedVersion,
			in.BlockedVersion, in.Group, in.LastErrorCode, in.Alias), in.Group, "", nil
	case wt.group != "":
		g, err := h.st.GetGroup(ctx, wt.app, wt.group)
		if errors.Is(err, store.ErrNotFound) {
			return "missing", "", "", nil
		}
		if err != nil {
			return "", "", "", err
		}
		rs, err := h.rolloutStatus(ctx, wt.app, g.Name)
		if err != nil {
			return "", "", "", err
		}
		ch, _ := h.st.GetChannel(ctx, wt.app, g.Channel)
		return groupPrint(g, rs) + ch.PackageVersion, "", g.Channel, nil
	}
	var b strings.Builder
	apps, err := h.st.ListApps(ctx)
	if err != nil {
		return "", "", "", err
	}
	for _, a := range apps {
		chans, err := h.st.ListChannels(ctx, a.ID)
		if err != nil {
			return "", "", "", err
		}
		for _, c := range chans {
			fmt.Fprintf(&b, "%s=%s;", c.Name, c.PackageVersion)
		}
		groups, err := h.st.ListGroups(ctx, a.ID)
		if err != nil {
			return "", "", "", err
		}
		for _, g := range groups {
			rs, err := h.rolloutStatus(ctx, a.ID, g.Name)
			if err != nil {
				return "", "", "", err
			}
			b.WriteString(a.ID + "/" + groupPrint(g, rs))
		}
	}
	return b.String(), "", "", nil
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
	acts, unsubscribe, ok := h.events.subscribe()
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

	last, group, channel, err := h.snapshot(ctx, wt)
	if err != nil && ctx.Err() == nil {
		h.log.Warn("dashboard: live snapshot", "err", err)
	}
	if !write("retry: 3000\n\n") || !send("ready", map[string]string{"user": v.token.Name}) {
		return
	}
	poll := time.NewTicker(pollInterval)
	defer poll.Stop()
	beat := time.NewTicker(heartbeatInterval)
	defer beat.Stop()
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
		case a := <-acts:
			if wt.relevant(a, group, channel) {
				if !send("change", map[string]any{"reason": "activity", "kind": a.Kind, "message": a.Message}) {
					return
				}
			}
		case <-poll.C:
			// The session may have ended (logout, token deleted, expiry).
			if v, err := h.currentViewer(r); err == nil && v == nil {
				return
			}
			cur, g, c, err := h.snapshot(ctx, wt)
			if err != nil {
				if ctx.Err() == nil {
					h.log.Warn("dashboard: live poll", "err", err)
				}
				continue
			}
			group, channel = g, c
			if cur != last {
				last = cur
				if !send("change", map[string]string{"reason": "state"}) {
					return
				}
			}
		}
	}
}
