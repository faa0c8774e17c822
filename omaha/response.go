package omaha

import (
	"encoding/xml"
	"fmt"
	"strings"
)

// Values of the response <app status="…">. Nebraska adds its own error-*
// values; they are plain strings and pass through unchanged.
const (
	// AppStatusOK means the server knows the application.
	AppStatusOK = "ok"
	// AppStatusRestricted means the application may not be served here.
	AppStatusRestricted = "restricted"
	// AppStatusUnknownApplication means the server does not know the appid.
	AppStatusUnknownApplication = "error-unknownApplication"
	// AppStatusInvalidAppID means the appid is not a valid identifier.
	AppStatusInvalidAppID = "error-invalidAppId"
)

// Values of the response <updatecheck status="…">. update_engine accepts
// only UpdateStatusOK and UpdateStatusNoUpdate; anything else makes it fail
// the attempt with error 34 and report an error event, so "not now" must be
// UpdateStatusNoUpdate, never an error-* value.
const (
	// UpdateStatusOK offers the update described by the manifest.
	UpdateStatusOK = "ok"
	// UpdateStatusNoUpdate means there is nothing to do now.
	UpdateStatusNoUpdate = "noupdate"
	// UpdateStatusInternalError reports a server failure.
	UpdateStatusInternalError = "error-internal"
	// UpdateStatusHashError reports a hash problem on the server side.
	UpdateStatusHashError = "error-hash"
	// UpdateStatusOSNotSupported refuses the client's operating system.
	UpdateStatusOSNotSupported = "error-osnotsupported"
	// UpdateStatusHWNotSupported refuses the client's hardware.
	UpdateStatusHWNotSupported = "error-hwnotsupported"
	// UpdateStatusUnsupportedProtocol refuses the protocol version.
	UpdateStatusUnsupportedProtocol = "error-unsupportedProtocol"
)

// ActionEventPostinstall is the <action event="…"> update_engine requires;
// it carries the payload's sha256 and the backoff switches.
const ActionEventPostinstall = "postinstall"

// Response is an Omaha <response> document.
type Response struct {
	// Protocol is always "3.0"; Marshal writes "3.0" when it is empty.
	Protocol string `xml:"protocol,attr"`
	// Server names the server implementation, e.g. "flotilla".
	Server string `xml:"server,attr,omitempty"`
	// DayStart is always written; Nebraska and flotilla send 0.
	DayStart DayStart `xml:"daystart"`
	// Apps holds one entry per request app, in request order.
	Apps []ResponseApp `xml:"app"`
}

// DayStart is the <daystart> element.
type DayStart struct {
	// ElapsedSeconds is seconds since midnight server time (Google spec,
	// for day-based ping counting, which update_engine does not do).
	ElapsedSeconds int64 `xml:"elapsed_seconds,attr"`
}

// ResponseApp answers one request app. Children are written in the order
// ping, events, updatecheck.
type ResponseApp struct {
	// AppID echoes the request's appid as sent.
	AppID string `xml:"appid,attr"`
	// Status is one of the AppStatus* values or a server-specific error-*.
	Status string `xml:"status,attr,omitempty"`
	// Ping acknowledges a request ping; set it when the request had one.
	Ping *PingResponse `xml:"ping"`
	// Events acknowledges request events, one per event.
	Events []EventResponse `xml:"event"`
	// UpdateCheck answers a request update check.
	UpdateCheck *UpdateCheckResponse `xml:"updatecheck"`
}

// PingResponse acknowledges a ping; Status is always "ok".
type PingResponse struct {
	// Status is "ok".
	Status string `xml:"status,attr"`
}

// EventResponse acknowledges an event; Status is always "ok".
type EventResponse struct {
	// Status is "ok".
	Status string `xml:"status,attr"`
}

// UpdateCheckResponse is the <updatecheck> answer. update_engine reads only
// the first URL list, the first manifest, its first package and its
// postinstall action (see Validate).
type UpdateCheckResponse struct {
	// Status is UpdateStatusOK or UpdateStatusNoUpdate (see the constants
	// for why error-* values hurt).
	Status string `xml:"status,attr"`
	// PollInterval, in seconds, overrides the client's next check interval
	// once; 0 means absent. update_engine does not persist it, so send it
	// on every answer that should slow clients down.
	PollInterval int `xml:"PollInterval,attr,omitempty"`
	// URLs are payload base URLs; later ones are failover.
	URLs []URL `xml:"urls>url"`
	// Manifest describes the offered version. ParseResponse keeps only the
	// first <manifest>, as update_engine does (Nebraska's multi-step
	// extension sends several; they are dropped).
	Manifest *Manifest `xml:"manifest"`
}

// URL is a <url> element: a base URL to which the package name is appended.
type URL struct {
	// Codebase is the base URL, e.g. "https://updates.example.net/amd64-usr/4081.2.0/".
	Codebase string `xml:"codebase,attr"`
}

// Manifest is the <manifest> of an update check answer.
type Manifest struct {
	// Version is the offered version (informational for update_engine).
	Version string `xml:"version,attr"`
	// IsFloor marks a mandatory intermediate hop (Nebraska multi-step).
	IsFloor bool `xml:"is_floor,attr,omitempty"`
	// FloorReason explains IsFloor (Nebraska multi-step).
	FloorReason string `xml:"floor_reason,attr,omitempty"`
	// IsTarget marks the final hop (Nebraska multi-step).
	IsTarget bool `xml:"is_target,attr,omitempty"`
	// Packages lists payloads; update_engine installs only the first, and
	// flatcar-postinst downloads the others (OEM and extension sysexts).
	Packages []Package `xml:"packages>package"`
	// Actions must include a postinstall action.
	Actions []Action `xml:"actions>action"`
}

// Package is a <package> of a manifest.
type Package struct {
	// Name is the file name appended to each URL codebase.
	Name string `xml:"name,attr"`
	// Size is the payload size in bytes; update_engine requires > 0.
	Size int64 `xml:"size,attr"`
	// Hash is the base64 SHA-1 of the payload (ignored by update_engine but
	// expected by older tools).
	Hash string `xml:"hash,attr,omitempty"`
	// HashSHA256 is the SHA-256 of the payload. Implementations disagree on
	// its encoding (go-omaha writes base64, flatcar/ue-rs parses hex), so it
	// is passed through as is.
	HashSHA256 string `xml:"hash_sha256,attr,omitempty"`
	// Required is written as "true" or "false".
	Required bool `xml:"required,attr"`
}

// Action is an <action> of a manifest. update_engine reads only the
// postinstall action; the deprecated attributes are kept as strings so that
// a parsed response re-encodes without losing them.
type Action struct {
	// Event is ActionEventPostinstall for the action update_engine reads.
	Event string `xml:"event,attr"`
	// SHA256 is the base64 SHA-256 of the whole payload; mandatory.
	SHA256 string `xml:"sha256,attr,omitempty"`
	// DisablePayloadBackoff turns off the client's per-payload backoff.
	DisablePayloadBackoff bool `xml:"DisablePayloadBackoff,attr,omitempty"`
	// MaxFailureCountPerURL overrides the per-URL failure limit (default 10
	// on the client); 0 means absent.
	MaxFailureCountPerURL int `xml:"MaxFailureCountPerUrl,attr,omitempty"`
	// IsDeltaPayload marks a delta payload.
	IsDeltaPayload bool `xml:"IsDeltaPayload,attr,omitempty"`

	// DisplayVersion is deprecated and ignored by current update_engine.
	DisplayVersion string `xml:"DisplayVersion,attr,omitempty"`
	// ChromeOSVersion is deprecated and ignored by current update_engine.
	ChromeOSVersion string `xml:"ChromeOSVersion,attr,omitempty"`
	// NeedsAdmin is deprecated and ignored by current update_engine.
	NeedsAdmin string `xml:"needsadmin,attr,omitempty"`
	// IsDelta is deprecated and ignored by current update_engine.
	IsDelta string `xml:"IsDelta,attr,omitempty"`
	// MetadataSignatureRsa is deprecated and ignored by current update_engine.
	MetadataSignatureRsa string `xml:"MetadataSignatureRsa,attr,omitempty"`
	// MetadataSize is deprecated and ignored by current update_engine.
	MetadataSize string `xml:"MetadataSize,attr,omitempty"`
	// Deadline is deprecated and ignored by current update_engine.
	Deadline string `xml:"deadline,attr,omitempty"`
}

// MarshalXML writes the response as a <response> element and fills in the
// protocol version when empty, so that xml.Marshal and Marshal agree.
func (r Response) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	type plain Response // drops the method set, avoiding recursion
	if r.Protocol == "" {
		r.Protocol = ProtocolVersion
	}
	start = xml.StartElement{Name: xml.Name{Local: "response"}}
	return e.EncodeElement(plain(r), start)
}

// MarshalXML omits the <urls> wrapper when there are no URLs; encoding/xml
// would otherwise write an empty <urls></urls> into every "noupdate" answer.
func (u UpdateCheckResponse) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	type urls struct {
		URL []URL `xml:"url"`
	}
	w := struct {
		Status       string    `xml:"status,attr"`
		PollInterval int       `xml:"PollInterval,attr,omitempty"`
		URLs         *urls     `xml:"urls"`
		Manifest     *Manifest `xml:"manifest"`
	}{Status: u.Status, PollInterval: u.PollInterval, Manifest: u.Manifest}
	if len(u.URLs) > 0 {
		w.URLs = &urls{URL: u.URLs}
	}
	return e.EncodeElement(w, start)
}

// Marshal encodes the response with the XML header, ready to serve as
// text/xml.
func (r *Response) Marshal() ([]byte, error) {
	b, err := marshalDocument(r)
	if err != nil {
		return nil, fmt.Errorf("marshal response: %w", err)
	}
	return b, nil
}

// Postinstall returns the manifest's first postinstall action, the one
// update_engine reads, or nil. A nil manifest has none.
func (m *Manifest) Postinstall() *Action {
	if m == nil {
		return nil
	}
	for i := range m.Actions {
		if m.Actions[i].Event == ActionEventPostinstall {
			return &m.Actions[i]
		}
	}
	return nil
}

// PayloadURLs returns the URLs update_engine would download the first
// package from, in failover order: codebase + "/" (only if missing) +
// package name. It returns nil when there is no manifest or package.
func (u *UpdateCheckResponse) PayloadURLs() []string {
	if u == nil || u.Manifest == nil || len(u.Manifest.Packages) == 0 {
		return nil
	}
	name := u.Manifest.Packages[0].Name
	var out []string
	for _, url := range u.URLs {
		if url.Codebase == "" {
			continue
		}
		base := url.Codebase
		if !strings.HasSuffix(base, "/") {
			base += "/"
		}
		out = append(out, base+name)
	}
	return out
}

// Validate reports the first reason update_engine would reject this answer
// (failing the attempt with error 34, OmahaResponseInvalid), following its
// ParseResponse rules. A "noupdate" answer is always acceptable; a nil
// receiver (no <updatecheck> at all) is not. The error wraps ErrMalformed.
func (u *UpdateCheckResponse) Validate() error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("validate update check: %w: "+format, append([]any{ErrMalformed}, args...)...)
	}
	if u == nil {
		return fail("the answer has no <updatecheck>, which update_engine requires")
	}
	switch u.Status {
	case UpdateStatusNoUpdate:
		return nil
	case UpdateStatusOK:
	default:
		return fail("status %s is neither %q nor %q, so update_engine reports error 34 (OmahaResponseInvalid); answer %q to mean \"not now\"",
			quote(u.Status), UpdateStatusOK, UpdateStatusNoUpdate, UpdateStatusNoUpdate)
	}
	if len(u.URLs) == 0 || u.URLs[0].Codebase == "" {
		return fail("an \"ok\" answer needs at least one <url> with a non-empty codebase")
	}
	if u.Manifest == nil {
		return fail("an \"ok\" answer needs a <manifest>")
	}
	if len(u.Manifest.Packages) == 0 {
		return fail("the manifest has no <package>")
	}
	p := u.Manifest.Packages[0]
	if p.Name == "" {
		return fail("the first package has no name, so there is nothing to download")
	}
	if p.Size <= 0 {
		return fail("the first package %s has size %d; update_engine needs the payload size in bytes (> 0)", quote(p.Name), p.Size)
	}
	a := u.Manifest.Postinstall()
	if a == nil {
		return fail("the manifest has no <action event=%q>", ActionEventPostinstall)
	}
	if a.SHA256 == "" {
		return fail("the postinstall action has no sha256; update_engine needs the base64 SHA-256 of the payload")
	}
	return nil
}
