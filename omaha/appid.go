package omaha

import (
	"fmt"
	"strings"
)

// NormalizeAppID returns the canonical form of an application id: a lower
// case UUID without braces. Clients differ (update_engine sends braces,
// ChromeOS-era builds upper case), so ids must be normalized before they are
// compared or stored. Surrounding space is ignored. The error wraps
// ErrMalformed when s is not a UUID.
func NormalizeAppID(s string) (string, error) {
	id, ok := canonicalUUID(s)
	if !ok {
		return "", fmt.Errorf("normalize app id: %w: %s is not a UUID; expected 8-4-4-4-12 hex digits, braces optional", ErrMalformed, quote(s))
	}
	return id, nil
}

// canonicalUUID accepts "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" in any case,
// optionally in one pair of braces, and returns it lower case and bare.
func canonicalUUID(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '{' && s[len(s)-1] == '}' {
		s = s[1 : len(s)-1]
	}
	if len(s) != 36 {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return "", false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return "", false
			}
		}
	}
	return strings.ToLower(s), true
}

// legacyGroups are the group UUIDs of the original CoreOS / Flatcar public
// channels. Old machines still send them in track; Nebraska maps them to
// channel names (flatcar/nebraska backend/pkg/omaha/omaha.go,
// initialFlatcarGroups), and so does LegacyTrack.
var legacyGroups = map[string]string{
	// amd64
	"5b810680-e36a-4879-b98a-4f989e80b899": "alpha",
	"3fe10490-dd73-4b49-b72a-28ac19acfcdc": "beta",
	"9a2deb70-37be-4026-853f-bfdd6b347bbe": "stable",
	"72834a2b-ad86-4d6d-b498-e08a19ebe54e": "edge",
	// arm64
	"e641708d-fb48-4260-8bdf-ba2074a1147a": "alpha",
	"d112ec01-ba34-4a9e-9d4b-9814a685f266": "beta",
	"11a585f6-9418-4df0-8863-78b2fd3240f8": "stable",
	"b4b2fa22-c1ea-498c-a8ac-c1dc0b1d7c17": "edge",
}

// LegacyTrack maps one of the eight legacy CoreOS / Flatcar group UUIDs
// (four amd64, four arm64) sent in track to its channel name: "alpha",
// "beta", "stable" or "edge". Braces are optional and case is ignored. ok is
// false for anything else, including channel names themselves. Each UUID
// belongs to one architecture, but servers should route by App.Board, as
// Nebraska does.
func LegacyTrack(track string) (name string, ok bool) {
	id, valid := canonicalUUID(track)
	if !valid {
		return "", false
	}
	name, ok = legacyGroups[id]
	return name, ok
}
