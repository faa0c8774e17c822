// Package dashboard serves flotilla's web dashboard: server-rendered
// html/template pages (overview, group, instance) with sign-in by API
// token, HMAC-signed session cookies and CSRF tokens on every form. It
// reads from the store and changes configuration only through the update
// service, like the REST API.
package dashboard

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/flotilla/flotilla/internal/fleet"
	"github.com/flotilla/flotilla/internal/rebootlock"
	"github.com/flotilla/flotilla/internal/restapi"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/updatesvc"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// tokenCacheTTL bounds how long a deleted token's sessions keep working.
const tokenCacheTTL = 2 * time.Second

// Handler serves the dashboard. Mount it at "/".
type Handler struct {
	svc   *updatesvc.Service
	st    store.Store
	locks *rebootlock.Manager
	log   *slog.Logger
	key   []byte
	now   func() time.Time
	mux   *http.ServeMux
	pages map[string]*template.Template

	mu       sync.Mutex
	revoked  map[string]time.Time // logged-out session ids → expiry
	tokens   map[string]store.Token
	tokensAt time.Time

	events *Events
	revs   Revocations
	units  *fleet.Registry // nil: the server schedules no units
}

// New returns the dashboard handler. key signs session cookies (see
// LoadKey); locks may be nil when the server has no reboot coordination.
// Without WithEvents the live streams still poll but see no activity.
func New(svc *updatesvc.Service, key []byte, locks *rebootlock.Manager, logger *slog.Logger, opts ...Option) (*Handler, error) {
	if len(key) < 16 {
		return nil, errors.New("dashboard: session key too short")
	}
	h := &Handler{
		svc: svc, st: svc.Store(), locks: locks, log: logger, key: key, now: time.Now,
		mux: http.NewServeMux(), pages: map[string]*template.Template{}, revoked: map[string]time.Time{},
	}
	for _, o := range opts {
		o(h)
	}
	if h.events == nil {
		h.events = NewEvents()
	}
	for _, p := range []string{"login", "overview", "group", "instance", "packages", "units", "error"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+p+".html")
		if err != nil {
			return nil, fmt.Errorf("dashboard: parse %s: %w", p, err)
		}
		h.pages[p] = t
	}
	h.routes()
	return h, nil
}

func (h *Handler) routes() {
	static, _ := fs.Sub(staticFS, "static")
	h.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	h.mux.HandleFunc("GET /login", h.loginForm)
	h.mux.HandleFunc("POST /login", h.login)
	h.mux.HandleFunc("POST /logout", h.auth(h.logout))
	h.mux.HandleFunc("GET /{$}", h.auth(h.overview))
	h.mux.HandleFunc("GET /apps/{app}/groups/{group}", h.auth(h.groupPage))
	h.mux.HandleFunc("POST /apps/{app}/groups/{group}/pause", h.admin(h.pause(true)))
	h.mux.HandleFunc("POST /apps/{app}/groups/{group}/resume", h.admin(h.pause(false)))
	h.mux.HandleFunc("POST /apps/{app}/groups/{group}/policy", h.admin(h.savePolicy))
	h.mux.HandleFunc("GET /apps/{app}/instances/{id}", h.auth(h.instancePage))
	h.mux.HandleFunc("GET /packages", h.auth(h.packagesIndex))
	h.mux.HandleFunc("GET /apps/{app}/packages", h.auth(h.packagesPage))
	h.mux.HandleFunc("POST /apps/{app}/packages", h.admin(h.createPackage))
	h.mux.HandleFunc("POST /apps/{app}/channels/{channel}/promote", h.admin(h.promote))
	h.mux.HandleFunc("GET /units", h.auth(h.unitsPage))
	h.mux.HandleFunc("GET /events", h.serveEvents)
	h.mux.HandleFunc("/", h.auth(func(w http.ResponseWriter, r *http.Request, v *viewer) {
		h.errorPage(w, r, v, http.StatusNotFound, "There is no page at "+r.URL.Path+".")
	}))
}

// ServeHTTP sets the security headers and dispatches.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "same-origin")
	hd.Set("X-Frame-Options", "DENY")
	if !strings.HasPrefix(r.URL.Path, "/static/") {
		hd.Set("Cache-Control", "no-store")
	}
	h.mux.ServeHTTP(w, r)
}

// viewer is the signed-in user of a request.
type viewer struct {
	sess  session
	token store.Token
	csrf  string
}

func (v *viewer) canEdit() bool { return v != nil && v.token.Role == restapi.RoleAdmin }

// lookupToken finds a token by id, re-reading the token list at most every
// tokenCacheTTL so that a deleted token's sessions end quickly.
func (h *Handler) lookupToken(ctx context.Context, id string) (store.Token, bool, error) {
	h.mu.Lock()
	fresh := h.tokens != nil && h.now().Sub(h.tokensAt) < tokenCacheTTL
	tok, ok := h.tokens[id]
	h.mu.Unlock()
	if fresh {
		return tok, ok, nil
	}
	list, err := h.st.ListTokens(ctx)
	if err != nil {
		return store.Token{}, false, err
	}
	m := make(map[string]store.Token, len(list))
	for _, t := range list {
		m[t.ID] = t
	}
	h.mu.Lock()
	h.tokens, h.tokensAt = m, h.now()
	h.mu.Unlock()
	tok, ok = m[id]
	return tok, ok, nil
}

// currentViewer returns the request's valid session, or nil.
func (h *Handler) currentViewer(r *http.Request) (*viewer, error) {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return nil, nil
	}
	s, err := h.decodeSession(c.Value, h.now())
	if err != nil || h.isRevoked(s.ID) {
		return nil, nil
	}
	tok, ok, err := h.lookupToken(r.Context(), s.TokenID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, nil // token deleted
	}
	return &viewer{sess: s, token: tok, csrf: h.csrfToken(s)}, nil
}

type viewerFunc func(w http.ResponseWriter, r *http.Request, v *viewer)

// auth requires a session: a page without one redirects to /login, any
// other method is refused with 403. Every POST must carry the session's
// CSRF token in the form field "csrf".
func (h *Handler) auth(fn viewerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := h.currentViewer(r)
		if err != nil {
			h.log.Error("dashboard: session check failed", "err", err)
			h.errorPage(w, r, nil, http.StatusInternalServerError, "The server could not check your session; see the server log.")
			return
		}
		if v == nil {
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			h.errorPage(w, r, nil, http.StatusForbidden, "You are not signed in (or your session has ended). Sign in and try again.")
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			if !h.validCSRF(v.sess, r.PostFormValue("csrf")) {
				h.errorPage(w, r, v, http.StatusForbidden, "The form was missing its security token or it did not match your session. Reload the page and try again.")
				return
			}
		}
		fn(w, r, v)
	}
}

// admin is auth plus the admin role.
func (h *Handler) admin(fn viewerFunc) http.HandlerFunc {
	return h.auth(func(w http.ResponseWriter, r *http.Request, v *viewer) {
		if !v.canEdit() {
			h.errorPage(w, r, v, http.StatusForbidden, fmt.Sprintf("Token %q is read-only (role %s).", v.token.Name, v.token.Role))
			return
		}
		fn(w, r, v)
	})
}

// safeNext keeps a post-login redirect on this site.
func safeNext(s string) string {
	if !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") || strings.HasPrefix(s, "/\\") || strings.HasPrefix(s, "/login") {
		return "/"
	}
	return s
}

func (h *Handler) loginForm(w http.ResponseWriter, r *http.Request) {
	h.render(w, r, nil, http.StatusOK, "login", "Sign in", map[string]any{"Next": safeNext(r.URL.Query().Get("next"))})
}

func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	secret := strings.TrimSpace(r.PostFormValue("token"))
	next := safeNext(r.PostFormValue("next"))
	fail := func(status int, msg string) {
		h.render(w, r, nil, status, "login", "Sign in", map[string]any{"Next": next, "Error": msg})
	}
	if secret == "" {
		fail(http.StatusUnauthorized, "Enter an API token.")
		return
	}
	tok, err := h.st.GetTokenByHash(r.Context(), restapi.HashToken(secret))
	if errors.Is(err, store.ErrNotFound) {
		fail(http.StatusUnauthorized, "That token is not valid. The admin token is in <data-dir>/admin.token; `flotilla token create` makes others.")
		return
	}
	if err != nil {
		h.log.Error("dashboard: look up token", "err", err)
		fail(http.StatusInternalServerError, "The server could not check the token; see the server log.")
		return
	}
	if tok.Role != restapi.RoleAdmin && tok.Role != restapi.RoleViewer {
		fail(http.StatusForbidden, "This token's role cannot use the dashboard.")
		return
	}
	s := session{ID: newSessionID(), TokenID: tok.ID, Role: tok.Role, Expires: h.now().Add(SessionTTL)}
	h.setSessionCookie(w, r, s)
	h.log.Info("dashboard sign-in", "token", tok.Name, "role", tok.Role)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request, v *viewer) {
	h.revoke(r.Context(), v.sess)
	clearSessionCookie(w, r)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// page is what every template gets.
type page struct {
	Title   string
	Nav     string
	Viewer  *viewer
	CanEdit bool
	CSRF    string
	User    string
	Role    string
	Locks   bool
	Live    string // URL of the page's event stream ("" = none)
	Data    any
}

func (h *Handler) render(w http.ResponseWriter, r *http.Request, v *viewer, status int, name, title string, data any) {
	p := page{Title: title, Nav: name, Viewer: v, Data: data, Locks: h.locks != nil}
	if v != nil && status == http.StatusOK {
		p.Live = eventsURL(name, r)
	}
	if v != nil {
		p.CanEdit, p.CSRF, p.User, p.Role = v.canEdit(), v.csrf, v.token.Name, v.token.Role
	}
	var buf bytes.Buffer
	if err := h.pages[name].Execute(&buf, p); err != nil {
		h.log.Error("dashboard: render", "page", name, "err", err)
		http.Error(w, "internal error rendering the page; see the server log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (h *Handler) errorPage(w http.ResponseWriter, r *http.Request, v *viewer, status int, msg string) {
	h.render(w, r, v, status, "error", http.StatusText(status), map[string]any{"Status": status, "Message": msg})
}

// fail renders an error page for err: 404 for a missing record, 500 (and a
// log line) otherwise.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, v *viewer, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		h.errorPage(w, r, v, http.StatusNotFound, "Not found: "+err.Error())
	case errors.Is(err, context.Canceled):
	default:
		h.log.Error("dashboard request failed", "path", r.URL.Path, "err", err)
		h.errorPage(w, r, v, http.StatusInternalServerError, "Something went wrong; see the server log.")
	}
}
