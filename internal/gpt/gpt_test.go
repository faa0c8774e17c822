package gpt

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestGUIDOnDiskOrder(t *testing.T) {
	// The USR type as stored in an entry (first three fields little-endian).
	want := []byte{0xf4, 0xf5, 0xfb, 0x5d, 0x48, 0x28, 0xac, 0x4b, 0xaa, 0x5e, 0x0d, 0x9a, 0x20, 0xb7, 0x45, 0xa6}
	if !bytes.Equal(TypeUSR[:], want) {
		t.Errorf("TypeUSR bytes = % x, want % x", TypeUSR[:], want)
	}
	if got := TypeUSR.String(); got != "5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6" {
		t.Errorf("String() = %s", got)
	}
}

func TestParseGUID(t *testing.T) {
	for _, s := range []string{
		"7130c94a-213a-4e5a-8e26-6cce9662f132",
		"E03DD35C-7C2D-4A47-B3FE-27F15780A57C",
		"00000000-0000-0000-0000-000000000000",
	} {
		g, err := ParseGUID(s)
		if err != nil {
			t.Fatalf("ParseGUID(%q): %v", s, err)
		}
		if g.String() != strings.ToLower(s) {
			t.Errorf("round trip %q → %q", s, g.String())
		}
	}
	for _, bad := range []string{"", "7130c94a213a4e5a8e266cce9662f132", "7130c94a-213a-4e5a-8e26-6cce9662f13", "7130c94a-213a-4e5a-8e26-6cce9662f13g", "{7130c94a-213a-4e5a-8e26-6cce9662f13}"} {
		if _, err := ParseGUID(bad); err == nil {
			t.Errorf("ParseGUID(%q) succeeded", bad)
		}
	}
}

func TestGUIDJSON(t *testing.T) {
	b, err := json.Marshal(struct{ G GUID }{USRBGUID})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"G":"e03dd35c-7c2d-4a47-b3fe-27f15780a57c"}` {
		t.Errorf("json = %s", b)
	}
	var back struct{ G GUID }
	if err := json.Unmarshal(b, &back); err != nil || back.G != USRBGUID {
		t.Errorf("unmarshal = %v, %v", back.G, err)
	}
}

func TestNewRandomGUID(t *testing.T) {
	seen := map[GUID]bool{}
	for range 100 {
		g := NewRandomGUID()
		s := g.String()
		if s[14] != '4' || !strings.ContainsRune("89ab", rune(s[19])) {
			t.Fatalf("%s is not a version 4 / RFC 4122 GUID", s)
		}
		if seen[g] {
			t.Fatalf("duplicate %s", s)
		}
		seen[g] = true
		if back, err := ParseGUID(s); err != nil || back != g {
			t.Fatalf("round trip %s: %v %v", s, back, err)
		}
	}
}

func TestAttributeBits(t *testing.T) {
	tests := []struct {
		a                 Attributes
		prio, tries       int
		succ, legacy, boo bool
	}{
		{0, 0, 0, false, false, false},
		{0x0101000000000000, 1, 0, true, false, true},   // fresh USR-A (sgdisk shows 0101000000000000)
		{0x0012000000000000, 2, 1, false, false, true},  // after postinst
		{0x0002000000000000, 2, 0, false, false, false}, // tries used up, never marked good
		{0x0100000000000000, 0, 0, true, false, false},  // priority 0 never boots
		{0x00f0000000000000, 0, 15, false, false, false},
		{0x01ff000000000004, 15, 15, true, true, true},
		{1 << 2, 0, 0, false, true, false},
	}
	for _, tt := range tests {
		a := tt.a
		if a.Priority() != tt.prio || a.Tries() != tt.tries || a.Successful() != tt.succ ||
			a.LegacyBIOSBootable() != tt.legacy || a.Bootable() != tt.boo {
			t.Errorf("%s: got prio %d tries %d succ %v legacy %v bootable %v", a,
				a.Priority(), a.Tries(), a.Successful(), a.LegacyBIOSBootable(), a.Bootable())
		}
	}
}

func TestAttributeSettersKeepOtherBits(t *testing.T) {
	// Required, legacy-bootable, read-only (60), no-auto (63) and some
	// type-specific bits must survive every setter.
	others := Attributes(1<<0 | 1<<2 | 1<<47 | 1<<57 | 1<<60 | 1<<63)
	a := others.WithPriority(9).WithTries(5).WithSuccessful(true)
	if want := others | 9<<48 | 5<<52 | 1<<56; a != want {
		t.Fatalf("got %s, want %s", a, want)
	}
	a = a.WithPriority(0).WithTries(0).WithSuccessful(false)
	if a != others {
		t.Errorf("cleared = %s, want %s", a, others)
	}
	if got := Attributes(0).WithPriority(99).Priority(); got != 15 {
		t.Errorf("priority clamp high = %d", got)
	}
	if got := Attributes(0).WithTries(-3).Tries(); got != 0 {
		t.Errorf("tries clamp low = %d", got)
	}
	if got := Attributes(0).WithTries(16); got != 15<<52 {
		t.Errorf("tries 16 leaked into bit 56: %s", got)
	}
}

func TestTypeName(t *testing.T) {
	if n, ok := TypeName(TypeUSR); !ok || n != "flatcar-usr" {
		t.Errorf("TypeName(USR) = %q %v", n, ok)
	}
	if _, ok := TypeName(NewRandomGUID()); ok {
		t.Error("random GUID has a name")
	}
}
