package machineconfig

import (
	"context"
	"fmt"

	"github.com/coreos/go-systemd/v22/dbus"
)

// DBusSystemd is the SystemdNotifier of a running system: it talks to
// PID 1 over D-Bus. Use it only when the root is "/".
type DBusSystemd struct {
	conn *dbus.Conn
}

// NewSystemdNotifier connects to the system's systemd. Close it when done.
func NewSystemdNotifier(ctx context.Context) (*DBusSystemd, error) {
	conn, err := dbus.NewWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to systemd: %w", err)
	}
	return &DBusSystemd{conn: conn}, nil
}

// Close ends the D-Bus connection.
func (s *DBusSystemd) Close() { s.conn.Close() }

// DaemonReload implements SystemdNotifier.
func (s *DBusSystemd) DaemonReload(ctx context.Context) error {
	if err := s.conn.ReloadContext(ctx); err != nil {
		return fmt.Errorf("daemon-reload: %w", err)
	}
	return nil
}

// RunUnitCommand implements SystemdNotifier. The job mode is "replace",
// as coreos-cloudinit used, and the call waits for the job's result.
func (s *DBusSystemd) RunUnitCommand(ctx context.Context, unit, command string) error {
	type jobFunc func(ctx context.Context, name, mode string, ch chan<- string) (int, error)
	jobs := map[string]jobFunc{
		"start":                 s.conn.StartUnitContext,
		"stop":                  s.conn.StopUnitContext,
		"restart":               s.conn.RestartUnitContext,
		"reload":                s.conn.ReloadUnitContext,
		"try-restart":           s.conn.TryRestartUnitContext,
		"reload-or-restart":     s.conn.ReloadOrRestartUnitContext,
		"reload-or-try-restart": s.conn.ReloadOrTryRestartUnitContext,
	}
	job, ok := jobs[command]
	if !ok {
		return fmt.Errorf("%s %s: unknown unit command", command, unit)
	}
	done := make(chan string, 1)
	if _, err := job(ctx, unit, "replace", done); err != nil {
		return fmt.Errorf("%s %s: %w", command, unit, err)
	}
	select {
	case result := <-done:
		if result != "done" {
			return fmt.Errorf("%s %s: job %s", command, unit, result)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s %s: %w", command, unit, ctx.Err())
	}
}
