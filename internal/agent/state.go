package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Status strings, exactly update_engine's, because locksmithd, FLUO and
// scripts parse them.
const (
	StatusIdle              = "UPDATE_STATUS_IDLE"
	StatusChecking          = "UPDATE_STATUS_CHECKING_FOR_UPDATE"
	StatusUpdateAvailable   = "UPDATE_STATUS_UPDATE_AVAILABLE"
	StatusDownloading       = "UPDATE_STATUS_DOWNLOADING"
	StatusVerifying         = "UPDATE_STATUS_VERIFYING"
	StatusFinalizing        = "UPDATE_STATUS_FINALIZING"
	StatusUpdatedNeedReboot = "UPDATE_STATUS_UPDATED_NEED_REBOOT"
	StatusReportingError    = "UPDATE_STATUS_REPORTING_ERROR_EVENT"
	stateFileName           = "state.json"
	stateFormat             = 1
	noPreviousVersion       = "0.0.0.0"
)

// Install steps of a pending update, in order. The step persisted before a
// crash tells the agent where to resume.
const (
	stepDownload = "download"
	stepVerify   = "verify"
	stepWrite    = "write"
	stepCommit   = "commit"
)

// Pending is an update being installed.
type Pending struct {
	Version string `json:"version"`
	URL     string `json:"url"`
	Size    int64  `json:"size"`
	// SHA256 is the payload file's digest from the Omaha answer, hex.
	SHA256 string `json:"sha256"`
	Step   string `json:"step"`
	// TargetPartUUID is set once the target slot was chosen (write step).
	TargetPartUUID string `json:"target_partuuid,omitempty"`
	// ImageSHA256 is the verified image digest (from the signed header).
	ImageSHA256 string `json:"image_sha256,omitempty"`
	// DataSize and DataSHA256 describe the payload's data section, hashed
	// while it downloaded.
	DataSize   int64     `json:"data_size,omitempty"`
	DataSHA256 string    `json:"data_sha256,omitempty"`
	ImageSize  int64     `json:"image_size,omitempty"`
	Sent13     bool      `json:"sent_download_started,omitempty"`
	Sent14     bool      `json:"sent_download_finished,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	Resumed    bool      `json:"resumed,omitempty"`
	// BootID is the boot in which the commit step started; a different
	// boot id at restart means power was lost around the GPT commit.
	BootID string `json:"boot_id,omitempty"`
}

// RebootPending is an applied update waiting for the machine to boot it.
type RebootPending struct {
	Version        string    `json:"version"`
	TargetPartUUID string    `json:"target_partuuid"`
	FromVersion    string    `json:"from_version"`
	FromPartUUID   string    `json:"from_partuuid"`
	BootID         string    `json:"boot_id"`
	AppliedAt      time.Time `json:"applied_at"`
	// TrialBootID is the boot that first ran the update. The record stays
	// until that boot passed the health gate, so a fall back to the old
	// slot after it (tries ran out) is still recognised as a rollback.
	TrialBootID string `json:"trial_boot_id,omitempty"`
}

// SlotRecord is what the agent wrote into a slot, so that the running
// version is known when the machine boots it.
type SlotRecord struct {
	Version     string    `json:"version"`
	ImageSHA256 string    `json:"image_sha256"`
	ImageSize   int64     `json:"image_size"`
	WrittenAt   time.Time `json:"written_at"`
}

// LastError is the last failure, kept so `agent status` can say what went
// wrong long after the log scrolled away (update_engine only logs it).
type LastError struct {
	Code    int       `json:"code"`
	Name    string    `json:"name"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// State is everything the agent must not forget across restarts and
// reboots. It is written atomically (temp file, fsync, rename, fsync dir)
// at every step change.
type State struct {
	Format      int       `json:"format"`
	Status      string    `json:"status"`
	LastChecked time.Time `json:"last_checked,omitempty"`
	NewVersion  string    `json:"new_version,omitempty"`
	NewSize     int64     `json:"new_size,omitempty"`
	// PreviousVersion is reported once with the first 3/2 after an update
	// booted; "" when there is nothing to report.
	PreviousVersion string `json:"previous_version,omitempty"`
	// RollbackVersion, when set, is the version this machine rolled back
	// from; the next check reports 3/0/44 instead of 3/2 (once).
	RollbackVersion string         `json:"rollback_version,omitempty"`
	Pending         *Pending       `json:"pending,omitempty"`
	RebootPending   *RebootPending `json:"reboot_pending,omitempty"`
	// Blocked versions are never installed automatically again (after a
	// rollback). `flotilla agent unblock` clears one.
	Blocked []string              `json:"blocked_versions,omitempty"`
	Slots   map[string]SlotRecord `json:"slots,omitempty"`
	// GoodBootID is the boot in which the health gate passed.
	GoodBootID       string     `json:"good_boot_id,omitempty"`
	HealthFailedBoot string     `json:"health_failed_boot_id,omitempty"`
	AlephVersion     string     `json:"aleph_version,omitempty"`
	Failures         int        `json:"consecutive_failures,omitempty"`
	LastError        *LastError `json:"last_error,omitempty"`
}

func (s *State) isBlocked(version string) bool { return slices.Contains(s.Blocked, version) }

func (s *State) block(version string) {
	if !s.isBlocked(version) {
		s.Blocked = append(s.Blocked, version)
	}
}

func (s *State) recordSlot(partUUID string, r SlotRecord) {
	if s.Slots == nil {
		s.Slots = map[string]SlotRecord{}
	}
	s.Slots[partUUID] = r
}

// loadState reads the state file; a missing file is a fresh machine.
func loadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return &State{Format: stateFormat, Status: StatusIdle}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("load state %s: %w (move the file away to start over; the disk's GPT is not affected)", filepath.Join(dir, stateFileName), err)
	}
	if s.Format != stateFormat {
		return nil, fmt.Errorf("load state: format %d is not supported by this agent (want %d)", s.Format, stateFormat)
	}
	if s.Status == "" {
		s.Status = StatusIdle
	}
	return &s, nil
}

// saveState writes the state durably: after it returns, a crash or power
// cut leaves either the old or the new file, never a mix.
func saveState(dir string, s *State) error {
	s.Format = stateFormat
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return writeFileAtomic(filepath.Join(dir, stateFileName), append(b, '\n'), 0o600)
}

// writeFileAtomic writes data to path through a temp file in the same
// directory, fsyncs it, renames it over path and fsyncs the directory.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}
