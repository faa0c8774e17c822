package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// fakeUnits stands in for systemd's D-Bus API (the OS boundary).
type fakeUnits map[string]string

func (f fakeUnits) ActiveState(_ context.Context, unit string) (string, error) {
	s, ok := f[unit]
	if !ok {
		return "", errors.New("unit not found")
	}
	return s, nil
}

func TestHealthGateEvaluate(t *testing.T) {
	tests := []struct {
		name     string
		cfg      HealthConfig
		uptime   time.Duration
		pass     bool
		reasonIn string
	}{
		{"too early", HealthConfig{MinUptime: time.Minute}, 30 * time.Second, false, "uptime 30s < 1m0s"},
		{"uptime only", HealthConfig{MinUptime: time.Minute}, time.Minute, true, ""},
		{"units active", HealthConfig{Units: []string{"docker.service", "kubelet.service"}}, 0, true, ""},
		{"a unit failed", HealthConfig{Units: []string{"docker.service", "etcd.service"}}, 0, false, "unit etcd.service is failed"},
		{"a unit missing", HealthConfig{Units: []string{"nope.service"}}, 0, false, "unit nope.service: unit not found"},
		{"commands pass", HealthConfig{Commands: []string{"true", "test 1 -eq 1"}}, 0, true, ""},
		{"a command fails with its output", HealthConfig{Commands: []string{"true", "echo disk full >&2; exit 3"}}, 0, false, "exit status 3 disk full"},
	}
	units := fakeUnits{"docker.service": "active", "kubelet.service": "active", "etcd.service": "failed"}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Checker = units
			a := &Agent{cfg: Config{Health: tc.cfg}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			pass, reason := a.evaluate(context.Background(), tc.uptime)
			if pass != tc.pass || !strings.Contains(reason, tc.reasonIn) {
				t.Fatalf("evaluate = %v %q, want %v containing %q", pass, reason, tc.pass, tc.reasonIn)
			}
		})
	}
}
