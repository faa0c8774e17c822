package dashboard

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// KeySize is the length of the session signing key in bytes.
const KeySize = 32

// SessionTTL is how long a sign-in lasts.
const SessionTTL = 12 * time.Hour

// cookieName is the session cookie.
const cookieName = "flotilla_session"

// LoadKey returns the session signing key kept in <dataDir>/dashboard.key,
// creating it (KeySize random bytes, mode 0600) on first use so that
// sessions survive a restart.
func LoadKey(dataDir string) ([]byte, error) {
	path := filepath.Join(dataDir, "dashboard.key")
	key, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key = make([]byte, KeySize)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("dashboard key: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return LoadKey(dataDir) // created concurrently
		}
		if err != nil {
			return nil, fmt.Errorf("dashboard key: %w", err)
		}
		_, werr := f.Write(key)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			os.Remove(path)
			return nil, fmt.Errorf("dashboard key: %w", werr)
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dashboard key: %w", err)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("dashboard key %s: %d bytes, want %d (delete it to make a new one; everyone signs in again)", path, len(key), KeySize)
	}
	return key, nil
}

// session is what the signed cookie carries.
type session struct {
	ID      string // random; CSRF tokens and logout refer to it
	TokenID string
	Role    string
	Expires time.Time
}

// The cookie value is base64url(payload) "." base64url(HMAC-SHA256(payload))
// with payload "v1|<session id>|<token id>|<role>|<expiry unix>". Fields
// are hex ids and fixed words, so "|" cannot occur inside one.
const sessionVersion = "v1"

func (h *Handler) mac(purpose string, data []byte) []byte {
	m := hmac.New(sha256.New, h.key)
	m.Write([]byte(purpose))
	m.Write([]byte{0})
	m.Write(data)
	return m.Sum(nil)
}

func (h *Handler) encodeSession(s session) string {
	payload := strings.Join([]string{sessionVersion, s.ID, s.TokenID, s.Role, strconv.FormatInt(s.Expires.Unix(), 10)}, "|")
	sig := h.mac("session", []byte(payload))
	return base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + base64.RawURLEncoding.EncodeToString(sig)
}

var errBadSession = errors.New("invalid session cookie")

// decodeSession checks the signature and expiry of a cookie value. It does
// not check that the token still exists.
func (h *Handler) decodeSession(v string, now time.Time) (session, error) {
	p64, s64, ok := strings.Cut(v, ".")
	if !ok {
		return session{}, errBadSession
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(p64)
	sig, err2 := base64.RawURLEncoding.DecodeString(s64)
	if err1 != nil || err2 != nil || !hmac.Equal(sig, h.mac("session", payload)) {
		return session{}, errBadSession
	}
	f := bytes.Split(payload, []byte("|"))
	if len(f) != 5 || string(f[0]) != sessionVersion {
		return session{}, errBadSession
	}
	exp, err := strconv.ParseInt(string(f[4]), 10, 64)
	if err != nil {
		return session{}, errBadSession
	}
	s := session{ID: string(f[1]), TokenID: string(f[2]), Role: string(f[3]), Expires: time.Unix(exp, 0)}
	if !now.Before(s.Expires) {
		return session{}, errors.New("session expired")
	}
	return s, nil
}

// csrfToken is the anti-CSRF value every form of the session carries.
func (h *Handler) csrfToken(s session) string {
	return hex.EncodeToString(h.mac("csrf", []byte(s.ID)))
}

func (h *Handler) validCSRF(s session, got string) bool {
	want := h.csrfToken(s)
	return hmac.Equal([]byte(got), []byte(want))
}

func newSessionID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (h *Handler) setSessionCookie(w http.ResponseWriter, r *http.Request, s session) {
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: h.encodeSession(s), Path: "/", Expires: s.Expires,
		MaxAge: int(time.Until(s.Expires).Seconds()), HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
}

func clearSessionCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
}

// Revocations share signed-out sessions between server replicas (see
// replica.Revocations). Without them the list lives in this process only:
// after a restart, or on another replica, a copied cookie of a signed-out
// session works until its expiry (the browser that signed out deleted it).
type Revocations interface {
	Revoke(ctx context.Context, id string, expires time.Time) error
	Revoked(id string) bool
}

// WithRevocations shares sign-outs through r.
func WithRevocations(r Revocations) Option { return func(h *Handler) { h.revs = r } }

// revoke remembers a logged-out session id until it would have expired
// anyway: in memory, and in the shared set when there is one.
func (h *Handler) revoke(ctx context.Context, s session) {
	h.mu.Lock()
	now := h.now()
	for id, exp := range h.revoked {
		if !now.Before(exp) {
			delete(h.revoked, id)
		}
	}
	h.revoked[s.ID] = s.Expires
	h.mu.Unlock()
	if h.revs != nil {
		if err := h.revs.Revoke(ctx, s.ID, s.Expires); err != nil {
			h.log.Warn("dashboard: share sign-out with other replicas", "err", err)
		}
	}
}

func (h *Handler) isRevoked(id string) bool {
	h.mu.Lock()
	_, ok := h.revoked[id]
	h.mu.Unlock()
	return ok || (h.revs != nil && h.revs.Revoked(id))
}
