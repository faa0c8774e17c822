package agent_test

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/flotilla/flotilla/internal/agent"
	"github.com/flotilla/flotilla/internal/gpt"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/updatesvc"
	"github.com/flotilla/flotilla/omaha"
)

// TestUpdateAToBToA updates a machine twice against a real server: 1.0.0
// on USR-A → 1.1.0 on USR-B → 1.2.0 on USR-A, with simulated reboots, and
// checks the GPT attributes at every step of ab-updates.md's table.
func TestUpdateAToBToA(t *testing.T) {
	e := newEnv(t)
	m := newMachine(t, e, nil)
	m.start()
	m.waitStatus("an idle first check", func(r agent.StatusReport) bool { return r.LastCheckedTime != 0 })
	if in := e.instance(m.id); in.Version != "1.0.0" || in.Alias != m.id[:6] {
		t.Fatalf("server record after the first check: %+v", in)
	}

	p1 := e.publish("1.1.0")
	m.trigger()
	st := m.waitStatus("UPDATED_NEED_REBOOT", func(r agent.StatusReport) bool { return r.CurrentOperation == agent.StatusUpdatedNeedReboot })
	if st.NewVersion != "1.1.0" || st.NewSize != p1.size || st.Progress != 1 {
		t.Fatalf("status after applying: %+v", st)
	}
	if _, err := os.Stat(m.config().RebootRequiredFile); err != nil {
		t.Fatalf("reboot-required marker: %v", err)
	}
	a, b := m.slots()
	if attrs(a) != "prio=1 tries=0 succ=true" || attrs(b) != "prio=2 tries=1 succ=false" {
		t.Fatalf("after the commit: A %s, B %s", attrs(a), attrs(b))
	}
	if !bytes.Equal(m.slotContent(gpt.LabelUSRB, imageSize), p1.image) {
		t.Fatal("USR-B does not hold the 1.1.0 image")
	}
	e.waitInstance(m.id, "installed", func(in store.Instance) bool { return in.Status == store.StatusInstalled })
	if reason := m.waitReboot(); !strings.Contains(reason, "1.1.0") {
		t.Fatalf("reboot reason %q", reason)
	}

	if p := m.reboot(); p.Name != gpt.LabelUSRB {
		t.Fatalf("bootloader chose %s, want USR-B", p.Name)
	}
	e.waitInstance(m.id, "complete on 1.1.0", func(in store.Instance) bool {
		return in.Status == store.StatusComplete && in.Version == "1.1.0"
	})
	st = m.waitStatus("healthy on 1.1.0", func(r agent.StatusReport) bool { return r.BootHealthy && r.CurrentVersion == "1.1.0" })
	a, b = m.slots()
	if attrs(a) != "prio=1 tries=0 succ=true" || attrs(b) != "prio=2 tries=0 succ=true" {
		t.Fatalf("after marking B good: A %s, B %s", attrs(a), attrs(b))
	}
	if _, err := os.Stat(m.config().RebootRequiredFile); !os.IsNotExist(err) {
		t.Fatalf("reboot-required marker survived the reboot: %v", err)
	}

	p2 := e.publish("1.2.0")
	m.trigger()
	m.waitStatus("UPDATED_NEED_REBOOT for 1.2.0", func(r agent.StatusReport) bool {
		return r.CurrentOperation == agent.StatusUpdatedNeedReboot && r.NewVersion == "1.2.0"
	})
	a, b = m.slots()
	if attrs(a) != "prio=2 tries=1 succ=false" || attrs(b) != "prio=1 tries=0 succ=true" {
		t.Fatalf("after the second commit: A %s, B %s", attrs(a), attrs(b))
	}
	m.waitReboot()
	if p := m.reboot(); p.Name != gpt.LabelUSRA {
		t.Fatalf("bootloader chose %s, want USR-A", p.Name)
	}
	e.waitInstance(m.id, "complete on 1.2.0", func(in store.Instance) bool {
		return in.Status == store.StatusComplete && in.Version == "1.2.0"
	})
	if !bytes.Equal(m.slotContent(gpt.LabelUSRA, imageSize), p2.image) {
		t.Fatal("USR-A does not hold the 1.2.0 image")
	}
	m.waitStatus("healthy on 1.2.0", func(r agent.StatusReport) bool { return r.BootHealthy && r.CurrentVersion == "1.2.0" })
}

// TestRejectedPayloads: every way a payload can be wrong is refused with
// update_engine's error code, and the GPT is not touched.
func TestRejectedPayloads(t *testing.T) {
	cases := []struct {
		name string
		code int
		// prepare returns the published payload as announced to the server.
		prepare func(e *env, m *machine) published
	}{
		{"corrupted in transit", omaha.CodePayloadHashMismatch, func(e *env, m *machine) published {
			p := e.buildPayload("1.1.0", e.priv)
			flipByte(t, e.fileDir+"/"+p.file, p.size-100)
			return p
		}},
		{"size mismatch", omaha.CodePayloadSizeMismatch, func(e *env, m *machine) published {
			p := e.buildPayload("1.1.0", e.priv)
			p.size += 10
			return p
		}},
		{"tampered payload with a matching Omaha hash", omaha.CodeDownloadPayloadVerification, func(e *env, m *machine) published {
			p := e.buildPayload("1.1.0", e.priv)
			path := e.fileDir + "/" + p.file
			flipByte(t, path, p.size-100)
			p.sha256 = fileSHA256(t, path)
			return p
		}},
		{"signed by an untrusted key", omaha.CodeDownloadPayloadVerification, func(e *env, m *machine) published {
			_, other := mustKey(t)
			return e.buildPayload("1.1.0", other)
		}},
		{"unsigned", omaha.CodeDownloadSignatureMissingInManifest, func(e *env, m *machine) published {
			return e.buildPayload("1.1.0", nil)
		}},
		{"no trusted key on the machine", omaha.CodeDownloadPayloadPubKeyVerification, func(e *env, m *machine) published {
			m.tweak = func(c *agent.Config) { c.PayloadKeyPaths = []string{t.TempDir() + "/none"} }
			return e.buildPayload("1.1.0", e.priv)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			m := newMachine(t, e, nil)
			p := tc.prepare(e, m)
			before := m.gptBytes()
			slotB := m.slotContent(gpt.LabelUSRB, 1<<20)
			e.announce(p)
			m.start()
			st := m.waitStatus("the failure", func(r agent.StatusReport) bool {
				return r.LastError != nil && r.CurrentOperation == agent.StatusIdle
			})
			if st.LastError.Code != tc.code {
				t.Fatalf("error %d %s (%s), want code %d", st.LastError.Code, st.LastError.Name, st.LastError.Message, tc.code)
			}
			in := e.waitInstance(m.id, "error", func(in store.Instance) bool { return in.Status == store.StatusError })
			if in.LastErrorCode&omaha.CodeMask != int64(tc.code) {
				t.Fatalf("server got error code %d, want %d", in.LastErrorCode, tc.code)
			}
			m.stop()
			if !bytes.Equal(before, m.gptBytes()) {
				t.Fatal("a rejected payload changed the GPT")
			}
			if !bytes.Equal(slotB, m.slotContent(gpt.LabelUSRB, 1<<20)) {
				t.Fatal("a rejected payload wrote into USR-B")
			}
			entries, _ := os.ReadDir(m.config().DataDir + "/staging")
			if len(entries) != 0 {
				t.Fatalf("staging not cleaned after the failure: %d files", len(entries))
			}
		})
	}
}

// TestRollbackWhenTriesRunOut: the new slot boots but dies before the
// health gate passes; the next boot falls back to the old slot. The agent
// reports 3/0/44 and never installs that version again on its own.
func TestRollbackWhenTriesRunOut(t *testing.T) {
	e := newEnv(t)
	m := newMachine(t, e, func(c *agent.Config) { c.Health.MinUptime = time.Hour })
	e.publish("1.1.0")
	m.start()
	m.waitReboot()
	if p := m.reboot(); p.Name != gpt.LabelUSRB {
		t.Fatalf("first boot after the update chose %s", p.Name)
	}
	// The new boot never becomes healthy (MinUptime); it crashes and the
	// machine restarts: B has no tries left and is not marked good.
	m.waitStatus("the gate waiting", func(r agent.StatusReport) bool { return r.CurrentVersion == "1.1.0" && !r.BootHealthy })
	if p := m.reboot(); p.Name != gpt.LabelUSRA {
		t.Fatalf("after the failed boot the bootloader chose %s, want USR-A", p.Name)
	}
	st := m.waitStatus("the rollback", func(r agent.StatusReport) bool { return len(r.BlockedVersions) == 1 })
	if st.BlockedVersions[0] != "1.1.0" || st.CurrentVersion != "1.0.0" || st.LastError == nil || st.LastError.Code != omaha.CodeRollbackError {
		t.Fatalf("status after the rollback: %+v", st)
	}
	in := e.waitInstance(m.id, "rolled-back", func(in store.Instance) bool { return in.Status == store.StatusRolledBack })
	if !omaha.IsRollback(in.LastErrorCode) || in.Version != "1.0.0" {
		t.Fatalf("server record after the rollback: %+v", in)
	}

	// The server forgets the machine (an operator deleted it) and offers
	// 1.1.0 again: the agent refuses on its own, and touches nothing.
	before := m.gptBytes()
	if err := e.srv.Store().DeleteInstance(context.Background(), omaha.FlatcarAppID, m.id); err != nil {
		t.Fatal(err)
	}
	// The rollback auto-paused the group; the operator resumes it.
	resume := false
	if _, err := e.srv.Service().UpdateGroup(context.Background(), omaha.FlatcarAppID, "stable", updatesvc.GroupChange{Pause: &resume}); err != nil {
		t.Fatal(err)
	}
	m.trigger()
	st = m.waitStatus("the refusal", func(r agent.StatusReport) bool {
		return r.LastError != nil && r.LastError.Code == omaha.CodeOmahaUpdateIgnoredPerPolicy
	})
	if st.CurrentOperation != agent.StatusIdle {
		t.Fatalf("status after refusing: %+v", st)
	}
	m.stop()
	if !bytes.Equal(before, m.gptBytes()) {
		t.Fatal("refusing a blocked version changed the GPT")
	}
}

// TestHealthGateFailureRollsBack: a boot whose health check keeps failing
// is rebooted by the agent itself, and comes back on the old slot.
func TestHealthGateFailureRollsBack(t *testing.T) {
	e := newEnv(t)
	healthy := true
	m := newMachine(t, e, nil)
	m.tweak = func(c *agent.Config) {
		if !healthy {
			c.Health.Commands = []string{"echo database not ready; exit 1"}
			c.Health.Timeout = 300 * time.Millisecond
		}
	}
	e.publish("1.1.0")
	m.start()
	m.waitReboot()
	healthy = false
	m.reboot()
	reason := m.waitReboot()
	if !strings.Contains(reason, "database not ready") {
		t.Fatalf("rollback reboot reason %q does not say why", reason)
	}
	a, b := m.slots()
	if b.Attributes.Bootable() || !a.Attributes.Bootable() {
		t.Fatalf("before the rollback reboot: A %s, B %s", attrs(a), attrs(b))
	}
	healthy = true
	if p := m.reboot(); p.Name != gpt.LabelUSRA {
		t.Fatalf("rollback boot chose %s", p.Name)
	}
	e.waitInstance(m.id, "rolled-back", func(in store.Instance) bool { return in.Status == store.StatusRolledBack })
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
