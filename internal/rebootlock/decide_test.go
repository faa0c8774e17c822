package rebootlock

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDecide(t *testing.T) {
	q := func(id string, rev int64) queued { return queued{id: id, createRev: rev} }
	tests := []struct {
		name    string
		max     int
		holders []string
		waiters []queued
		id      string
		want    decision
	}{
		{
			name: "empty group, queued alone",
			max:  1, waiters: []queued{q("a", 5)}, id: "a",
			want: decision{Grant: true, Position: 1, Queue: 1, Available: 1},
		},
		{
			name: "already holding is recursive",
			max:  1, holders: []string{"a"}, id: "a",
			want: decision{Held: true, Available: 0},
		},
		{
			name: "holding wins over a stale waiter entry",
			max:  2, holders: []string{"a"}, waiters: []queued{q("a", 3)}, id: "a",
			want: decision{Held: true, Available: 1},
		},
		{
			name: "not queued is never granted",
			max:  3, id: "a",
			want: decision{Available: 3},
		},
		{
			name: "full",
			max:  1, holders: []string{"x"}, waiters: []queued{q("a", 5)}, id: "a",
			want: decision{Position: 1, Queue: 1, Available: 0},
		},
		{
			name: "FIFO: second waiter waits for the first",
			max:  2, holders: []string{"x"}, waiters: []queued{q("b", 9), q("a", 7)}, id: "b",
			want: decision{Position: 2, Queue: 2, Available: 1},
		},
		{
			name: "FIFO: first waiter granted",
			max:  2, holders: []string{"x"}, waiters: []queued{q("b", 9), q("a", 7)}, id: "a",
			want: decision{Grant: true, Position: 1, Queue: 2, Available: 1},
		},
		{
			name: "two free slots serve the first two waiters",
			max:  3, holders: []string{"x"}, waiters: []queued{q("c", 12), q("a", 10), q("b", 11)}, id: "b",
			want: decision{Grant: true, Position: 2, Queue: 3, Available: 2},
		},
		{
			name: "third waiter with two free slots",
			max:  3, holders: []string{"x"}, waiters: []queued{q("c", 12), q("a", 10), q("b", 11)}, id: "c",
			want: decision{Position: 3, Queue: 3, Available: 2},
		},
		{
			name: "max lowered below holders",
			max:  1, holders: []string{"x", "y", "z"}, waiters: []queued{q("a", 7)}, id: "a",
			want: decision{Position: 1, Queue: 1, Available: 0},
		},
		{
			name: "max 0 stops all reboots",
			max:  0, waiters: []queued{q("a", 7)}, id: "a",
			want: decision{Position: 1, Queue: 1, Available: 0},
		},
		{
			name: "stale entries of holders do not take a position",
			max:  2, holders: []string{"x"}, waiters: []queued{q("x", 2), q("a", 7)}, id: "a",
			want: decision{Grant: true, Position: 1, Queue: 1, Available: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := decide(tt.max, tt.holders, tt.waiters, tt.id)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("decide (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	groups := []struct {
		in string
		ok bool
	}{
		{"default", true}, {"workers.eu-1", true}, {"A-9", true},
		{"", false}, {"a/b", false}, {"a b", false}, {"é", false}, {strings.Repeat("a", 254), false},
		{strings.Repeat("a", 253), true},
	}
	for _, g := range groups {
		err := ValidateGroup(g.in)
		if (err == nil) != g.ok || (err != nil && !errors.Is(err, ErrInvalidGroup)) {
			t.Errorf("ValidateGroup(%q) = %v, want ok=%v", g.in, err, g.ok)
		}
	}
	ids := []struct {
		in string
		ok bool
	}{
		{"0f2b7c5e-8d1a-4c3e-9b6f-2a7d4e8c1b90", true}, {"node 1", true}, {"Knoten-ü", true},
		{"", false}, {"a/b", false}, {"a\nb", false}, {"\x00", false}, {"\xff", false},
		{strings.Repeat("x", 254), false}, {strings.Repeat("x", 253), true},
	}
	for _, id := range ids {
		err := ValidateID(id.in)
		if (err == nil) != id.ok || (err != nil && !errors.Is(err, ErrInvalidID)) {
			t.Errorf("ValidateID(%q) = %v, want ok=%v", id.in, err, id.ok)
		}
	}
	if err := (GroupConfig{Max: 1001}).Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("max 1001: %v", err)
	}
	if err := (GroupConfig{Max: -1}).Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("max -1: %v", err)
	}
	if err := (GroupConfig{Max: 0}).Validate(); err != nil {
		t.Errorf("max 0: %v", err)
	}
}
