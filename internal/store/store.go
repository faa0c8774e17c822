// Package store defines flotilla's persistent data model (applications,
// packages, channels, groups, instances and their history) and the Store
// interface that every database backend implements. Backends live in
// subpackages named after their technology (store/sqlite, later
// store/postgres) and must pass the conformance suite in store/storetest.
//
// The store is deliberately free of update policy: it offers reads, writes
// and a few aggregate counts, and a read-write transaction (Store.Update) in
// which the update service composes them. Decisions live in internal/rollout.
package store

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors that callers branch on. Backends wrap them with context.
var (
	// ErrNotFound means the addressed record does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict means the record already exists (unique key taken) or the
	// write would break a reference (e.g. deleting a channel a group uses).
	ErrConflict = errors.New("already exists")
	// ErrInvalid means the record failed validation in the backend.
	ErrInvalid = errors.New("invalid")
)

// Status is an instance's update status. The words are part of the API.
type Status string

// Instance status values, exactly as shown in API and CLI.
const (
	StatusIdle        Status = "idle"
	StatusOnHold      Status = "on-hold"     // eligible but held back by policy
	StatusGranted     Status = "granted"     // update offered, nothing reported yet
	StatusDownloading Status = "downloading" // event 13/1
	StatusDownloaded  Status = "downloaded"  // event 14/1
	StatusInstalled   Status = "installed"   // event 3/1: applied, waiting for reboot
	StatusComplete    Status = "complete"    // running the granted version
	StatusError       Status = "error"       // event 3/0 with an error code
	StatusRolledBack  Status = "rolled-back" // event 3/0 code 44
	StatusTimedOut    Status = "timed-out"   // grant did not complete in time
)

// AllStatuses lists every status in display order.
var AllStatuses = []Status{
	StatusIdle, StatusOnHold, StatusGranted, StatusDownloading, StatusDownloaded,
	StatusInstalled, StatusComplete, StatusError, StatusRolledBack, StatusTimedOut,
}

// InProgress reports whether s counts as an update in progress (granted and
// not yet finished, failed or timed out).
func (s Status) InProgress() bool {
	switch s {
	case StatusGranted, StatusDownloading, StatusDownloaded, StatusInstalled:
		return true
	}
	return false
}

// Valid reports whether s is one of the defined statuses.
func (s Status) Valid() bool {
	for _, v := range AllStatuses {
		if s == v {
			return true
		}
	}
	return false
}

// Application is an updatable product, identified by its Omaha appid.
type Application struct {
	ID          string // canonical lower-case UUID without braces
	Name        string
	Description string
	CreatedAt   time.Time
}

// PackageFile is an extra file shipped with a package (e.g. an OEM sysext).
type PackageFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA1   string `json:"sha1,omitempty"`   // base64
	SHA256 string `json:"sha256,omitempty"` // base64
}

// Package is one release payload of an application for one architecture.
// (AppID, Version, Arch) is unique.
type Package struct {
	AppID        string
	Version      string
	Arch         string // "amd64", "arm64", …
	BaseURL      string // codebase; the payload URL is BaseURL + "/" + FileName
	FileName     string
	Size         int64
	SHA1         string // base64, optional
	SHA256       string // base64, required
	ExtraFiles   []PackageFile
	ReleaseNotes string
	CreatedAt    time.Time
}

// Channel names the current release of an application: machines in groups
// following the channel are offered PackageVersion (for their arch).
// (AppID, Name) is unique.
type Channel struct {
	AppID          string
	Name           string
	PackageVersion string // "" = no package yet
	UpdatedAt      time.Time
	CreatedAt      time.Time
}

// Policy is a group's rollout policy. Zero values mean "no limit" except
// where noted; DefaultPolicy gives the defaults for new groups.
type Policy struct {
	Paused bool `json:"paused"`
	// MaxUpdatesPerPeriod limits grants in a sliding window of Period.
	MaxUpdatesPerPeriod int           `json:"max_updates_per_period"`
	Period              time.Duration `json:"period"`
	// MaxInProgress limits updates granted but not yet finished.
	MaxInProgress int `json:"max_in_progress"`
	// RolloutPercent is the share (0–100) of machines eligible at the start
	// of a rollout; with RampDuration > 0 it grows linearly to 100.
	RolloutPercent float64       `json:"rollout_percent"`
	RampDuration   time.Duration `json:"ramp_duration"`
	// Windows are weekly update windows ("Mon-Fri 09:00-17:00") in TimeZone
	// (IANA name, "" = UTC). No windows means always.
	Windows  []string `json:"windows"`
	TimeZone string   `json:"time_zone"`
	// UpdateTimeout turns a grant that has not completed in time into
	// timed-out. 0 = never.
	UpdateTimeout time.Duration `json:"update_timeout"`
	// AutoPauseFailures pauses the group when this many machines failed or
	// rolled back on the current rollout. 0 = off.
	AutoPauseFailures int `json:"auto_pause_failures"`
	// OnDemandBypassesLimits lets installsource="ondemandupdate" checks skip
	// the rate limit, the in-progress limit and the percentage; a pause and
	// the update windows still apply.
	OnDemandBypassesLimits bool `json:"on_demand_bypasses_limits"`
}

// DefaultPolicy is the policy of a group created without one.
func DefaultPolicy() Policy {
	return Policy{
		Period:            time.Hour,
		RolloutPercent:    100,
		UpdateTimeout:     24 * time.Hour,
		AutoPauseFailures: 1,
	}
}

// Group is a set of machines that follow one channel under one policy.
// Machines join a group by sending its Track in the Omaha request.
// (AppID, Name) and (AppID, Track) are unique.
type Group struct {
	AppID       string
	Name        string
	Description string
	Track       string
	Channel     string // channel name within the same app
	Policy      Policy
	// RolloutVersion and RolloutStartedAt describe the current rollout: the
	// version the group's channel points at and when the group started
	// rolling it out. Percentage ramps and auto-pause counts start there.
	RolloutVersion   string
	RolloutStartedAt time.Time
	// PausedReason says why the group is paused ("" when not paused or paused
	// by an operator without a reason).
	PausedReason string
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// Instance is one machine running one application. (AppID, MachineID) is
// unique.
type Instance struct {
	AppID        string
	MachineID    string
	Alias        string
	IP           string
	OEM          string
	OEMVersion   string
	AlephVersion string
	Board        string
	Group        string // group name
	Version      string // running version
	Status       Status
	// GrantedVersion and GrantedAt describe the last update the server
	// granted this machine ("" / zero when none).
	GrantedVersion string
	GrantedAt      time.Time
	// LastErrorCode is the raw errorcode of the last failure event.
	LastErrorCode int64
	// BlockedVersion is a version this machine rolled back from; it is not
	// offered again automatically.
	BlockedVersion string
	LastCheck      time.Time // last time the machine talked to the server
	StatusChanged  time.Time
	CreatedAt      time.Time
}

// StatusChange is one row of an instance's status history.
type StatusChange struct {
	ID        int64
	AppID     string
	MachineID string
	Group     string
	Status    Status
	// Version is the version the status is about: the target version for
	// granted…installed, error, rolled-back and timed-out; the running
	// version otherwise.
	Version   string
	ErrorCode int64
	At        time.Time
}

// Event is one Omaha event as a machine reported it. Unknown (type, result)
// pairs are stored too.
type Event struct {
	ID              int64
	AppID           string
	MachineID       string
	Group           string
	Type            int
	Result          int
	ErrorCode       int64
	Version         string // running version sent with the event
	PreviousVersion string
	At              time.Time
}

// ActivityKind classifies activity log entries. The words are part of the API.
type ActivityKind string

// Activity kinds.
const (
	ActivityRolloutStarted   ActivityKind = "rollout-started"
	ActivityRolloutFinished  ActivityKind = "rollout-finished"
	ActivityRolloutPaused    ActivityKind = "rollout-paused"
	ActivityRolloutResumed   ActivityKind = "rollout-resumed"
	ActivityRolloutFailed    ActivityKind = "rollout-failed" // auto-paused after failures
	ActivityInstanceFailed   ActivityKind = "instance-failed"
	ActivityInstanceTimedOut ActivityKind = "instance-timed-out"
	ActivityPackageNotFound  ActivityKind = "package-not-found"
	ActivityChannelUpdated   ActivityKind = "channel-updated"
	ActivityPolicyChanged    ActivityKind = "policy-changed"
	ActivityConfigChanged    ActivityKind = "config-changed" // a new machine config version of a group
)

// Severity of an activity entry.
type Severity string

// Severities.
const (
	SeverityInfo    Severity = "info"
	SeveritySuccess Severity = "success"
	SeverityWarning Severity = "warning"
	SeverityError   Severity = "error"
)

// Activity is one entry of the activity log.
type Activity struct {
	ID         int64
	AppID      string
	Group      string // "" when not about a group
	Channel    string // "" when not about a channel
	Kind       ActivityKind
	Severity   Severity
	Version    string
	Message    string
	MachineIDs []string // machines involved, if any
	At         time.Time
}

// Token is an API token. Only a hash of the secret is stored.
type Token struct {
	ID        string
	Name      string
	Role      string // "admin" or "viewer"
	Hash      string // hex SHA-256 of the secret
	CreatedAt time.Time
}

// InstanceFilter selects instances for ListInstances. Empty fields do not
// filter. Results are ordered by machine id, or by last check (newest
// first) when SortByLastCheck is set; Cursor continues a previous page.
type InstanceFilter struct {
	AppID           string
	Group           string
	Status          Status
	Version         string
	Prefix          string // machine id or alias prefix
	SeenBefore      time.Time
	SeenAfter       time.Time
	SortByLastCheck bool
	Cursor          string // opaque, from InstancePage.NextCursor
	Limit           int    // 0 = 100; capped at 1000
}

// InstancePage is one page of ListInstances.
type InstancePage struct {
	Instances  []Instance
	NextCursor string // "" = last page
	Total      int    // instances matching the filter, ignoring paging
}

// ActivityFilter selects activity entries, newest first.
type ActivityFilter struct {
	AppID    string
	Group    string
	Since    time.Time
	BeforeID int64 // paging: only entries with ID < BeforeID (0 = none)
	Limit    int   // 0 = 100; capped at 1000
}

// GroupCounts are the aggregates a rollout decision needs.
type GroupCounts struct {
	GrantedInPeriod int // grants (status history "granted") since GrantedSince
	InProgress      int // instances in an in-progress status granted after InProgressSince
}

// RolloutStatus summarizes a group's instances.
type RolloutStatus struct {
	Total     int
	ByVersion map[string]int
	ByStatus  map[Status]int
}

// VersionSample is how many of a group's instances ran one version at one
// moment. Samples are taken periodically so that the dashboard can chart a
// rollout over time without replaying every machine's status history.
type VersionSample struct {
	AppID   string
	Group   string
	Version string
	Count   int
	At      time.Time
}

// PruneResult says how many rows a retention pass removed.
type PruneResult struct {
	StatusHistory  int64
	Events         int64
	Activity       int64
	VersionSamples int64
}

// GroupConfig is one version of a group's machine configuration document
// (cloud-config or Ignition), which the group's agents apply. (AppID,
// Group, Version) is unique; versions count 1, 2, 3… per group.
type GroupConfig struct {
	AppID     string
	Group     string
	Version   int
	Document  string // empty in ListGroupConfigs
	Format    string // "cloud-config" or "ignition", as validated by the caller
	SHA256    string // hex digest of Document, set by the store
	Size      int    // bytes of Document, set by the store
	Author    string
	Comment   string
	CreatedAt time.Time
}

// ConfigReport is the latest word of one machine about the group config it
// runs. (AppID, MachineID) is unique: a new report replaces the old one.
type ConfigReport struct {
	AppID      string
	MachineID  string
	Group      string
	Version    int       // applied version; 0 = none yet
	AppliedAt  time.Time // when Version was applied
	Drift      []string  // one summary per drifted item, empty when converged
	Error      string    // last apply or diff error, "" when none
	ReportedAt time.Time
}

// Queries are the operations available both directly on a Store (each its
// own transaction) and inside Store.Update.
type Queries interface {
	CreateApp(ctx context.Context, a Application) error // ErrConflict if the id exists
	GetApp(ctx context.Context, id string) (Application, error)
	ListApps(ctx context.Context) ([]Application, error)
	UpdateApp(ctx context.Context, a Application) error
	DeleteApp(ctx context.Context, id string) error // ErrConflict while it has channels, groups or packages

	CreatePackage(ctx context.Context, p Package) error // ErrConflict if (app, version, arch) exists
	GetPackage(ctx context.Context, appID, version, arch string) (Package, error)
	ListPackages(ctx context.Context, appID string) ([]Package, error)    // newest first
	DeletePackage(ctx context.Context, appID, version, arch string) error // ErrConflict while a channel points at the version and no other arch has it

	CreateChannel(ctx context.Context, c Channel) error
	GetChannel(ctx context.Context, appID, name string) (Channel, error)
	ListChannels(ctx context.Context, appID string) ([]Channel, error)
	// SetChannelPackage points a channel at a version (at least one package
	// of that version must exist, else ErrInvalid).
	SetChannelPackage(ctx context.Context, appID, name, version string, at time.Time) error
	DeleteChannel(ctx context.Context, appID, name string) error // ErrConflict while a group follows it

	CreateGroup(ctx context.Context, g Group) error // ErrConflict if name or track is taken; ErrInvalid if the channel does not exist
	GetGroup(ctx context.Context, appID, name string) (Group, error)
	GetGroupByTrack(ctx context.Context, appID, track string) (Group, error)
	ListGroups(ctx context.Context, appID string) ([]Group, error)
	UpdateGroup(ctx context.Context, g Group) error // by (AppID, Name); all other fields replaced
	DeleteGroup(ctx context.Context, appID, name string) error

	GetInstance(ctx context.Context, appID, machineID string) (Instance, error)
	PutInstance(ctx context.Context, in Instance) error // insert or replace
	DeleteInstance(ctx context.Context, appID, machineID string) error
	// TouchInstance records that a machine was seen: it raises LastCheck to
	// at (never lowers it) and changes nothing else, so it cannot undo a
	// concurrent status change. ErrNotFound if the instance does not exist.
	TouchInstance(ctx context.Context, appID, machineID string, at time.Time) error
	ListInstances(ctx context.Context, f InstanceFilter) (InstancePage, error)

	AddStatusChange(ctx context.Context, c StatusChange) (int64, error)
	ListStatusChanges(ctx context.Context, appID, machineID string, limit int) ([]StatusChange, error) // newest first
	AddEvent(ctx context.Context, e Event) (int64, error)
	ListEvents(ctx context.Context, appID, machineID string, limit int) ([]Event, error) // newest first
	AddActivity(ctx context.Context, a Activity) (int64, error)
	ListActivity(ctx context.Context, f ActivityFilter) ([]Activity, error)

	// GroupCounts counts grants recorded in the status history of the group
	// since grantedSince, and instances of the group in an in-progress status
	// whose GrantedAt is after inProgressSince.
	GroupCounts(ctx context.Context, appID, group string, grantedSince, inProgressSince time.Time) (GroupCounts, error)
	// CountFailures counts distinct machines of the group with an error or
	// rolled-back status change for version at or after since.
	CountFailures(ctx context.Context, appID, group, version string, since time.Time) (int, error)
	// FailedMachines lists (up to limit) those machines.
	FailedMachines(ctx context.Context, appID, group, version string, since time.Time, limit int) ([]string, error)
	// ExpiredGrants lists machines of the group in an in-progress status
	// whose GrantedAt is before grantedBefore.
	ExpiredGrants(ctx context.Context, appID, group string, grantedBefore time.Time) ([]Instance, error)
	RolloutStatus(ctx context.Context, appID, group string) (RolloutStatus, error)
	// CountNotOnVersion counts instances of the group not running version.
	CountNotOnVersion(ctx context.Context, appID, group, version string) (int, error)

	CreateToken(ctx context.Context, t Token) error
	GetTokenByHash(ctx context.Context, hash string) (Token, error)
	ListTokens(ctx context.Context) ([]Token, error)
	DeleteToken(ctx context.Context, id string) error // ErrNotFound if unknown
}

// Store is a database backend.
type Store interface {
	Queries
	// Update runs fn in one read-write transaction and commits if fn returns
	// nil. Read-write transactions on one group are serialized (SQLite has a
	// single writer; PostgreSQL takes a row lock via LockGroup), so counts
	// read inside fn stay true until commit.
	Update(ctx context.Context, fn func(q TxQueries) error) error
	// Prune deletes status history, events, activity and version samples
	// older than before.
	Prune(ctx context.Context, before time.Time) (PruneResult, error)
	// SampleVersions records, for every existing group, how many of its
	// instances run each version, stamped at. Taking a sample twice with the
	// same at replaces the first. It returns the number of rows written.
	SampleVersions(ctx context.Context, at time.Time) (int, error)
	// ListVersionSamples returns a group's samples taken at or after since,
	// oldest first, versions of one sample in ascending order.
	ListVersionSamples(ctx context.Context, appID, group string, since time.Time) ([]VersionSample, error)
	// PutGroupConfig stores c.Document as the group's next version and
	// returns that version; a document identical to the latest version
	// stores nothing and returns the latest version. ErrNotFound if the
	// group does not exist, ErrInvalid for an empty document.
	PutGroupConfig(ctx context.Context, c GroupConfig) (int, error)
	// GetGroupConfig returns one version (0 = the latest) with its
	// document. ErrNotFound if the group has no such version.
	GetGroupConfig(ctx context.Context, appID, group string, version int) (GroupConfig, error)
	// ListGroupConfigs returns a group's versions, newest first, without
	// their documents. ErrNotFound if the group does not exist.
	ListGroupConfigs(ctx context.Context, appID, group string) ([]GroupConfig, error)
	// PutConfigReport records a machine's config report, replacing its
	// previous one. ErrNotFound if the group does not exist, ErrInvalid
	// without a machine id or with a negative version.
	PutConfigReport(ctx context.Context, r ConfigReport) error
	// ListConfigReports returns the reports of the machines whose latest
	// report named the group, by machine id.
	ListConfigReports(ctx context.Context, appID, group string) ([]ConfigReport, error)
	// Ping checks that the database answers.
	Ping(ctx context.Context) error
	Close() error
}

// TxQueries are the Queries available inside Store.Update, plus locking.
type TxQueries interface {
	Queries
	// LockGroup reads a group and holds it locked until the transaction
	// ends, serializing rollout decisions for the group across processes.
	LockGroup(ctx context.Context, appID, name string) (Group, error)
}
