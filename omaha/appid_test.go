package omaha

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalizeAppID(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"e96281a6-d1af-4bde-9a0a-97b76e56dc57", FlatcarAppID, true},
		{"{e96281a6-d1af-4bde-9a0a-97b76e56dc57}", FlatcarAppID, true},
		{"{E96281A6-D1AF-4BDE-9A0A-97B76E56DC57}", FlatcarAppID, true},
		{"  {e96281a6-D1AF-4bde-9a0a-97b76e56dc57}\n", FlatcarAppID, true},
		{"{87EFFACE-864D-49A5-9BB3-4B050A7C227A}", "87efface-864d-49a5-9bb3-4b050a7c227a", true},
		{"", "", false},
		{"{}", "", false},
		{"flatcar", "", false},
		{"{e96281a6-d1af-4bde-9a0a-97b76e56dc57", "", false},
		{"e96281a6-d1af-4bde-9a0a-97b76e56dc57}", "", false},
		{"{{e96281a6-d1af-4bde-9a0a-97b76e56dc57}}", "", false},
		{"e96281a6d1af4bde9a0a97b76e56dc57", "", false},
		{"e96281a6-d1af-4bde-9a0a-97b76e56dc5g", "", false},
		{"e96281a6_d1af-4bde-9a0a-97b76e56dc57", "", false},
		{"e96281a6-d1af-4bde-9a0a-97b76e56dc57x", "", false},
	}
	for _, tt := range tests {
		got, err := NormalizeAppID(tt.in)
		if tt.ok {
			if err != nil || got != tt.want {
				t.Errorf("NormalizeAppID(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
			continue
		}
		if !errors.Is(err, ErrMalformed) || !strings.HasPrefix(err.Error(), "normalize app id: ") || !strings.Contains(err.Error(), "not a UUID") {
			t.Errorf("NormalizeAppID(%q) error = %v; want ErrMalformed saying it is not a UUID", tt.in, err)
		}
	}
}

func TestLegacyTrack(t *testing.T) {
	tests := []struct {
		track, want string
		ok          bool
	}{
		{"5b810680-e36a-4879-b98a-4f989e80b899", "alpha", true},
		{"3fe10490-dd73-4b49-b72a-28ac19acfcdc", "beta", true},
		{"9a2deb70-37be-4026-853f-bfdd6b347bbe", "stable", true},
		{"72834a2b-ad86-4d6d-b498-e08a19ebe54e", "edge", true},
		{"e641708d-fb48-4260-8bdf-ba2074a1147a", "alpha", true},
		{"d112ec01-ba34-4a9e-9d4b-9814a685f266", "beta", true},
		{"11a585f6-9418-4df0-8863-78b2fd3240f8", "stable", true},
		{"b4b2fa22-c1ea-498c-a8ac-c1dc0b1d7c17", "edge", true},
		{"{9A2DEB70-37BE-4026-853F-BFDD6B347BBE}", "stable", true},
		{"{b4b2fa22-c1ea-498c-a8ac-c1dc0b1d7c17}", "edge", true},
		{"stable", "", false},
		{"", "", false},
		{FlatcarAppID, "", false},
	}
	for _, tt := range tests {
		got, ok := LegacyTrack(tt.track)
		if got != tt.want || ok != tt.ok {
			t.Errorf("LegacyTrack(%q) = %q, %v; want %q, %v", tt.track, got, ok, tt.want, tt.ok)
		}
	}
	if len(legacyGroups) != 8 {
		t.Errorf("legacyGroups has %d entries, want 8", len(legacyGroups))
	}
}
