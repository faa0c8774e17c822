package devcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/flotilla/flotilla/internal/agent"
	"github.com/flotilla/flotilla/internal/fleetlock"
	"github.com/flotilla/flotilla/internal/gpt"
)

// machine is one simulated host: a disk image file with the Flatcar
// layout, the real agent with its own data dir, and a simulated reboot.
// A reboot stops the agent (its context ends, as a shutdown would end the
// process), runs the bootloader's gptprio selection on the disk (the same
// pure function `flotilla boot select` runs), and starts a new agent with a
// new boot id on the chosen slot.
type machine struct {
	c     *cluster
	index int
	id    string
	alias string
	dir   string
	disk  string
	// failing machines run an application that breaks on the new version:
	// their health gate fails on any boot of a slot other than the one
	// they were installed on, so they roll back.
	failing bool

	mu       sync.Mutex
	bootID   string
	booted   gpt.Partition
	bootedAt time.Time
	boots    int
	ag       *agent.Agent

	rebootReq chan string
}

func newMachine(c *cluster, index int, id string, failing bool) (*machine, error) {
	dir := filepath.Join(c.opts.DataDir, "machines", fmt.Sprintf("node-%03d", index+1))
	m := &machine{
		c: c, index: index, id: id, alias: fmt.Sprintf("node-%03d", index+1), dir: dir,
		disk: filepath.Join(dir, "disk.img"), failing: failing, rebootReq: make(chan string, 1),
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("machine %s: %w", m.alias, err)
	}
	// A sparse image: only the GPT and what the agent writes take space.
	err := gpt.CreateImage(m.disk, gpt.ImageOptions{Size: 96 << 20, USRSize: 4 << 20, ESPSize: 2 << 20, OEMSize: 2 << 20, Force: true})
	if err != nil {
		return nil, fmt.Errorf("machine %s: %w", m.alias, err)
	}
	d, err := gpt.Open(m.disk)
	if err != nil {
		return nil, fmt.Errorf("machine %s: %w", m.alias, err)
	}
	defer d.Close()
	t, err := d.Table()
	if err != nil {
		return nil, fmt.Errorf("machine %s: %w", m.alias, err)
	}
	a, err := gpt.FindSlot(t, gpt.LabelUSRA)
	if err != nil {
		return nil, fmt.Errorf("machine %s: %w", m.alias, err)
	}
	// The installed release: USR-A holds the old image, as if provisioned.
	if _, err := d.PartitionWriter(a).WriteAt(c.oldImage, 0); err != nil {
		return nil, fmt.Errorf("machine %s: install %s: %w", m.alias, c.opts.FromVersion, err)
	}
	m.booted, m.bootID, m.bootedAt = a, uuid.NewString(), time.Now()
	return m, nil
}

// Reboot implements agent.Rebooter: the agent asks, the simulation reboots
// the machine from outside (the agent cannot stop itself mid-call).
func (m *machine) Reboot(_ context.Context, reason string) error {
	select {
	case m.rebootReq <- reason:
	default:
	}
	return nil
}

// ActiveState implements agent.UnitChecker for the demo application unit.
func (m *machine) ActiveState(context.Context, string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failing && m.booted.Name != gpt.LabelUSRA {
		return "failed", nil
	}
	return "active", nil
}

func (m *machine) uptime() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return time.Since(m.bootedAt)
}

// status is the running agent's report, or false while the machine is
// down.
func (m *machine) status() (agent.StatusReport, bool) {
	m.mu.Lock()
	ag := m.ag
	m.mu.Unlock()
	if ag == nil {
		return agent.StatusReport{}, false
	}
	return ag.Status(), true
}

// run boots the machine again and again until ctx ends.
func (m *machine) run(ctx context.Context, firstDelay time.Duration) error {
	delay := firstDelay
	for {
		ag, err := m.newAgent(delay)
		if err != nil {
			return err
		}
		actx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- ag.Run(actx) }()
		m.mu.Lock()
		m.ag = ag
		m.mu.Unlock()

		var reason string
		select {
		case <-ctx.Done():
		case reason = <-m.rebootReq:
		case err = <-done:
			// The agent only returns early on a fatal error.
			stop()
			return fmt.Errorf("machine %s: agent stopped: %w", m.alias, err)
		}
		stop()
		err = <-done
		m.mu.Lock()
		m.ag = nil
		m.mu.Unlock()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("machine %s: agent stopped: %w", m.alias, err)
		}
		m.c.event(m, "reboot", "rebooting: "+reason)
		if err := m.bootNext(); err != nil {
			return err
		}
		// A short outage, as a real reboot has.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(m.c.opts.RebootTime):
		}
		delay = 0
	}
}

// bootNext does what the bootloader does: pick the slot with gptprio and
// count down its tries, then start a new boot.
func (m *machine) bootNext() error {
	d, err := gpt.Open(m.disk)
	if err != nil {
		return fmt.Errorf("machine %s: boot: %w", m.alias, err)
	}
	defer d.Close()
	t, err := d.Table()
	if err != nil {
		return fmt.Errorf("machine %s: boot: %w", m.alias, err)
	}
	chosen, changed, err := gpt.BootNext(t)
	if errors.Is(err, gpt.ErrNoBootableSlot) {
		return fmt.Errorf("machine %s: boot: no bootable USR slot", m.alias)
	}
	if err != nil {
		return fmt.Errorf("machine %s: boot: %w", m.alias, err)
	}
	if changed || t.NeedsRepair() {
		if err := d.Commit(t); err != nil {
			return fmt.Errorf("machine %s: boot: %w", m.alias, err)
		}
	}
	m.mu.Lock()
	m.booted, m.bootID, m.bootedAt = chosen, uuid.NewString(), time.Now()
	m.boots++
	m.mu.Unlock()
	m.c.event(m, "boot", "booted "+chosen.Name)
	return nil
}

func (m *machine) newAgent(initialDelay time.Duration) (*agent.Agent, error) {
	o := m.c.opts
	m.mu.Lock()
	bootID, booted := m.bootID, m.booted.GUID.String()
	m.mu.Unlock()
	cfg := agent.DefaultConfig()
	cfg.DataDir = filepath.Join(m.dir, "agent")
	cfg.UpdateConfPaths = nil // nothing from the host's /etc
	cfg.Overrides = map[string]string{
		agent.KeyServer:         m.c.url + "/v1/update/",
		agent.KeyGroup:          demoGroup,
		agent.KeyRebootStrategy: agent.StrategyFleet,
		agent.KeyMachineAlias:   m.alias,
	}
	cfg.MachineID, cfg.BootID, cfg.BootedPartUUID = m.id, bootID, booted
	cfg.OSVersion, cfg.OEM, cfg.OEMVersion = o.FromVersion, "flotilla-dev", "1"
	cfg.Disk = m.disk
	cfg.PayloadKeyPaths = []string{m.c.keyDir}
	cfg.InitialDelay, cfg.CheckInterval = initialDelay, o.CheckInterval
	cfg.Health = agent.HealthConfig{
		MinUptime: o.MinUptime, Timeout: o.HealthTimeout, Interval: 250 * time.Millisecond,
		Units: []string{"demo-app.service"}, Checker: m, Uptime: m.uptime,
	}
	cfg.RebootRequiredFile = filepath.Join(m.dir, "reboot-required")
	cfg.Rebooter = m
	cfg.Coordinators = map[string]agent.Coordinator{
		agent.StrategyFleet: &agent.FleetLockCoordinator{
			Client: &fleetlock.Client{BaseURL: m.c.url + "/fleetlock", HTTP: m.c.lockHTTP},
			Group:  demoLockGroup, ID: m.id, Interval: time.Second, Log: m.log(),
		},
	}
	cfg.HTTPClient = m.c.http
	return agent.New(cfg, m.log(), nil)
}

func (m *machine) log() *slog.Logger { return m.c.agentLog.With("machine", m.alias) }

// sharedClients are the HTTP clients every simulated machine uses, so 200
// machines share one connection pool instead of opening 200.
func sharedClients() (omahaHTTP, lockHTTP *http.Client) {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second, ResponseHeaderTimeout: time.Minute}
	return &http.Client{Transport: tr}, &http.Client{Transport: tr, Timeout: time.Minute}
}
