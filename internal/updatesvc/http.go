package updatesvc

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/flotilla/flotilla/omaha"
)

// MaxOmahaBody is the largest Omaha request accepted, as in Nebraska:
// update_engine's requests are about 1 KiB.
const MaxOmahaBody = 64 << 10

// OmahaHandler serves POST /v1/update/. Malformed or oversized bodies get
// HTTP 400 with a reason in plain text and change nothing; everything else
// gets HTTP 200 with an Omaha XML answer, as update_engine expects.
func (s *Service) OmahaHandler(trustForwardedFor bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "the Omaha endpoint takes POST requests with an XML body", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxOmahaBody))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				http.Error(w, fmt.Sprintf("omaha request body over %d bytes", MaxOmahaBody), http.StatusBadRequest)
				return
			}
			http.Error(w, "read request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		req, err := omaha.ParseRequest(strings.NewReader(string(body)))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		resp := s.Handle(r.Context(), req, clientIP(r, trustForwardedFor))
		out, err := resp.Marshal()
		if err != nil {
			s.log.Error("omaha: marshal response", "err", err)
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/xml; charset=utf-8")
		_, _ = w.Write(out)
	})
}

// clientIP is the socket peer, or the first X-Forwarded-For entry when the
// server is configured to sit behind a trusted proxy.
func clientIP(r *http.Request, trustForwardedFor bool) string {
	if trustForwardedFor {
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			first, _, _ := strings.Cut(xff, ",")
			if ip := net.ParseIP(strings.TrimSpace(first)); ip != nil {
				return ip.String()
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
