package machineconfig

import (
	"fmt"
	"path"
	"strings"

	"github.com/coreos/go-systemd/v22/unit"
)

// Unit directories inside the root. /usr and /lib hold the image's vendor
// units, which enable links may point to but Apply never writes.
var unitSearchDirs = []string{"/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"}

// unitDir is where a unit's file, drop-ins, mask and enable links go.
func unitDir(u Unit) string {
	base := "/etc/systemd"
	if u.Runtime {
		base = "/run/systemd"
	}
	if isNetworkUnit(u.Name) {
		return base + "/network"
	}
	return base + "/system"
}

func (p *plan) unitOps(u Unit, rf *rootFS) error {
	dir := unitDir(u)
	unitPath := path.Join(dir, u.Name)
	masked := u.Mask != nil && *u.Mask
	switch {
	case masked:
		// Like coreos-cloudinit and Ignition, masking replaces whatever
		// unit file is there; systemctl mask would refuse.
		p.ops = append(p.ops, op{kind: "mask", name: u.Name, unit: u.Name, path: unitPath, typ: typeSymlink, target: "/dev/null", overwrite: true})
	case u.Contents != nil:
		p.ops = append(p.ops, op{kind: "unit", name: u.Name, unit: u.Name, path: unitPath, typ: typeFile, data: []byte(*u.Contents), mode: 0o644, overwrite: true})
	case u.Mask != nil:
		p.ops = append(p.ops, op{kind: "mask", name: u.Name, unit: u.Name, path: unitPath, typ: typeRemoveLink,
			removeIf: func(t string) bool { return t == "/dev/null" }})
	}
	for _, d := range u.DropIns {
		p.ops = append(p.ops, op{kind: "dropin", name: u.Name, unit: u.Name, path: path.Join(dir, u.Name+".d", d.Name), typ: typeFile,
			data: []byte(d.Contents), mode: 0o644, overwrite: true})
	}
	if u.Enable != nil && !isNetworkUnit(u.Name) && !masked {
		if err := p.enableOps(u, rf, dir); err != nil {
			return err
		}
	}
	if u.Command != "" {
		p.commands = append(p.commands, UnitCommand{Unit: u.Name, Command: u.Command})
	}
	return nil
}

// installInfo is a unit's [Install] section and where its file is.
type installInfo struct {
	wantedBy, requiredBy, alias []string
	defaultInstance             string
	unitPath                    string
	found                       bool
}

// templateName turns "foo@bar.service" into "foo@.service"; other names
// are returned unchanged.
func templateName(name string) string {
	at := strings.Index(name, "@")
	dot := strings.LastIndex(name, ".")
	if at < 0 || dot < at || at+1 == dot {
		return name
	}
	return name[:at+1] + name[dot:]
}

// readInstall finds the unit's [Install] section: in the document's
// contents, else in the unit file already in the root (an instance falls
// back to its template).
func readInstall(u Unit, rf *rootFS, dir string) (installInfo, error) {
	var text string
	info := installInfo{}
	if u.Contents != nil {
		text, info.unitPath, info.found = *u.Contents, path.Join(dir, u.Name), true
	} else {
		for _, name := range []string{u.Name, templateName(u.Name)} {
			for _, d := range unitSearchDirs {
				b, ok, err := rf.readFile(path.Join(d, name))
				if err != nil {
					return info, fmt.Errorf("unit %s: %w", u.Name, err)
				}
				if ok {
					text, info.unitPath, info.found = string(b), path.Join(d, name), true
					break
				}
			}
			if info.found {
				break
			}
		}
	}
	if !info.found {
		return info, nil
	}
	opts, err := unit.DeserializeOptions(strings.NewReader(text))
	if err != nil {
		return info, fmt.Errorf("unit %s: parse %s: %w", u.Name, info.unitPath, err)
	}
	for _, o := range opts {
		if o.Section != "Install" {
			continue
		}
		vals := strings.Fields(o.Value)
		switch o.Name {
		case "WantedBy":
			info.wantedBy = append(info.wantedBy, vals...)
		case "RequiredBy":
			info.requiredBy = append(info.requiredBy, vals...)
		case "Alias":
			info.alias = append(info.alias, vals...)
		case "DefaultInstance":
			info.defaultInstance = strings.TrimSpace(o.Value)
		}
	}
	return info, nil
}

// enableOps creates (or removes) the links `systemctl enable` would: one in
// TARGET.wants/ per WantedBy=, TARGET.requires/ per RequiredBy= and one per
// Alias=, all pointing at the unit file.
func (p *plan) enableOps(u Unit, rf *rootFS, dir string) error {
	info, err := readInstall(u, rf, dir)
	if err != nil {
		return err
	}
	if !info.found {
		p.warnings = append(p.warnings, fmt.Sprintf("unit %s: no unit file in the document or the root; enable skipped", u.Name))
		return nil
	}
	linkName := u.Name
	if templateName(u.Name) == u.Name && strings.Contains(u.Name, "@") {
		if info.defaultInstance == "" {
			p.warnings = append(p.warnings, fmt.Sprintf("unit %s: a template without DefaultInstance= cannot be enabled; enable an instance (%s) instead", u.Name, strings.Replace(u.Name, "@", "@NAME", 1)))
			return nil
		}
		linkName = strings.Replace(u.Name, "@", "@"+info.defaultInstance, 1)
	}
	var links []string
	for _, t := range info.wantedBy {
		links = append(links, path.Join(dir, t+".wants", linkName))
	}
	for _, t := range info.requiredBy {
		links = append(links, path.Join(dir, t+".requires", linkName))
	}
	for _, a := range info.alias {
		links = append(links, path.Join(dir, a))
	}
	if len(links) == 0 {
		p.warnings = append(p.warnings, fmt.Sprintf("unit %s: no [Install] section with WantedBy=, RequiredBy= or Alias=; enable does nothing", u.Name))
		return nil
	}
	for _, l := range links {
		if *u.Enable {
			p.ops = append(p.ops, op{kind: "enable", name: u.Name, unit: u.Name, path: l, typ: typeSymlink, target: info.unitPath, overwrite: true})
			continue
		}
		base := path.Base(info.unitPath)
		p.ops = append(p.ops, op{kind: "enable", name: u.Name, unit: u.Name, path: l, typ: typeRemoveLink,
			removeIf: func(t string) bool { return path.Base(t) == base }})
	}
	return nil
}
