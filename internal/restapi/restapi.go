// Package restapi serves flotilla's REST API under /api/v1: JSON over HTTP,
// bearer-token authentication, errors as {"kind", "message"} with stable
// kinds (api/v1). Reads go to the store; configuration changes go through
// the update service so rollouts and caches stay consistent.
package restapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "github.com/flotilla/flotilla/api/v1"
	"github.com/flotilla/flotilla/internal/rebootlock"
	"github.com/flotilla/flotilla/internal/rollout"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/updatesvc"
	"github.com/flotilla/flotilla/omaha"
)

// MaxBodyBytes bounds request bodies; package metadata and policies are
// small.
const MaxBodyBytes = 1 << 20

// Handler serves /api/v1.
type Handler struct {
	svc   *updatesvc.Service
	st    store.Store
	log   *slog.Logger
	now   func() time.Time
	mux   *http.ServeMux
	locks *rebootlock.Manager

	tokMu  sync.Mutex
	tokens map[string]cachedToken // by hash
}

// forgetTokens drops cached tokens so that a deleted token stops working
// at once (in this process; other replicas within the cache's 30 s).
func (h *Handler) forgetTokens() {
	h.tokMu.Lock()
	clear(h.tokens)
	h.tokMu.Unlock()
}

type cachedToken struct {
	tok     store.Token
	expires time.Time
}

// New returns the API handler. Mount it at "/api/v1/".
func New(svc *updatesvc.Service, logger *slog.Logger) *Handler {
	h := &Handler{svc: svc, st: svc.Store(), log: logger, now: time.Now, mux: http.NewServeMux(), tokens: map[string]cachedToken{}}
	h.routes()
	return h
}

// Token roles.
const (
	RoleAdmin  = "admin"
	RoleViewer = "viewer"
)

// NewToken makes a token with a fresh random secret. Only the secret's
// hash goes into the returned record; the secret is returned once.
func NewToken(name, role string, now time.Time) (store.Token, string) {
	b := make([]byte, 40)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail on supported platforms
	secret := hex.EncodeToString(b[:32])
	return store.Token{ID: hex.EncodeToString(b[32:]), Name: name, Role: role, Hash: HashToken(secret), CreatedAt: now.UTC()}, secret
}

// HashToken returns the stored form of a token secret.
func HashToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// apiError is an error with an API kind and HTTP status.
type apiError struct {
	status int
	kind   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func errorf(status int, kind, format string, a ...any) error {
	return &apiError{status: status, kind: kind, msg: fmt.Sprintf(format, a...)}
}

func badRequest(format string, a ...any) error {
	return errorf(http.StatusBadRequest, v1.KindBadRequest, format, a...)
}

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func (h *Handler) handle(pattern string, fn handlerFunc) {
	h.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			h.writeError(w, r, err)
		}
	})
}

// writeError is the single place that turns errors into the envelope.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	var fe *rollout.FieldError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &mbe):
		ae = &apiError{http.StatusRequestEntityTooLarge, v1.KindTooLarge, fmt.Sprintf("request body over %d bytes", mbe.Limit)}
	case errors.Is(err, store.ErrNotFound):
		ae = &apiError{http.StatusNotFound, v1.KindNotFound, err.Error()}
	case errors.Is(err, store.ErrConflict):
		ae = &apiError{http.StatusConflict, v1.KindConflict, err.Error()}
	case errors.Is(err, store.ErrInvalid), errors.As(err, &fe), errors.Is(err, rollout.ErrInvalidPolicy):
		ae = &apiError{http.StatusUnprocessableEntity, v1.KindInvalid, err.Error()}
	case errors.Is(err, context.Canceled):
		return
	default:
		h.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		ae = &apiError{http.StatusInternalServerError, v1.KindInternal, "internal error; see the server log"}
	}
	writeJSON(w, ae.status, v1.Error{Kind: ae.kind, Message: ae.msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// decode reads a JSON body strictly: unknown fields and trailing data are
// errors, so a typo in a field name does not silently do nothing.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		if errors.Is(err, io.EOF) {
			return badRequest("request body is empty; expected JSON")
		}
		return badRequest("malformed JSON body: %v", err)
	}
	if dec.More() {
		return badRequest("malformed JSON body: trailing data after the object")
	}
	return nil
}

// ServeHTTP authenticates and dispatches.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tok, err := h.authenticate(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="flotilla"`)
		h.writeError(w, r, err)
		return
	}
	if tok.Role != RoleAdmin && (r.Method != http.MethodGet && r.Method != http.MethodHead || strings.HasPrefix(r.URL.Path, "/api/v1/tokens")) {
		h.writeError(w, r, errorf(http.StatusForbidden, v1.KindForbidden, "token %q is read-only", tok.Name))
		return
	}
	if _, pattern := h.mux.Handler(r); pattern == "" {
		h.writeError(w, r, h.noRoute(r))
		return
	}
	h.mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), actorKey{}, tok.Name)))
}

// noRoute explains a request no route matched: 405 with the allowed methods
// when the path exists, 404 otherwise, both as the JSON envelope (the
// mux's own answers are plain text).
func (h *Handler) noRoute(r *http.Request) error {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := h.mux.Handler(probe); pattern != "" {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) > 0 {
		return errorf(http.StatusMethodNotAllowed, v1.KindMethod, "%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(allowed, ", "))
	}
	return errorf(http.StatusNotFound, v1.KindNotFound, "no API route %s %s; see docs/api.md", r.Method, r.URL.Path)
}

type actorKey struct{}

func actor(ctx context.Context) string {
	s, _ := ctx.Value(actorKey{}).(string)
	return s
}

func (h *Handler) authenticate(r *http.Request) (store.Token, error) {
	auth := r.Header.Get("Authorization")
	secret, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || strings.TrimSpace(secret) == "" {
		return store.Token{}, errorf(http.StatusUnauthorized, v1.KindUnauthorized, "missing API token: send Authorization: Bearer <token> (the admin token is in <data-dir>/admin.token)")
	}
	hash := HashToken(strings.TrimSpace(secret))
	now := h.now()
	h.tokMu.Lock()
	c, ok := h.tokens[hash]
	h.tokMu.Unlock()
	if ok && now.Before(c.expires) {
		return c.tok, nil
	}
	tok, err := h.st.GetTokenByHash(r.Context(), hash)
	if errors.Is(err, store.ErrNotFound) {
		return store.Token{}, errorf(http.StatusUnauthorized, v1.KindUnauthorized, "unknown API token")
	}
	if err != nil {
		return store.Token{}, fmt.Errorf("look up token: %w", err)
	}
	h.tokMu.Lock()
	h.tokens[hash] = cachedToken{tok: tok, expires: now.Add(30 * time.Second)}
	h.tokMu.Unlock()
	return tok, nil
}

// appID resolves the {app} path value: braces optional, any case.
func appID(r *http.Request) (string, error) {
	id, err := omaha.NormalizeAppID(r.PathValue("app"))
	if err != nil {
		return "", errorf(http.StatusBadRequest, v1.KindBadRequest, "application id %q is not a UUID", r.PathValue("app"))
	}
	return id, nil
}

func queryInt(r *http.Request, name string) (int, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, badRequest("query parameter %s=%q: want a non-negative integer", name, s)
	}
	return n, nil
}

func queryTime(r *http.Request, name string) (time.Time, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, badRequest("query parameter %s=%q: want an RFC 3339 time like 2026-01-02T15:04:05Z", name, s)
	}
	return t, nil
}

// checkQuery rejects unknown query parameters so that a misspelt filter
// does not silently return everything.
func checkQuery(r *http.Request, allowed ...string) error {
	for k := range r.URL.Query() {
		ok := false
		for _, a := range allowed {
			if k == a {
				ok = true
				break
			}
		}
		if !ok {
			return badRequest("unknown query parameter %q (allowed: %s)", k, strings.Join(allowed, ", "))
		}
	}
	return nil
}
