// Package v1 holds the JSON wire types of flotilla's REST API (/api/v1):
// request and response bodies and the error envelope. It depends on the
// standard library only, so API clients can import it cheaply.
//
// Field names are snake_case. Durations travel as Go duration strings
// ("1h30m"), times as RFC 3339 in UTC. Routes are listed in docs/api.md.
package v1

import "time"

// Error kinds: stable words a client can branch on.
const (
	KindBadRequest   = "bad_request"  // malformed body or parameter
	KindInvalid      = "invalid"      // well-formed but not acceptable (validation)
	KindNotFound     = "not_found"    // the addressed object does not exist
	KindConflict     = "conflict"     // already exists, or still referenced
	KindUnauthorized = "unauthorized" // no or unknown token
	KindForbidden    = "forbidden"    // token lacks the role
	KindTooLarge     = "too_large"    // body over the limit
	KindInternal     = "internal"     // server-side failure; see the server log
	KindUnavailable  = "unavailable"  // a dependency (database) is down
	KindMethod       = "method_not_allowed"
)

// Error is the body of every non-2xx API response.
type Error struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

// App is an application (an updatable product, by Omaha appid).
type App struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
}

// PackageFile is an extra file shipped with a package.
type PackageFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA1   string `json:"sha1,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
}

// Package is one release payload for one architecture.
type Package struct {
	AppID        string        `json:"app_id"`
	Version      string        `json:"version"`
	Arch         string        `json:"arch"`
	URL          string        `json:"url"` // base URL (Omaha codebase)
	File         string        `json:"file"`
	Size         int64         `json:"size"`
	SHA1         string        `json:"sha1,omitempty"` // base64
	SHA256       string        `json:"sha256"`         // base64
	ExtraFiles   []PackageFile `json:"extra_files,omitempty"`
	ReleaseNotes string        `json:"release_notes,omitempty"`
	CreatedAt    time.Time     `json:"created_at"`
}

// Channel points at the current release of an application.
type Channel struct {
	AppID     string    `json:"app_id"`
	Name      string    `json:"name"`
	Package   string    `json:"package"` // version, "" = none
	Groups    []string  `json:"groups,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
	CreatedAt time.Time `json:"created_at"`
}

// SetChannelPackage is the body of PUT …/channels/{name}/package.
type SetChannelPackage struct {
	Version string `json:"version"`
}

// Policy is a group's rollout policy. See docs/api.md for each field.
type Policy struct {
	Paused                 bool     `json:"paused"`
	MaxUpdatesPerPeriod    int      `json:"max_updates_per_period"`
	Period                 string   `json:"period"`
	MaxInProgress          int      `json:"max_in_progress"`
	RolloutPercent         float64  `json:"rollout_percent"`
	RampDuration           string   `json:"ramp_duration"`
	Windows                []string `json:"windows"`
	TimeZone               string   `json:"time_zone"`
	UpdateTimeout          string   `json:"update_timeout"`
	AutoPauseFailures      int      `json:"auto_pause_failures"`
	OnDemandBypassesLimits bool     `json:"on_demand_bypasses_limits"`
}

// PolicyPatch changes some fields of a policy (PATCH …/groups/{name}/policy);
// nil fields are left alone.
type PolicyPatch struct {
	MaxUpdatesPerPeriod    *int      `json:"max_updates_per_period,omitempty"`
	Period                 *string   `json:"period,omitempty"`
	MaxInProgress          *int      `json:"max_in_progress,omitempty"`
	RolloutPercent         *float64  `json:"rollout_percent,omitempty"`
	RampDuration           *string   `json:"ramp_duration,omitempty"`
	Windows                *[]string `json:"windows,omitempty"`
	TimeZone               *string   `json:"time_zone,omitempty"`
	UpdateTimeout          *string   `json:"update_timeout,omitempty"`
	AutoPauseFailures      *int      `json:"auto_pause_failures,omitempty"`
	OnDemandBypassesLimits *bool     `json:"on_demand_bypasses_limits,omitempty"`
}

// Group is a set of machines following one channel under one policy.
type Group struct {
	AppID            string    `json:"app_id"`
	Name             string    `json:"name"`
	Description      string    `json:"description,omitempty"`
	Track            string    `json:"track"`
	Channel          string    `json:"channel"`
	Policy           Policy    `json:"policy"`
	PausedReason     string    `json:"paused_reason,omitempty"`
	RolloutVersion   string    `json:"rollout_version,omitempty"`
	RolloutStartedAt time.Time `json:"rollout_started_at,omitzero"`
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
}

// CreateGroup is the body of POST …/groups. A nil Policy means the defaults.
type CreateGroup struct {
	Name        string  `json:"name"`
	Description string  `json:"description,omitempty"`
	Track       string  `json:"track,omitempty"` // defaults to Name
	Channel     string  `json:"channel"`
	Policy      *Policy `json:"policy,omitempty"`
}

// UpdateGroup is the body of PATCH …/groups/{name}; nil fields are kept.
type UpdateGroup struct {
	Description *string `json:"description,omitempty"`
	Track       *string `json:"track,omitempty"`
	Channel     *string `json:"channel,omitempty"`
}

// PauseGroup is the (optional) body of POST …/groups/{name}/pause.
type PauseGroup struct {
	Reason string `json:"reason,omitempty"`
}

// GroupStatus is the rollout status of a group (GET …/groups/{name}/status).
type GroupStatus struct {
	AppID          string         `json:"app_id"`
	Group          string         `json:"group"`
	Channel        string         `json:"channel"`
	TargetVersion  string         `json:"target_version"`
	Paused         bool           `json:"paused"`
	PausedReason   string         `json:"paused_reason,omitempty"`
	RolloutStarted time.Time      `json:"rollout_started_at,omitzero"`
	CurrentPercent float64        `json:"current_percent"`
	InWindow       bool           `json:"in_window"`
	Total          int            `json:"total"`
	OnTarget       int            `json:"on_target"`
	ByVersion      map[string]int `json:"by_version"`
	ByStatus       map[string]int `json:"by_status"`
}

// ErrorCode is an update_engine error code, decoded.
type ErrorCode struct {
	Raw         int64    `json:"raw"`
	Code        int      `json:"code"`
	Name        string   `json:"name"`
	Flags       []string `json:"flags,omitempty"`
	Description string   `json:"description,omitempty"`
	Hint        string   `json:"hint,omitempty"`
}

// Instance is one machine running one application.
type Instance struct {
	AppID          string     `json:"app_id"`
	MachineID      string     `json:"machine_id"`
	Alias          string     `json:"alias,omitempty"`
	IP             string     `json:"ip,omitempty"`
	OEM            string     `json:"oem,omitempty"`
	OEMVersion     string     `json:"oem_version,omitempty"`
	AlephVersion   string     `json:"aleph_version,omitempty"`
	Board          string     `json:"board,omitempty"`
	Group          string     `json:"group"`
	Version        string     `json:"version"`
	Status         string     `json:"status"`
	GrantedVersion string     `json:"granted_version,omitempty"`
	GrantedAt      time.Time  `json:"granted_at,omitzero"`
	LastError      *ErrorCode `json:"last_error,omitempty"`
	BlockedVersion string     `json:"blocked_version,omitempty"`
	LastCheck      time.Time  `json:"last_check"`
	StatusChanged  time.Time  `json:"status_changed"`
	CreatedAt      time.Time  `json:"created_at"`
}

// InstanceList is one page of instances.
type InstanceList struct {
	Instances  []Instance `json:"instances"`
	Total      int        `json:"total"`
	NextCursor string     `json:"next_cursor,omitempty"`
}

// StatusChange is one row of an instance's status history.
type StatusChange struct {
	Status  string     `json:"status"`
	Version string     `json:"version"`
	Error   *ErrorCode `json:"error,omitempty"`
	At      time.Time  `json:"at"`
	Group   string     `json:"group"`
}

// Event is one Omaha event reported by a machine.
type Event struct {
	Type            int        `json:"type"`
	Result          int        `json:"result"`
	Description     string     `json:"description"`
	Error           *ErrorCode `json:"error,omitempty"`
	Version         string     `json:"version,omitempty"`
	PreviousVersion string     `json:"previous_version,omitempty"`
	At              time.Time  `json:"at"`
}

// InstanceHistory is GET …/instances/{id}/history: newest first.
type InstanceHistory struct {
	Statuses []StatusChange `json:"statuses"`
	Events   []Event        `json:"events"`
}

// Activity is one activity-log entry.
type Activity struct {
	ID         int64     `json:"id"`
	AppID      string    `json:"app_id"`
	Group      string    `json:"group,omitempty"`
	Channel    string    `json:"channel,omitempty"`
	Kind       string    `json:"kind"`
	Severity   string    `json:"severity"`
	Version    string    `json:"version,omitempty"`
	Message    string    `json:"message"`
	MachineIDs []string  `json:"machine_ids,omitempty"`
	At         time.Time `json:"at"`
}

// ActivityList is one page of activity, newest first; pass NextBefore as
// ?before= for the next page.
type ActivityList struct {
	Activity   []Activity `json:"activity"`
	NextBefore int64      `json:"next_before,omitempty"`
}

// Token describes an API token; the secret is never returned after creation.
type Token struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      string    `json:"role"` // "admin" or "viewer"
	CreatedAt time.Time `json:"created_at"`
}

// CreateToken is the body of POST /api/v1/tokens.
type CreateToken struct {
	Name string `json:"name"`
	Role string `json:"role"` // "admin" or "viewer"; default "viewer"
}

// CreatedToken is the answer to POST /api/v1/tokens: the only time the
// secret is shown.
type CreatedToken struct {
	Token
	Secret string `json:"secret"`
}

// LockGroup is a reboot group's semaphore: GET /api/v1/locks/{group}.
type LockGroup struct {
	Group string `json:"group"`
	Max   int    `json:"max"`
	// Available is max minus holders; it is negative while the max was
	// lowered below the number of holders.
	Available    int          `json:"available"`
	HoldDeadline string       `json:"hold_deadline"` // Go duration
	AutoRelease  bool         `json:"auto_release"`
	Holders      []LockHolder `json:"holders"`
	Waiters      []LockWaiter `json:"waiters"`
}

// LockHolder is a machine holding a reboot slot. The record survives the
// machine's reboot; the machine releases it after a healthy boot.
type LockHolder struct {
	ID          string     `json:"id"`
	BootID      string     `json:"boot_id,omitempty"`
	Token       int64      `json:"token"`
	AcquiredAt  time.Time  `json:"acquired_at"`
	Phase       string     `json:"phase"`
	RebootingAt *time.Time `json:"rebooting_at,omitempty"`
	VersionFrom string     `json:"version_from,omitempty"`
	VersionTo   string     `json:"version_to,omitempty"`
	Overdue     bool       `json:"overdue"`
}

// LockWaiter is a machine waiting for a slot, in grant order.
type LockWaiter struct {
	ID       string    `json:"id"`
	Since    time.Time `json:"since"`
	Position int       `json:"position"`
}

// LockGroupList is GET /api/v1/locks.
type LockGroupList struct {
	Groups []LockGroup `json:"groups"`
}

// LockGroupPatch is PATCH /api/v1/locks/{group}; absent fields keep their
// value. A change of max takes effect at once.
type LockGroupPatch struct {
	Max          *int    `json:"max,omitempty"`
	HoldDeadline *string `json:"hold_deadline,omitempty"`
	AutoRelease  *bool   `json:"auto_release,omitempty"`
}

// LockRequest is POST /api/v1/locks/{group}/holders: an operator takes a
// slot for a machine (e.g. to keep it from rebooting into a busy group).
type LockRequest struct {
	ID string `json:"id"`
}
