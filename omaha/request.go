package omaha

import (
	"encoding/xml"
	"fmt"
	"strconv"
)

// ProtocolVersion is the only protocol attribute value this package accepts
// and writes. update_engine sends and expects exactly "3.0".
const ProtocolVersion = "3.0"

// FlatcarAppID is the application id of the Flatcar / CoreOS Container Linux
// operating system, in canonical form (lower case, no braces).
// update_engine sends it in braces: {e96281a6-d1af-4bde-9a0a-97b76e56dc57}.
const FlatcarAppID = "e96281a6-d1af-4bde-9a0a-97b76e56dc57"

// Values of the request installsource attribute. update_engine marks checks
// an operator asked for (update_engine_client -check_for_update) as
// on-demand, so a server can choose to skip rate limits for them.
const (
	// InstallSourceScheduler marks a periodic, automatic check.
	InstallSourceScheduler = "scheduler"
	// InstallSourceOnDemand marks an interactive, operator-triggered check.
	InstallSourceOnDemand = "ondemandupdate"
)

// Request is an Omaha <request> document as sent by update_engine (one per
// HTTP POST). Attribute fields are strings unless the protocol gives them a
// numeric or boolean meaning.
type Request struct {
	// Protocol is always "3.0"; ParseRequest rejects anything else and
	// Marshal writes "3.0" when it is empty.
	Protocol string `xml:"protocol,attr"`
	// Version is the updater's version, e.g. "update_engine-0.4.10".
	Version string `xml:"version,attr,omitempty"`
	// UpdaterVersion duplicates Version (an update_engine extension).
	UpdaterVersion string `xml:"updaterversion,attr,omitempty"`
	// InstallSource is InstallSourceScheduler or InstallSourceOnDemand.
	InstallSource string `xml:"installsource,attr,omitempty"`
	// IsMachine is 1 for a machine-wide updater (always, for update_engine).
	IsMachine int `xml:"ismachine,attr,omitempty"`
	// RequestID is the Google-spec per-request id; update_engine omits it.
	RequestID string `xml:"requestid,attr,omitempty"`
	// UserID is the Google-spec persistent client id. go-omaha clients send
	// it as well as app machineid; ParseRequest copies it into
	// App.MachineID when that is empty.
	UserID string `xml:"userid,attr,omitempty"`
	// SessionID is the Google-spec per-boot session id. go-omaha clients
	// send it as well as app bootid; ParseRequest copies it into App.BootID
	// when that is empty.
	SessionID string `xml:"sessionid,attr,omitempty"`

	// OS describes the client's operating system; nil when absent.
	OS *OS `xml:"os"`
	// Apps holds one entry per <app>. update_engine sends exactly one, but
	// a server should answer every app.
	Apps []App `xml:"app"`
}

// OS is the <os> element of a request.
type OS struct {
	// Version is "Chateau" for update_engine.
	Version string `xml:"version,attr,omitempty"`
	// Platform is "CoreOS" for update_engine.
	Platform string `xml:"platform,attr,omitempty"`
	// ServicePack is "<os version>_<uname -m>", e.g. "3975.2.1_x86_64".
	ServicePack string `xml:"sp,attr,omitempty"`
	// Arch is the Google-spec architecture; update_engine never sends it,
	// use App.Board instead.
	Arch string `xml:"arch,attr,omitempty"`
}

// App is one <app> element of a request: the identity of the machine and
// what it asks for (ping, update check, events).
type App struct {
	// AppID is the application id as sent, usually in braces. Use
	// NormalizeAppID before comparing it.
	AppID string `xml:"appid,attr"`
	// Version is the running version, e.g. "3975.2.1". Not validated here:
	// real clients have sent non-semver values such as "ForcedUpdate".
	Version string `xml:"version,attr,omitempty"`
	// Track is GROUP= from update.conf: a channel name, a group alias or a
	// group UUID (see LegacyTrack). It may be empty.
	Track string `xml:"track,attr,omitempty"`
	// FromTrack is a ChromeOS-era extension naming the previous track.
	FromTrack string `xml:"from_track,attr,omitempty"`
	// BootID is the kernel boot_id in braces.
	BootID string `xml:"bootid,attr,omitempty"`
	// OEM is ID from oem-release, e.g. "qemu".
	OEM string `xml:"oem,attr,omitempty"`
	// OEMVersion is VERSION_ID from oem-release.
	OEMVersion string `xml:"oemversion,attr,omitempty"`
	// AlephVersion is the first version ever installed on the disk.
	AlephVersion string `xml:"alephversion,attr,omitempty"`
	// MachineID is /etc/machine-id (32 hex digits, no braces).
	MachineID string `xml:"machineid,attr,omitempty"`
	// MachineAlias is MACHINE_ALIAS= from update.conf.
	MachineAlias string `xml:"machinealias,attr,omitempty"`
	// Lang is the client locale, "en-US".
	Lang string `xml:"lang,attr,omitempty"`
	// Board is "amd64-usr" or "arm64-usr": the only architecture signal
	// update_engine sends.
	Board string `xml:"board,attr,omitempty"`
	// HardwareClass is always empty for update_engine.
	HardwareClass string `xml:"hardware_class,attr,omitempty"`
	// DeltaOkay is always false for update_engine (deltas need verity).
	// It is always written because update_engine always sends it.
	DeltaOkay bool `xml:"delta_okay,attr"`
	// MultiManifestOK is the Nebraska multi-step extension: the client can
	// handle several <manifest> elements. update_engine never sends it.
	MultiManifestOK bool `xml:"multi_manifest_ok,attr,omitempty"`

	// Ping is present on update checks and on ping-only requests.
	Ping *Ping `xml:"ping"`
	// UpdateCheck is present when the client asks whether to update.
	UpdateCheck *UpdateCheck `xml:"updatecheck"`
	// Events are progress and error reports; an update check carries one
	// (3.2, or 3.0 with errorcode 44 after a rollback).
	Events []Event `xml:"event"`
}

// Ping is the <ping> element of a request app.
type Ping struct {
	// Active is 1 when the application was active.
	Active int `xml:"active,attr,omitempty"`
	// LastActiveDays is the Google-spec "a" attribute (days since the last
	// active ping, -1 if never). update_engine does not send it.
	LastActiveDays int `xml:"a,attr,omitempty"`
	// LastRollCallDays is the Google-spec "r" attribute (days since the last
	// ping, -1 if never). update_engine does not send it.
	LastRollCallDays int `xml:"r,attr,omitempty"`
}

// UpdateCheck is the <updatecheck> element of a request app.
type UpdateCheck struct {
	// TargetVersionPrefix restricts the offered version (Google spec);
	// update_engine sends it empty or not at all.
	TargetVersionPrefix string `xml:"targetversionprefix,attr,omitempty"`
}

// Event is an <event> element of a request app. Type and Result are the
// Google-spec numbers (see the EventType* and EventResult* constants);
// ErrorCode is an update_engine exit code with flag bits (DecodeErrorCode).
type Event struct {
	// Type is the eventtype attribute, e.g. EventTypeUpdateComplete.
	Type int `xml:"eventtype,attr"`
	// Result is the eventresult attribute, e.g. EventResultSuccess.
	Result int `xml:"eventresult,attr"`
	// ErrorCode is the raw errorcode attribute, 0 when absent. It is kept
	// raw (flags included) because the flags carry information; classify
	// with DecodeErrorCode.
	ErrorCode int64 `xml:"errorcode,attr,omitempty"`
	// PreviousVersion is the version that ran before the last applied
	// update, "0.0.0.0" when there is none to report.
	PreviousVersion string `xml:"previousversion,attr,omitempty"`
	// NextVersion is the Google-spec version an update was attempted to;
	// update_engine does not send it.
	NextVersion string `xml:"nextversion,attr,omitempty"`
}

// Kind returns the "type.result" pair, e.g. "3.2" or "13.1": the key the
// Flatcar dialect's events are documented and stored under.
func (e Event) Kind() string {
	return strconv.Itoa(e.Type) + "." + strconv.Itoa(e.Result)
}

// String describes the event for logs, e.g.
// "update complete: error, OmahaResponseInvalid (34) [TestOmahaUrl]".
func (e Event) String() string {
	s := EventTypeName(e.Type) + ": " + EventResultName(e.Result)
	if e.ErrorCode != 0 {
		s += ", " + DecodeErrorCode(e.ErrorCode).String()
	}
	if e.PreviousVersion != "" {
		s += fmt.Sprintf(" (previous version %s)", e.PreviousVersion)
	}
	return s
}

// MarshalXML writes the request as a <request> element whatever name the
// caller's encoder chose, and fills in the protocol version when empty, so
// that xml.Marshal(req) and req.Marshal() agree.
func (r Request) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	type plain Request // drops the method set, avoiding recursion
	if r.Protocol == "" {
		r.Protocol = ProtocolVersion
	}
	start = xml.StartElement{Name: xml.Name{Local: "request"}}
	return e.EncodeElement(plain(r), start)
}

// Marshal encodes the request with the XML header, ready to POST.
func (r *Request) Marshal() ([]byte, error) {
	b, err := marshalDocument(r)
	if err != nil {
		return nil, fmt.Errorf("marshal request: %w", err)
	}
	return b, nil
}

// MachineIDOf returns the app's machine id, falling back to the request's
// Google-spec userid for clients that only send that. ParseRequest already
// applies this fallback; the method serves requests built by hand.
func (r *Request) MachineIDOf(a *App) string {
	if a.MachineID != "" {
		return a.MachineID
	}
	return r.UserID
}

// BootIDOf returns the app's boot id, falling back to the request's
// Google-spec sessionid. ParseRequest already applies this fallback.
func (r *Request) BootIDOf(a *App) string {
	if a.BootID != "" {
		return a.BootID
	}
	return r.SessionID
}

// marshalDocument encodes v indented and prefixed with the XML header that
// update_engine's libxml2 parser expects.
func marshalDocument(v any) ([]byte, error) {
	b, err := xml.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(xml.Header)+len(b)+1)
	out = append(out, xml.Header...)
	out = append(out, b...)
	out = append(out, '\n')
	return out, nil
}
