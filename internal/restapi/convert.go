package restapi

import (
	"encoding/base64"
	"fmt"
	"time"

	v1 "github.com/flotilla/flotilla/api/v1"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/omaha"
)

func appToAPI(a store.Application) v1.App {
	return v1.App{ID: a.ID, Name: a.Name, Description: a.Description, CreatedAt: a.CreatedAt}
}

func packageToAPI(p store.Package) v1.Package {
	out := v1.Package{
		AppID: p.AppID, Version: p.Version, Arch: p.Arch, URL: p.BaseURL, File: p.FileName, Size: p.Size,
		SHA1: p.SHA1, SHA256: p.SHA256, ReleaseNotes: p.ReleaseNotes, CreatedAt: p.CreatedAt,
	}
	for _, f := range p.ExtraFiles {
		out.ExtraFiles = append(out.ExtraFiles, v1.PackageFile{Name: f.Name, Size: f.Size, SHA1: f.SHA1, SHA256: f.SHA256})
	}
	return out
}

func packageFromAPI(appID string, p v1.Package) store.Package {
	out := store.Package{
		AppID: appID, Version: p.Version, Arch: p.Arch, BaseURL: p.URL, FileName: p.File, Size: p.Size,
		SHA1: p.SHA1, SHA256: p.SHA256, ReleaseNotes: p.ReleaseNotes,
	}
	for _, f := range p.ExtraFiles {
		out.ExtraFiles = append(out.ExtraFiles, store.PackageFile{Name: f.Name, Size: f.Size, SHA1: f.SHA1, SHA256: f.SHA256})
	}
	return out
}

func channelToAPI(c store.Channel, groups []string) v1.Channel {
	return v1.Channel{AppID: c.AppID, Name: c.Name, Package: c.PackageVersion, Groups: groups, UpdatedAt: c.UpdatedAt, CreatedAt: c.CreatedAt}
}

func durString(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	return d.String()
}

func policyToAPI(p store.Policy) v1.Policy {
	w := p.Windows
	if w == nil {
		w = []string{}
	}
	return v1.Policy{
		Paused: p.Paused, MaxUpdatesPerPeriod: p.MaxUpdatesPerPeriod, Period: durString(p.Period),
		MaxInProgress: p.MaxInProgress, RolloutPercent: p.RolloutPercent, RampDuration: durString(p.RampDuration),
		Windows: w, TimeZone: p.TimeZone, UpdateTimeout: durString(p.UpdateTimeout),
		AutoPauseFailures: p.AutoPauseFailures, OnDemandBypassesLimits: p.OnDemandBypassesLimits,
	}
}

func parseDur(field, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a duration like 1h30m", field, s)
	}
	return d, nil
}

func policyFromAPI(p v1.Policy) (store.Policy, error) {
	out := store.Policy{
		Paused: p.Paused, MaxUpdatesPerPeriod: p.MaxUpdatesPerPeriod, MaxInProgress: p.MaxInProgress,
		RolloutPercent: p.RolloutPercent, Windows: p.Windows, TimeZone: p.TimeZone,
		AutoPauseFailures: p.AutoPauseFailures, OnDemandBypassesLimits: p.OnDemandBypassesLimits,
	}
	var err error
	if out.Period, err = parseDur("period", p.Period); err != nil {
		return out, err
	}
	if out.RampDuration, err = parseDur("ramp_duration", p.RampDuration); err != nil {
		return out, err
	}
	if out.UpdateTimeout, err = parseDur("update_timeout", p.UpdateTimeout); err != nil {
		return out, err
	}
	return out, nil
}

func applyPolicyPatch(p store.Policy, patch v1.PolicyPatch) (store.Policy, error) {
	var err error
	if patch.MaxUpdatesPerPeriod != nil {
		p.MaxUpdatesPerPeriod = *patch.MaxUpdatesPerPeriod
	}
	if patch.Period != nil {
		if p.Period, err = parseDur("period", *patch.Period); err != nil {
			return p, err
		}
	}
	if patch.MaxInProgress != nil {
		p.MaxInProgress = *patch.MaxInProgress
	}
	if patch.RolloutPercent != nil {
		p.RolloutPercent = *patch.RolloutPercent
	}
	if patch.RampDuration != nil {
		if p.RampDuration, err = parseDur("ramp_duration", *patch.RampDuration); err != nil {
			return p, err
		}
	}
	if patch.Windows != nil {
		p.Windows = *patch.Windows
	}
	if patch.TimeZone != nil {
		p.TimeZone = *patch.TimeZone
	}
	if patch.UpdateTimeout != nil {
		if p.UpdateTimeout, err = parseDur("update_timeout", *patch.UpdateTimeout); err != nil {
			return p, err
		}
	}
	if patch.AutoPauseFailures != nil {
		p.AutoPauseFailures = *patch.AutoPauseFailures
	}
	if patch.OnDemandBypassesLimits != nil {
		p.OnDemandBypassesLimits = *patch.OnDemandBypassesLimits
	}
	return p, nil
}

func groupToAPI(g store.Group) v1.Group {
	return v1.Group{
		AppID: g.AppID, Name: g.Name, Description: g.Description, Track: g.Track, Channel: g.Channel,
		Policy: policyToAPI(g.Policy), PausedReason: g.PausedReason, RolloutVersion: g.RolloutVersion,
		RolloutStartedAt: g.RolloutStartedAt, CreatedAt: g.CreatedAt, UpdatedAt: g.UpdatedAt,
	}
}

// ErrorCodeToAPI decodes a raw update_engine error code for the API.
func ErrorCodeToAPI(raw int64) *v1.ErrorCode {
	d := omaha.DecodeErrorCode(raw)
	return &v1.ErrorCode{Raw: raw, Code: d.Code, Name: d.Name, Flags: d.Flags, Description: d.Description, Hint: d.Hint}
}

func instanceToAPI(in store.Instance) v1.Instance {
	out := v1.Instance{
		AppID: in.AppID, MachineID: in.MachineID, Alias: in.Alias, IP: in.IP, OEM: in.OEM, OEMVersion: in.OEMVersion,
		AlephVersion: in.AlephVersion, Board: in.Board, Group: in.Group, Version: in.Version, Status: string(in.Status),
		GrantedVersion: in.GrantedVersion, GrantedAt: in.GrantedAt, BlockedVersion: in.BlockedVersion,
		LastCheck: in.LastCheck, StatusChanged: in.StatusChanged, CreatedAt: in.CreatedAt,
	}
	if in.LastErrorCode != 0 {
		out.LastError = ErrorCodeToAPI(in.LastErrorCode)
	}
	return out
}

// eventDescription names an Omaha (type, result) pair in plain words.
func eventDescription(typ, result int) string {
	switch {
	case typ == omaha.EventTypeUpdateDownloadStarted && result == omaha.EventResultSuccess:
		return "download started"
	case typ == omaha.EventTypeUpdateDownloadFinished && result == omaha.EventResultSuccess:
		return "download finished"
	case typ == omaha.EventTypeUpdateComplete && result == omaha.EventResultSuccess:
		return "update installed, waiting for reboot"
	case typ == omaha.EventTypeUpdateComplete && result == omaha.EventResultSuccessReboot:
		return "update check after boot"
	case typ == omaha.EventTypeUpdateComplete && result == omaha.EventResultError:
		return "update failed"
	case typ == omaha.EventTypeUpdateComplete && result == omaha.EventResultUpdateDeferred:
		return "update deferred"
	}
	return fmt.Sprintf("event %d/%d", typ, result)
}

func activityToAPI(a store.Activity) v1.Activity {
	return v1.Activity{
		ID: a.ID, AppID: a.AppID, Group: a.Group, Channel: a.Channel, Kind: string(a.Kind), Severity: string(a.Severity),
		Version: a.Version, Message: a.Message, MachineIDs: a.MachineIDs, At: a.At,
	}
}

// validB64Hash reports whether s is the standard base64 encoding of n bytes,
// the form update_engine compares against (omaha.md §5.1).
func validB64Hash(s string, n int) bool {
	b, err := base64.StdEncoding.DecodeString(s)
	return err == nil && len(b) == n
}
