package machineconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/coreos/ignition/v2/config"
	ignerrors "github.com/coreos/ignition/v2/config/shared/errors"
	"github.com/coreos/ignition/v2/config/util"
	"github.com/coreos/ignition/v2/config/v3_6_experimental/types"
	"github.com/coreos/vcontext/report"
	"github.com/vincent-petithory/dataurl"
)

// parseIgnition parses an Ignition 3.x config. config.Parse accepts every
// stable 3.x spec (and 3.6.0-experimental) and translates it to the newest
// types, so the mapping below is written once.
func parseIgnition(doc []byte) (Config, Report) {
	rep := Report{Format: FormatIgnition, Entries: []Entry{}}
	cfg := Config{Format: FormatIgnition}

	ver, vrep, err := util.GetConfigVersion(doc)
	if err != nil {
		addIgnitionReport(&rep, vrep)
		if !rep.HasErrors() {
			rep.errorf(pos{path: "$.ignition.version"}, "%s", versionMessage(doc, err))
		}
		return cfg, rep
	}
	switch ver.Major {
	case 3:
	case 2, 1:
		rep.errorf(pos{path: "$.ignition.version"}, "Ignition spec %s (Container Linux era) is not supported: translate the config to spec 3 first (ign-converter, or rewrite it as Butane and run butane)", ver)
		return cfg, rep
	default:
		rep.errorf(pos{path: "$.ignition.version"}, "Ignition spec %s is not supported: flotilla reads specs 3.0.0 to 3.5.0 (and 3.6.0-experimental)", ver)
		return cfg, rep
	}

	ic, r, err := config.Parse(doc)
	addIgnitionReport(&rep, r)
	if err != nil {
		if !rep.HasErrors() {
			msg := err.Error()
			if errors.Is(err, ignerrors.ErrUnknownVersion) {
				msg = fmt.Sprintf("Ignition spec %s is not supported: flotilla reads specs 3.0.0 to 3.5.0 (and 3.6.0-experimental)", ver)
			}
			rep.errorf(pos{path: "$.ignition.version"}, "%s", msg)
		}
		return cfg, rep
	}
	cfg.Version = ver.String()
	mapIgnition(ic, &cfg, &rep)
	return cfg, rep
}

// versionMessage explains why no spec version could be read.
func versionMessage(doc []byte, err error) string {
	var v1 struct {
		IgnitionVersion any `json:"ignitionVersion"`
	}
	if json.Unmarshal(doc, &v1) == nil && v1.IgnitionVersion != nil {
		return "Ignition spec 1 (ignitionVersion) is not supported: translate the config to spec 3"
	}
	if errors.Is(err, ignerrors.ErrInvalidVersion) {
		return "ignition.version is missing or not a version like \"3.4.0\""
	}
	return err.Error()
}

// addIgnitionReport copies the library's findings, keeping the JSON path
// and, where the parser marked it, line and column. Info entries carry
// nothing an operator must act on and are dropped.
func addIgnitionReport(rep *Report, r report.Report) {
	for _, e := range r.Entries {
		var sev Severity
		switch e.Kind {
		case report.Error:
			sev = SeverityError
		case report.Warn:
			sev = SeverityWarning
		default:
			if e.Kind.IsFatal() {
				sev = SeverityError
			} else {
				continue
			}
		}
		ent := Entry{Severity: sev, Message: e.Message}
		if e.Context.Len() > 0 {
			ent.Path = e.Context.String()
		}
		if e.Marker.StartP != nil {
			ent.Line, ent.Column = int(e.Marker.StartP.Line), int(e.Marker.StartP.Column)
		}
		rep.Entries = append(rep.Entries, ent)
	}
}

func mapIgnition(ic types.Config, cfg *Config, rep *Report) {
	if len(ic.Ignition.Config.Merge) > 0 || ic.Ignition.Config.Replace.Source != nil {
		rep.errorf(pos{path: "$.ignition.config"}, "merge and replace are not supported: flotilla applies one self-contained config (render it first, e.g. with butane)")
	}
	if len(ic.Ignition.Security.TLS.CertificateAuthorities) > 0 {
		rep.warnf(pos{path: "$.ignition.security.tls.certificateAuthorities"}, "ignored: remote sources are verified against the system's certificate authorities")
	}
	if ic.Ignition.Proxy.HTTPProxy != nil || ic.Ignition.Proxy.HTTPSProxy != nil || len(ic.Ignition.Proxy.NoProxy) > 0 {
		rep.warnf(pos{path: "$.ignition.proxy"}, "ignored: flotilla uses the proxy of its environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY)")
	}

	for i, f := range ic.Storage.Files {
		at := pos{path: fmt.Sprintf("$.storage.files.%d", i)}
		out := File{Path: f.Path, Mode: 0o644, Overwrite: util.IsTrue(f.Overwrite), Owner: nodeOwner(f.User, f.Group), at: at}
		if f.Mode != nil {
			out.Mode = modeFromUnix(uint32(*f.Mode))
		}
		if f.Contents.Source != nil {
			c, ok := resourceContent(f.Contents, at.path+".contents", rep)
			if !ok {
				continue
			}
			out.Contents = &c
		}
		good := true
		for j, a := range f.Append {
			c, ok := resourceContent(a, fmt.Sprintf("%s.append.%d", at.path, j), rep)
			good = good && ok
			out.Append = append(out.Append, c)
		}
		if good {
			cfg.Files = append(cfg.Files, out)
		}
	}
	for i, d := range ic.Storage.Directories {
		out := Directory{Path: d.Path, Mode: 0o755, Overwrite: util.IsTrue(d.Overwrite), Owner: nodeOwner(d.User, d.Group),
			at: pos{path: fmt.Sprintf("$.storage.directories.%d", i)}}
		if d.Mode != nil {
			out.Mode = modeFromUnix(uint32(*d.Mode))
		}
		cfg.Directories = append(cfg.Directories, out)
	}
	for i, l := range ic.Storage.Links {
		cfg.Links = append(cfg.Links, Link{Path: l.Path, Target: deref0(l.Target), Hard: util.IsTrue(l.Hard),
			Overwrite: util.IsTrue(l.Overwrite), Owner: nodeOwner(l.User, l.Group), at: pos{path: fmt.Sprintf("$.storage.links.%d", i)}})
	}
	for i, u := range ic.Passwd.Users {
		at := pos{path: fmt.Sprintf("$.passwd.users.%d", i)}
		if u.ShouldExist != nil && !*u.ShouldExist {
			rep.warnf(at, "user %q: shouldExist: false is not supported (flotilla never deletes accounts); entry ignored", u.Name)
			continue
		}
		out := User{Name: u.Name, PasswordHash: u.PasswordHash, UID: u.UID, Gecos: deref0(u.Gecos), HomeDir: deref0(u.HomeDir),
			NoCreateHome: util.IsTrue(u.NoCreateHome), PrimaryGroup: deref0(u.PrimaryGroup), NoUserGroup: util.IsTrue(u.NoUserGroup),
			System: util.IsTrue(u.System), Shell: deref0(u.Shell), at: at}
		for _, g := range u.Groups {
			out.Groups = append(out.Groups, string(g))
		}
		for _, k := range u.SSHAuthorizedKeys {
			out.SSHAuthorizedKeys = append(out.SSHAuthorizedKeys, string(k))
		}
		cfg.Users = append(cfg.Users, out)
	}
	for i, g := range ic.Passwd.Groups {
		at := pos{path: fmt.Sprintf("$.passwd.groups.%d", i)}
		if g.ShouldExist != nil && !*g.ShouldExist {
			rep.warnf(at, "group %q: shouldExist: false is not supported (flotilla never deletes accounts); entry ignored", g.Name)
			continue
		}
		cfg.Groups = append(cfg.Groups, Group{Name: g.Name, GID: g.Gid, PasswordHash: g.PasswordHash, System: util.IsTrue(g.System), at: at})
	}
	for i, u := range ic.Systemd.Units {
		out := Unit{Name: u.Name, Contents: u.Contents, Enable: u.Enabled, Mask: u.Mask, at: pos{path: fmt.Sprintf("$.systemd.units.%d", i)}}
		if util.IsTrue(u.Enabled) && !util.IsTrue(u.Mask) {
			// Ignition's units come up at the first boot because they are
			// enabled; a re-applied config gets the same effect now.
			out.Command = "start"
		}
		for _, d := range u.Dropins {
			if d.Contents == nil {
				continue
			}
			out.DropIns = append(out.DropIns, DropIn{Name: d.Name, Contents: *d.Contents})
		}
		cfg.Units = append(cfg.Units, out)
	}
	mapFirstBoot(ic, &cfg.FirstBoot)
}

func mapFirstBoot(ic types.Config, fb *FirstBoot) {
	for _, d := range ic.Storage.Disks {
		disk := Disk{Device: d.Device, WipeTable: util.IsTrue(d.WipeTable)}
		for _, p := range d.Partitions {
			disk.Partitions = append(disk.Partitions, Partition{Label: deref0(p.Label), Number: p.Number, SizeMiB: p.SizeMiB, StartMiB: p.StartMiB, TypeGUID: deref0(p.TypeGUID)})
		}
		fb.Disks = append(fb.Disks, disk)
	}
	for _, r := range ic.Storage.Raid {
		raid := RAID{Name: r.Name, Level: deref0(r.Level)}
		for _, d := range r.Devices {
			raid.Devices = append(raid.Devices, string(d))
		}
		fb.RAID = append(fb.RAID, raid)
	}
	for _, f := range ic.Storage.Filesystems {
		fb.Filesystems = append(fb.Filesystems, Filesystem{Device: f.Device, Format: deref0(f.Format), Path: deref0(f.Path), Label: deref0(f.Label), WipeFilesystem: util.IsTrue(f.WipeFilesystem)})
	}
	for _, l := range ic.Storage.Luks {
		fb.LUKS = append(fb.LUKS, LUKS{Name: l.Name, Device: deref0(l.Device)})
	}
	for _, k := range ic.KernelArguments.ShouldExist {
		fb.KernelArgsAdd = append(fb.KernelArgsAdd, string(k))
	}
	for _, k := range ic.KernelArguments.ShouldNotExist {
		fb.KernelArgsRemove = append(fb.KernelArgsRemove, string(k))
	}
}

// resourceContent turns an Ignition resource into Content: data: URLs are
// decoded (and decompressed, and checked against their hash) here, http(s)
// sources are kept for Apply to fetch.
func resourceContent(r types.Resource, at string, rep *Report) (Content, bool) {
	src := deref0(r.Source)
	u, err := url.Parse(src)
	if err != nil {
		rep.errorf(pos{path: at + ".source"}, "bad URL: %v", err)
		return Content{}, false
	}
	c := Content{Compression: deref0(r.Compression), Hash: deref0(r.Verification.Hash)}
	switch u.Scheme {
	case "data":
		d, err := dataurl.DecodeString(src)
		if err != nil {
			rep.errorf(pos{path: at + ".source"}, "bad data URL: %v", err)
			return Content{}, false
		}
		data := d.Data
		if c.Compression == "gzip" {
			if data, err = gunzip(data); err != nil {
				rep.errorf(pos{path: at + ".source"}, "compression is gzip but the data does not decompress: %v", err)
				return Content{}, false
			}
		}
		if c.Hash != "" {
			if err := verifyHash(c.Hash, data); err != nil {
				rep.errorf(pos{path: at + ".verification.hash"}, "%v", err)
				return Content{}, false
			}
		}
		return Content{Inline: data}, true
	case "http", "https":
		c.Source = src
		for _, h := range r.HTTPHeaders {
			c.Headers = append(c.Headers, Header{Name: h.Name, Value: deref0(h.Value)})
		}
		return c, true
	case "":
		// An empty source is Ignition's way of saying "empty file".
		if src == "" {
			return Content{Inline: []byte{}}, true
		}
	}
	rep.errorf(pos{path: at + ".source"}, "source scheme %q is not supported by flotilla apply (it fetches data:, http: and https: only)", u.Scheme)
	return Content{}, false
}

func nodeOwner(u types.NodeUser, g types.NodeGroup) Owner {
	return Owner{UID: u.ID, GID: g.ID, User: strings.TrimSpace(deref0(u.Name)), Group: strings.TrimSpace(deref0(g.Name))}
}

func deref0[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
