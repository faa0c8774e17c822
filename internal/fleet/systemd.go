package fleet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/flotilla/flotilla/internal/fleet/unitfile"
)

// DefaultSystemdUnitDir is where the systemd driver writes unit files:
// runtime units, gone after a reboot, like fleet's. The engine hands the
// units back after the reboot if they are still assigned here.
const DefaultSystemdUnitDir = "/run/systemd/system"

// SystemdDriver runs units through systemd over D-Bus: it writes the
// file, reloads systemd and starts or stops the unit. It connects on
// first use and again after an error.
type SystemdDriver struct {
	dir string

	mu   sync.Mutex
	conn *sddbus.Conn
}

// NewSystemdDriver returns a driver writing unit files to dir (empty:
// DefaultSystemdUnitDir).
func NewSystemdDriver(dir string) *SystemdDriver {
	if dir == "" {
		dir = DefaultSystemdUnitDir
	}
	return &SystemdDriver{dir: dir}
}

// call runs fn with a connection, dropping the connection if fn fails so
// the next call reconnects (systemd may have been re-executed).
func (d *SystemdDriver) call(ctx context.Context, fn func(*sddbus.Conn) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn == nil {
		c, err := sddbus.NewWithContext(ctx)
		if err != nil {
			return fmt.Errorf("connect to systemd: %w", err)
		}
		d.conn = c
	}
	if err := fn(d.conn); err != nil {
		d.conn.Close()
		d.conn = nil
		return err
	}
	return nil
}

// Load implements Loader: it writes the unit file if it changed and
// reloads systemd.
func (d *SystemdDriver) Load(ctx context.Context, f *unitfile.File) error {
	path := filepath.Join(d.dir, f.Name.Full)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, []byte(f.Raw)) {
		return nil
	}
	if err := os.MkdirAll(d.dir, 0o755); err != nil {
		return fmt.Errorf("load %s: %w", f.Name.Full, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(f.Raw), 0o644); err != nil {
		return fmt.Errorf("load %s: %w", f.Name.Full, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("load %s: %w", f.Name.Full, err)
	}
	if err := d.call(ctx, func(c *sddbus.Conn) error { return c.ReloadContext(ctx) }); err != nil {
		return fmt.Errorf("load %s: daemon-reload: %w", f.Name.Full, err)
	}
	return nil
}

// Unload implements Loader: it stops the unit, removes its file and
// reloads systemd.
func (d *SystemdDriver) Unload(ctx context.Context, name string) error {
	if err := d.Stop(ctx, name); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(d.dir, name)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("unload %s: %w", name, err)
	}
	err := d.call(ctx, func(c *sddbus.Conn) error {
		_ = c.ResetFailedUnitContext(ctx, name)
		return c.ReloadContext(ctx)
	})
	if err != nil {
		return fmt.Errorf("unload %s: daemon-reload: %w", name, err)
	}
	return nil
}

// Start implements Driver. A changed body is picked up by Load's reload;
// the unit is then restarted so the new body takes effect.
func (d *SystemdDriver) Start(ctx context.Context, f *unitfile.File) error {
	path := filepath.Join(d.dir, f.Name.Full)
	old, _ := os.ReadFile(path)
	changed := old != nil && !bytes.Equal(old, []byte(f.Raw))
	if err := d.Load(ctx, f); err != nil {
		return err
	}
	return d.job(ctx, f.Name.Full, func(c *sddbus.Conn, ch chan<- string) (int, error) {
		if changed {
			return c.RestartUnitContext(ctx, f.Name.Full, "replace", ch)
		}
		return c.StartUnitContext(ctx, f.Name.Full, "replace", ch)
	})
}

// Stop implements Driver.
func (d *SystemdDriver) Stop(ctx context.Context, name string) error {
	return d.job(ctx, name, func(c *sddbus.Conn, ch chan<- string) (int, error) {
		return c.StopUnitContext(ctx, name, "replace", ch)
	})
}

// job queues a systemd job and waits for its result, so Stop returns
// once the unit is down.
func (d *SystemdDriver) job(ctx context.Context, name string, queue func(*sddbus.Conn, chan<- string) (int, error)) error {
	ch := make(chan string, 1)
	if err := d.call(ctx, func(c *sddbus.Conn) error { _, err := queue(c, ch); return err }); err != nil {
		return fmt.Errorf("systemd job for %s: %w", name, err)
	}
	select {
	case res := <-ch:
		if res != "done" {
			return fmt.Errorf("systemd job for %s: %s", name, res)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("systemd job for %s: %w", name, ctx.Err())
	}
}

// State implements Driver.
func (d *SystemdDriver) State(ctx context.Context, name string) (DriverState, error) {
	var props map[string]any
	err := d.call(ctx, func(c *sddbus.Conn) error {
		var err error
		props, err = c.GetUnitPropertiesContext(ctx, name)
		return err
	})
	if err != nil {
		return DriverState{}, fmt.Errorf("state of %s: %w", name, err)
	}
	str := func(k string) string { s, _ := props[k].(string); return s }
	st := DriverState{Load: str("LoadState"), Active: str("ActiveState"), Sub: str("SubState")}
	if raw, err := os.ReadFile(filepath.Join(d.dir, name)); err == nil {
		st.Hash = unitfile.Hash(string(raw))
	}
	return st, nil
}
