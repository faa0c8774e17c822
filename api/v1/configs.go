package v1

import "time"

// GroupConfig is one version of a group's machine configuration document
// (cloud-config or Ignition). Lists leave Document out.
type GroupConfig struct {
	AppID     string    `json:"app_id"`
	Group     string    `json:"group"`
	Version   int       `json:"version"`
	Format    string    `json:"format"`
	SHA256    string    `json:"sha256"`
	Size      int       `json:"size"`
	Author    string    `json:"author,omitempty"`
	Comment   string    `json:"comment,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	Document  string    `json:"document,omitempty"`
	// Warnings are the validator's warnings about the document, returned
	// when it is stored.
	Warnings []string `json:"warnings,omitempty"`
	// Unchanged is set by PUT when the document equals the latest version,
	// which is then returned instead of a new one.
	Unchanged bool `json:"unchanged,omitempty"`
}

// PutGroupConfig is the body of PUT /api/v1/apps/{app}/groups/{name}/config.
type PutGroupConfig struct {
	Document string `json:"document"`
	Comment  string `json:"comment,omitempty"`
}

// GroupConfigDiff is a unified line diff between two versions of a group's
// document ("" when they are equal).
type GroupConfigDiff struct {
	From int    `json:"from"`
	To   int    `json:"to"`
	Diff string `json:"diff"`
}

// ConfigReport is a machine's latest report about the group config it
// runs.
type ConfigReport struct {
	MachineID  string    `json:"machine_id"`
	Group      string    `json:"group"`
	Version    int       `json:"version"`
	AppliedAt  time.Time `json:"applied_at,omitzero"`
	ReportedAt time.Time `json:"reported_at"`
	Drift      []string  `json:"drift"`
	Error      string    `json:"error,omitempty"`
}

// GroupConfigStatus says which machines of a group run which config
// version, and which have drifted or failed.
type GroupConfigStatus struct {
	AppID  string `json:"app_id"`
	Group  string `json:"group"`
	Latest int    `json:"latest"` // 0 = the group has no config
	// ByVersion counts reporting machines per applied version ("0" = none
	// applied yet).
	ByVersion map[string]int `json:"by_version"`
	OnLatest  int            `json:"on_latest"`
	Drifted   int            `json:"drifted"`
	Failed    int            `json:"failed"`
	Machines  []ConfigReport `json:"machines"`
}

// AgentConfig is what GET /v1/config/{app}/{group} gives agents: the
// group's latest document. The response's ETag is the quoted SHA256.
type AgentConfig struct {
	AppID    string `json:"app_id"`
	Group    string `json:"group"`
	Version  int    `json:"version"`
	Format   string `json:"format"`
	SHA256   string `json:"sha256"`
	Document string `json:"document"`
}

// AgentConfigReport is the body of POST /v1/config/{app}/{group}/report.
type AgentConfigReport struct {
	MachineID string    `json:"machine_id"`
	Version   int       `json:"version"`
	AppliedAt time.Time `json:"applied_at,omitzero"`
	Drift     []string  `json:"drift"`
	Error     string    `json:"error,omitempty"`
}
