package machineconfig

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
)

// Managed-block markers. Everything outside them belongs to someone else.
const (
	keysBegin  = "# BEGIN flotilla managed keys"
	keysEnd    = "# END flotilla managed keys"
	hostsBegin = "# BEGIN flotilla manage_etc_hosts"
	hostsEnd   = "# END flotilla manage_etc_hosts"
)

// authorizedKeysFile is relative to the user's home directory.
const authorizedKeysFile = ".ssh/authorized_keys"

// plan is everything Apply would do, in order.
type plan struct {
	ops      []op
	accounts []accountChange
	warnings []string
	commands []UnitCommand
}

// buildPlan turns cfg into ops against the root. Remote contents must have
// been fetched (Apply) or are compared by hash only (Diff).
func buildPlan(cfg Config, rf *rootFS) (*plan, error) {
	p := &plan{}
	db, err := loadAccounts(rf)
	if err != nil {
		return nil, err
	}
	if p.accounts, err = planAccounts(db, cfg.Groups, cfg.Users); err != nil {
		return nil, err
	}
	for _, f := range db.files() {
		if !bytes.Equal(f.bytes(), db.orig[f.path]) || (!f.exists && len(f.lines) > 0) {
			cur := db.meta[f.path]
			o := op{kind: "accounts", path: f.path, typ: typeFile, data: f.bytes(), overwrite: true, silent: true,
				mode: defaultDBMode(f.path)}
			if cur.exists {
				o.keepMeta, o.mode, o.uid, o.gid = true, cur.mode, cur.uid, cur.gid
			}
			p.ops = append(p.ops, o)
		}
	}
	for _, u := range cfg.Users {
		p.userOps(db, u)
	}
	var errs []error
	owner := func(what, at string, o Owner) (int, int, bool) {
		uid, gid, err := db.resolveOwner(o)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", what, at, err))
			return 0, 0, false
		}
		return uid, gid, o.UID != nil || o.GID != nil || o.User != "" || o.Group != ""
	}
	dirs := slices.Clone(cfg.Directories)
	// Shallow first, so a directory's mode is set before its children are
	// created in it.
	slices.SortStableFunc(dirs, func(a, b Directory) int { return strings.Count(a.Path, "/") - strings.Count(b.Path, "/") })
	for _, d := range dirs {
		uid, gid, set := owner("directory", d.Path, d.Owner)
		p.ops = append(p.ops, op{kind: "dir", path: d.Path, typ: typeDir, mode: d.Mode, uid: uid, gid: gid, ownerSet: set, overwrite: d.Overwrite})
	}
	for _, f := range cfg.Files {
		uid, gid, set := owner("file", f.Path, f.Owner)
		o := op{kind: "file", path: f.Path, typ: typeFile, mode: f.Mode, uid: uid, gid: gid, ownerSet: set, overwrite: f.Overwrite}
		if f.Contents == nil {
			o.keepData = true
		} else if f.Contents.IsRemote() {
			o.unknownData, o.hash = true, f.Contents.Hash
		} else {
			o.data = f.Contents.Inline
			if o.data == nil {
				o.data = []byte{}
			}
		}
		for _, a := range f.Append {
			if a.IsRemote() {
				o.unknownData, o.hash = true, ""
				continue
			}
			o.appendData = append(o.appendData, a.Inline...)
		}
		p.ops = append(p.ops, o)
	}
	// Hard links last: their targets may be files created above.
	for _, hard := range []bool{false, true} {
		for _, l := range cfg.Links {
			if l.Hard != hard {
				continue
			}
			uid, gid, set := owner("link", l.Path, l.Owner)
			typ := typeSymlink
			if l.Hard {
				typ = typeHardlink
			}
			p.ops = append(p.ops, op{kind: "link", path: l.Path, typ: typ, target: l.Target, uid: uid, gid: gid, ownerSet: set, overwrite: l.Overwrite})
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Hostname != "" {
		p.ops = append(p.ops, op{kind: "hostname", path: "/etc/hostname", typ: typeFile, data: []byte(cfg.Hostname + "\n"), mode: 0o644, overwrite: true})
	}
	if cfg.ManageEtcHosts == "localhost" {
		if err := p.hostsOp(cfg, rf); err != nil {
			return nil, err
		}
	}
	if cfg.Update != nil && len(cfg.Update.Pairs()) > 0 {
		pairs := cfg.Update.Pairs()
		p.ops = append(p.ops, op{kind: "update.conf", path: UpdateConfPath, typ: typeFile, mode: 0o644, overwrite: true,
			transform: func(cur []byte, _ bool) []byte { return mergeKeyValues(cur, pairs) }})
	}
	for _, u := range cfg.Units {
		if err := p.unitOps(u, rf); err != nil {
			return nil, err
		}
	}
	if !cfg.FirstBoot.Empty() {
		for _, s := range cfg.FirstBoot.Summary() {
			p.warnings = append(p.warnings, "first-boot only, not applied by apply: "+s)
		}
	}
	return p, nil
}

// userOps adds the home directory and the authorized_keys file of u.
func (p *plan) userOps(db *accountDB, u User) {
	uid, gid, home, ok := db.userInfo(u.Name)
	if !ok || home == "" || home == "/" {
		return
	}
	if !u.NoCreateHome {
		p.ops = append(p.ops, op{kind: "home", name: u.Name, path: home, typ: typeDir, mode: 0o700, uid: uid, gid: gid, ownerSet: true, onlyIfMissing: true})
	}
	if len(u.SSHAuthorizedKeys) == 0 {
		return
	}
	keys := make([]string, len(u.SSHAuthorizedKeys))
	for i, k := range u.SSHAuthorizedKeys {
		keys[i] = strings.TrimSpace(k)
	}
	p.ops = append(p.ops,
		op{kind: "ssh-dir", name: u.Name, path: path.Join(home, ".ssh"), typ: typeDir, mode: 0o700, uid: uid, gid: gid, ownerSet: true, onlyIfMissing: true},
		op{kind: "ssh-keys", name: u.Name, path: path.Join(home, authorizedKeysFile), typ: typeFile, mode: 0o600, uid: uid, gid: gid, ownerSet: true, overwrite: true,
			transform: func(cur []byte, _ bool) []byte { return replaceBlock(cur, keysBegin, keysEnd, keys) }})
}

// hostsOp keeps a managed block in /etc/hosts that maps the host name to
// the loopback addresses, which is what manage_etc_hosts: localhost meant.
func (p *plan) hostsOp(cfg Config, rf *rootFS) error {
	host := cfg.Hostname
	if host == "" {
		b, _, err := rf.readFile("/etc/hostname")
		if err != nil {
			return fmt.Errorf("read /etc/hostname: %w", err)
		}
		host = strings.TrimSpace(string(b))
	}
	if host == "" {
		p.warnings = append(p.warnings, "manage_etc_hosts: no host name (none in the document, no /etc/hostname in the root); /etc/hosts left alone")
		return nil
	}
	body := []string{"127.0.0.1 localhost " + host, "::1 localhost " + host}
	p.ops = append(p.ops, op{kind: "hosts", path: "/etc/hosts", typ: typeFile, mode: 0o644, overwrite: true,
		transform: func(cur []byte, _ bool) []byte { return replaceBlock(cur, hostsBegin, hostsEnd, body) }})
	return nil
}
