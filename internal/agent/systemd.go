package agent

import (
	"context"
	"fmt"
	"sync"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
)

// SystemdChecker reads unit states from systemd over D-Bus. It connects on
// first use and reconnects after an error, so an agent started before
// D-Bus is up still works once it is.
type SystemdChecker struct {
	mu   sync.Mutex
	conn *sddbus.Conn
}

// ActiveState returns the unit's ActiveState property.
func (c *SystemdChecker) ActiveState(ctx context.Context, unit string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		conn, err := sddbus.NewWithContext(ctx)
		if err != nil {
			return "", fmt.Errorf("connect to systemd: %w", err)
		}
		c.conn = conn
	}
	p, err := c.conn.GetUnitPropertyContext(ctx, unit, "ActiveState")
	if err != nil {
		c.conn.Close()
		c.conn = nil
		return "", fmt.Errorf("systemd: %w", err)
	}
	s, ok := p.Value.Value().(string)
	if !ok {
		return "", fmt.Errorf("systemd: ActiveState of %s is %v", unit, p.Value)
	}
	return s, nil
}

// Close drops the D-Bus connection.
func (c *SystemdChecker) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}
