// Package fleetlock implements the FleetLock protocol (Fedora CoreOS's
// Zincati speaks it; coreos/airlock was its reference server) on top of
// flotilla's reboot semaphore: POST <base>/v1/pre-reboot takes a slot
// (recursive: the holder may ask again), POST <base>/v1/steady-state gives
// it back (only the holder's own, and not holding is success).
//
// Unlike airlock, every failure has its own stable error kind (a full
// group is not confused with a bad request or a storage problem), write
// conflicts are retried inside the semaphore and never reach clients, and
// any valid group name works without configuration (default max 1).
//
// The package also has the client the agent uses for
// REBOOT_STRATEGY=fleetlock.
package fleetlock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla/flotilla/internal/rebootlock"
)

// Protocol constants.
const (
	// HeaderName must be sent with the value "true" on every call.
	HeaderName = "fleet-lock-protocol"
	// PathPreReboot and PathSteadyState are relative to the base URL.
	PathPreReboot   = "/v1/pre-reboot"
	PathSteadyState = "/v1/steady-state"
	maxBody         = 64 << 10
)

// Error kinds: low cardinality, stable (they are metric labels and what
// clients and operators key on).
const (
	KindFull            = "failed_lock_semaphore_full"
	KindMissingHeader   = "missing_protocol_header"
	KindMalformedBody   = "malformed_request_body"
	KindInvalidIdentity = "invalid_client_identity"
	KindInvalidGroup    = "invalid_group"
	KindMethod          = "method_not_allowed"
	KindTooLarge        = "request_too_large"
	KindUnavailable     = "lock_store_unavailable"
	KindInternal        = "internal_error"
)

// Locker is the semaphore the handler serves; rebootlock.Manager is one.
type Locker interface {
	Lock(ctx context.Context, group, id string, info rebootlock.LockInfo) (rebootlock.Holder, error)
	Unlock(ctx context.Context, group, id string) (bool, error)
	// Changes signals when a slot of group may have become free.
	Changes(ctx context.Context, group string) <-chan struct{}
}

// Request is the body of both calls.
type Request struct {
	ClientParams ClientParams `json:"client_params"`
}

// ClientParams identifies the machine and its group.
type ClientParams struct {
	ID    string `json:"id"`
	Group string `json:"group"`
}

// ErrorBody is the JSON error every failure carries.
type ErrorBody struct {
	Kind  string `json:"kind"`
	Value string `json:"value"`
}

// Handler serves FleetLock under a prefix (strip it before: the handler
// sees /v1/pre-reboot and /v1/steady-state).
type Handler struct {
	lock     Locker
	log      *slog.Logger
	requests *prometheus.CounterVec
	timeout  time.Duration
	// Wait is how long a pre-reboot for a full group is held open waiting
	// for a slot before the "full" answer (0: answer at once). The first
	// machine in line then gets a freed slot within milliseconds instead
	// of at its next poll, and pollers cause less load. Keep it well below
	// clients' HTTP timeouts (Zincati: 30 min).
	Wait time.Duration
}

// NewHandler returns the FleetLock HTTP handler.
func NewHandler(l Locker, logger *slog.Logger, reg prometheus.Registerer) (*Handler, error) {
	h := &Handler{lock: l, log: logger, timeout: 30 * time.Second,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_fleetlock_requests_total",
			Help: "FleetLock requests by call and result kind (ok or an error kind).",
		}, []string{"call", "result"})}
	if reg != nil {
		if err := reg.Register(h.requests); err != nil {
			return nil, fmt.Errorf("fleetlock: register metrics: %w", err)
		}
	}
	return h, nil
}

// ServeHTTP implements the two calls.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var call string
	switch r.URL.Path {
	case PathPreReboot:
		call = "pre-reboot"
	case PathSteadyState:
		call = "steady-state"
	default:
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.fail(w, call, http.StatusMethodNotAllowed, KindMethod, "FleetLock calls are POST")
		return
	}
	if r.Header.Get(HeaderName) != "true" {
		h.fail(w, call, http.StatusBadRequest, KindMissingHeader, "header "+HeaderName+": true is required")
		return
	}
	params, status, kind, msg := decode(r)
	if kind != "" {
		h.fail(w, call, status, kind, msg)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	defer cancel()
	switch call {
	case "pre-reboot":
		holder, err := h.lockWaiting(ctx, params)
		if err != nil {
			h.lockError(w, call, params, err)
			return
		}
		h.log.Debug("fleetlock: slot held", "group", params.Group, "id", params.ID, "token", holder.Token)
	case "steady-state":
		released, err := h.lock.Unlock(ctx, params.Group, params.ID)
		if err != nil {
			h.lockError(w, call, params, err)
			return
		}
		if released {
			h.log.Info("fleetlock: slot released", "group", params.Group, "id", params.ID)
		}
	}
	h.requests.WithLabelValues(call, "ok").Inc()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("{}\n"))
}

// lockWaiting asks for a slot, and while the group is full and h.Wait
// allows, waits for a release and asks again.
func (h *Handler) lockWaiting(ctx context.Context, p ClientParams) (rebootlock.Holder, error) {
	if h.Wait <= 0 {
		return h.lock.Lock(ctx, p.Group, p.ID, rebootlock.LockInfo{})
	}
	wctx, cancel := context.WithTimeout(ctx, h.Wait)
	defer cancel()
	changes := h.lock.Changes(wctx, p.Group)
	for {
		holder, err := h.lock.Lock(ctx, p.Group, p.ID, rebootlock.LockInfo{})
		if err == nil || !errors.Is(err, rebootlock.ErrFull) {
			return holder, err
		}
		// Each release moves the queue by at most one place per freed
		// slot: a machine far back waits for enough releases before it
		// asks again, so a release wakes the next in line, not the herd.
		need := 1
		var fe *rebootlock.FullError
		if errors.As(err, &fe) && fe.Position > fe.Max {
			need = fe.Position - fe.Max
		}
		for seen := 0; seen < need; seen++ {
			select {
			case <-wctx.Done():
				return holder, err
			case <-changes:
			}
		}
	}
}

// decode reads and validates the body; kind is "" when it is good.
func decode(r *http.Request) (p ClientParams, status int, kind, msg string) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return p, http.StatusBadRequest, KindMalformedBody, "cannot read the body: " + err.Error()
	}
	if len(body) > maxBody {
		return p, http.StatusRequestEntityTooLarge, KindTooLarge, fmt.Sprintf("body larger than %d bytes", maxBody)
	}
	var req Request
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return p, http.StatusBadRequest, KindMalformedBody, `want {"client_params":{"id":"…","group":"…"}}: ` + err.Error()
	}
	if dec.More() {
		return p, http.StatusBadRequest, KindMalformedBody, "trailing data after the JSON body"
	}
	p = req.ClientParams
	if err := rebootlock.ValidateID(p.ID); err != nil {
		return p, http.StatusBadRequest, KindInvalidIdentity, err.Error()
	}
	if err := rebootlock.ValidateGroup(p.Group); err != nil {
		return p, http.StatusBadRequest, KindInvalidGroup, err.Error()
	}
	return p, 0, "", ""
}

func (h *Handler) lockError(w http.ResponseWriter, call string, p ClientParams, err error) {
	switch {
	case errors.Is(err, rebootlock.ErrFull):
		h.fail(w, call, http.StatusLocked, KindFull, err.Error())
	case errors.Is(err, rebootlock.ErrInvalidGroup):
		h.fail(w, call, http.StatusBadRequest, KindInvalidGroup, err.Error())
	case errors.Is(err, rebootlock.ErrInvalidID):
		h.fail(w, call, http.StatusBadRequest, KindInvalidIdentity, err.Error())
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		if errors.Is(err, context.Canceled) {
			h.log.Debug("fleetlock: client went away", "call", call, "group", p.Group, "id", p.ID)
		} else {
			h.log.Warn("fleetlock: lock store did not answer", "call", call, "group", p.Group, "id", p.ID, "err", err)
		}
		h.fail(w, call, http.StatusServiceUnavailable, KindUnavailable, "the lock store did not answer in time; retry")
	default:
		h.log.Error("fleetlock: lock store error", "call", call, "group", p.Group, "id", p.ID, "err", err)
		h.fail(w, call, http.StatusInternalServerError, KindInternal, err.Error())
	}
}

func (h *Handler) fail(w http.ResponseWriter, call string, status int, kind, value string) {
	h.requests.WithLabelValues(call, kind).Inc()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(ErrorBody{Kind: kind, Value: value})
}

// Client calls a FleetLock server.
type Client struct {
	// BaseURL is the server's FleetLock base, e.g.
	// "http://flotilla:8080/fleetlock"; the calls append /v1/….
	BaseURL string
	HTTP    *http.Client
}

// APIError is a non-200 answer.
type APIError struct {
	Status int
	ErrorBody
}

func (e *APIError) Error() string {
	if e.Kind == "" {
		return fmt.Sprintf("fleetlock: HTTP %d", e.Status)
	}
	return fmt.Sprintf("fleetlock: HTTP %d %s: %s", e.Status, e.Kind, e.Value)
}

// PreReboot asks for (or confirms) a reboot slot.
func (c *Client) PreReboot(ctx context.Context, group, id string) error {
	return c.call(ctx, PathPreReboot, group, id)
}

// SteadyState gives the slot back (success when not holding).
func (c *Client) SteadyState(ctx context.Context, group, id string) error {
	return c.call(ctx, PathSteadyState, group, id)
}

func (c *Client) call(ctx context.Context, path, group, id string) error {
	body, err := json.Marshal(Request{ClientParams: ClientParams{ID: id, Group: group}})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.BaseURL, "/")+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("fleetlock: %w", err)
	}
	req.Header.Set(HeaderName, "true")
	req.Header.Set("Content-Type", "application/json")
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("fleetlock: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
		return nil
	}
	e := &APIError{Status: resp.StatusCode}
	_ = json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&e.ErrorBody)
	return e
}

// IsFull reports whether err is a "group full" answer.
func IsFull(err error) bool {
	var e *APIError
	return errors.As(err, &e) && e.Kind == KindFull
}
