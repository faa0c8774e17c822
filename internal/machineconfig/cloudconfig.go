package machineconfig

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// cloud-config keys by section. coreos-cloudinit's YAML fork turned "-"
// into "_" in keys, so keys are normalised before they are looked up.
var (
	ccTopKeys       = []string{"hostname", "users", "ssh_authorized_keys", "write_files", "manage_etc_hosts", "coreos"}
	ccUserKeys      = []string{"name", "passwd", "gecos", "homedir", "no_create_home", "primary_group", "groups", "no_user_group", "system", "no_log_init", "shell", "ssh_authorized_keys", "coreos_ssh_import_github", "coreos_ssh_import_github_users", "coreos_ssh_import_url"}
	ccWriteFileKeys = []string{"path", "content", "encoding", "permissions", "owner"}
	ccCoreOSKeys    = []string{"units", "update", "locksmith", "etcd", "etcd2", "fleet", "flannel", "oem"}
	ccUnitKeys      = []string{"name", "content", "enable", "runtime", "mask", "command", "drop_ins"}
	ccDropInKeys    = []string{"name", "content"}
	ccUpdateKeys    = []string{"reboot_strategy", "group", "server"}
	ccLocksmithKeys = []string{"endpoint", "etcd_cafile", "etcd_certfile", "etcd_keyfile", "etcd_username", "etcd_password", "group", "window_start", "window_length"}
	ccOEMKeys       = []string{"id", "name", "version_id", "home_url", "bug_report_url"}
)

// ccOtherCloudInit are keys of Ubuntu's cloud-init that CoreOS never
// supported; they get a more useful message than "unknown key".
var ccOtherCloudInit = map[string]bool{
	"runcmd": true, "bootcmd": true, "packages": true, "package_update": true, "package_upgrade": true,
	"apt": true, "yum_repos": true, "mounts": true, "ntp": true, "timezone": true, "chpasswd": true,
	"disable_root": true, "ssh_pwauth": true, "growpart": true, "resize_rootfs": true, "final_message": true,
	"groups": true, "locale": true, "fqdn": true, "preserve_hostname": true,
}

// ccDeprecated says what flotilla does instead of each retired coreos.*
// service section.
var ccDeprecated = map[string]string{
	"etcd":    "coreos.etcd (etcd 0.4) is no longer supported and is ignored: flotilla server embeds etcd (or uses an external cluster with --etcd-endpoints); agents reach it through the server",
	"etcd2":   "coreos.etcd2 is no longer supported and is ignored: flotilla server embeds etcd (or uses an external cluster with --etcd-endpoints); agents reach it through the server",
	"fleet":   "coreos.fleet is no longer supported and is ignored: schedule units across machines with `flotilla unit`",
	"flannel": "coreos.flannel is ignored: flotilla ships no overlay network; run a CNI plugin or flanneld as a unit of your own",
}

var (
	permissionsRE = regexp.MustCompile(`^0?[0-7]{3,4}$`)
	yamlLineRE    = regexp.MustCompile(`line (\d+)`)
	substTokenRE  = regexp.MustCompile(`\$(public|private)_ipv[46]`)
)

// ccParser walks the YAML node tree rather than decoding into structs, so
// every finding has a position and YAML 1.1 scalars (0644, yes) are read
// from their text instead of being coerced first.
type ccParser struct {
	rep Report
	cfg Config
}

func parseCloudConfig(doc []byte) (Config, Report) {
	p := &ccParser{cfg: Config{Format: FormatCloudConfig}, rep: Report{Format: FormatCloudConfig, Entries: []Entry{}}}
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil {
		p.rep.errorf(yamlErrPos(err), "YAML syntax: %s", strings.TrimPrefix(err.Error(), "yaml: "))
		return p.cfg, p.rep
	}
	if m := substTokenRE.Find(doc); m != nil {
		p.rep.warnf(pos{line: lineOf(doc, m)}, "%s is not substituted: flotilla applies the document as written (coreos-cloudinit replaced it from the cloud's meta-data)", m)
	}
	if len(root.Content) == 0 {
		return p.cfg, p.rep
	}
	top := deref(root.Content[0])
	if isNull(top) {
		return p.cfg, p.rep
	}
	var coreKeys []string
	p.fields(top, "", ccTopKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "hostname":
			if s, ok := p.str(v, key); ok {
				p.cfg.Hostname = s
				p.checkHostname(s, at(v))
			}
		case "users":
			p.list(v, key, func(i int, n *yaml.Node) { p.user(n, fmt.Sprintf("users[%d]", i)) })
		case "ssh_authorized_keys":
			if keys, ok := p.strs(v, key); ok {
				coreKeys = append(coreKeys, keys...)
			}
		case "write_files":
			p.list(v, key, func(i int, n *yaml.Node) { p.writeFile(n, fmt.Sprintf("write_files[%d]", i)) })
		case "manage_etc_hosts":
			if s, ok := p.str(v, key); ok {
				if s != "localhost" && s != "" {
					p.rep.errorf(at(v), "manage_etc_hosts: %q is not supported; the only value is \"localhost\"", s)
				}
				p.cfg.ManageEtcHosts = s
			}
		case "coreos":
			p.coreos(v)
		}
	})
	if len(coreKeys) > 0 {
		p.addCoreKeys(coreKeys)
	}
	return p.cfg, p.rep
}

// addCoreKeys gives top-level ssh_authorized_keys to user "core", merging
// with a users entry for core if there is one.
func (p *ccParser) addCoreKeys(keys []string) {
	for i := range p.cfg.Users {
		if p.cfg.Users[i].Name == "core" {
			p.cfg.Users[i].SSHAuthorizedKeys = append(p.cfg.Users[i].SSHAuthorizedKeys, keys...)
			return
		}
	}
	p.cfg.Users = append(p.cfg.Users, User{Name: "core", SSHAuthorizedKeys: keys})
}

func (p *ccParser) user(n *yaml.Node, where string) {
	u := User{at: at(n)}
	p.fields(n, where, ccUserKeys, func(key string, k, v *yaml.Node) {
		field := where + "." + key
		switch key {
		case "name":
			u.Name, _ = p.str(v, field)
		case "passwd":
			if s, ok := p.str(v, field); ok {
				u.PasswordHash = &s
				if looksPlainPassword(s) {
					p.rep.warnf(at(v), "%s does not look like a crypt(3) hash; the value is written to /etc/shadow as is (make one with `mkpasswd --method=SHA-512`)", field)
				}
			}
		case "gecos":
			u.Gecos, _ = p.str(v, field)
		case "homedir":
			u.HomeDir, _ = p.str(v, field)
		case "no_create_home":
			u.NoCreateHome, _ = p.boolean(v, field)
		case "primary_group":
			u.PrimaryGroup, _ = p.str(v, field)
		case "groups":
			u.Groups, _ = p.strs(v, field)
		case "no_user_group":
			u.NoUserGroup, _ = p.boolean(v, field)
		case "system":
			u.System, _ = p.boolean(v, field)
		case "no_log_init":
			p.boolean(v, field) // only affects lastlog, which flotilla does not write
		case "shell":
			u.Shell, _ = p.str(v, field)
		case "ssh_authorized_keys":
			u.SSHAuthorizedKeys, _ = p.strs(v, field)
		case "coreos_ssh_import_github", "coreos_ssh_import_github_users", "coreos_ssh_import_url":
			p.rep.warnf(at(k), "%s is not supported: flotilla applies configs offline and never fetches keys; list them in ssh_authorized_keys", field)
		}
	})
	if u.Name == "" {
		p.rep.errorf(at(n), "%s: name is required", where)
		return
	}
	p.cfg.Users = append(p.cfg.Users, u)
}

func (p *ccParser) writeFile(n *yaml.Node, where string) {
	f := File{Mode: 0o644, Overwrite: true, at: at(n)}
	var content []byte
	var contentNode, encNode *yaml.Node
	var encoding string
	p.fields(n, where, ccWriteFileKeys, func(key string, k, v *yaml.Node) {
		field := where + "." + key
		switch key {
		case "path":
			f.Path, _ = p.str(v, field)
		case "content":
			if s, ok := p.str(v, field); ok {
				content, contentNode = []byte(s), v
				if deref(v).Tag == "!!binary" {
					// YAML strings cannot hold raw gzip bytes; a !!binary
					// scalar is base64 text that the YAML layer decodes.
					b, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
					if err != nil {
						p.rep.errorf(at(v), "%s: bad !!binary scalar: %v", field, err)
					}
					content = b
				}
			}
		case "encoding":
			encoding, _ = p.str(v, field)
			encNode = v
		case "permissions":
			if s, ok := p.str(v, field); ok && s != "" {
				if !permissionsRE.MatchString(s) {
					p.rep.errorf(at(v), "%s: %q is not an octal mode like \"0644\"", field, s)
					break
				}
				m, _ := strconv.ParseUint(s, 8, 32)
				f.Mode = modeFromUnix(uint32(m))
			}
		case "owner":
			if s, ok := p.str(v, field); ok && s != "" {
				user, group, _ := strings.Cut(s, ":")
				if user == "" || strings.Count(s, ":") > 1 {
					p.rep.errorf(at(v), "%s: %q: want \"user\" or \"user:group\"", field, s)
					break
				}
				f.Owner = ownerFromNames(user, group)
			}
		}
	})
	if f.Path == "" {
		p.rep.errorf(at(n), "%s: path is required", where)
		return
	}
	if encoding != "" {
		decoded, err := decodeContent(content, encoding)
		switch {
		case errors.Is(err, errUnknownEncoding):
			p.rep.errorf(at(encNode), "%s.encoding: %v", where, err)
		case err != nil:
			errAt := at(n)
			if contentNode != nil {
				errAt = at(contentNode)
			}
			p.rep.errorf(errAt, "%s.content: %v", where, err)
		}
		content = decoded
	}
	f.Contents = &Content{Inline: content}
	p.cfg.Files = append(p.cfg.Files, f)
}

// ownerFromNames turns "user" / "group" strings into an Owner, treating
// all-digit names as ids the way chown does.
func ownerFromNames(user, group string) Owner {
	var o Owner
	if id, err := strconv.Atoi(user); err == nil && id >= 0 {
		o.UID = &id
	} else {
		o.User = user
	}
	if group == "" {
		return o
	}
	if id, err := strconv.Atoi(group); err == nil && id >= 0 {
		o.GID = &id
	} else {
		o.Group = group
	}
	return o
}

var errUnknownEncoding = errors.New("unknown encoding")

// decodeContent undoes write_files' encoding: base64, gzip, or both
// (base64 outside).
func decodeContent(data []byte, encoding string) ([]byte, error) {
	var b64, gz bool
	switch strings.ToLower(encoding) {
	case "b64", "base64":
		b64 = true
	case "gz", "gzip":
		gz = true
	case "gz+b64", "gz+base64", "gzip+b64", "gzip+base64":
		b64, gz = true, true
	default:
		return nil, fmt.Errorf("%w %q: want b64, base64, gz, gzip, gz+b64, gz+base64, gzip+b64 or gzip+base64", errUnknownEncoding, encoding)
	}
	if b64 {
		// Line breaks and spaces inside base64 are how people paste it;
		// they carry no data.
		clean := strings.Map(func(r rune) rune {
			if r == ' ' || r == '\n' || r == '\r' || r == '\t' {
				return -1
			}
			return r
		}, string(data))
		out, err := base64.StdEncoding.DecodeString(clean)
		if err != nil {
			return nil, fmt.Errorf("bad base64: %w", err)
		}
		data = out
	}
	if gz {
		out, err := gunzip(data)
		if err != nil {
			return nil, fmt.Errorf("bad gzip data: %w", err)
		}
		data = out
	}
	return data, nil
}

// maxDecompressed bounds gunzip output so a small hostile document cannot
// fill memory.
const maxDecompressed = 1 << 30

func gunzip(data []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	out, err := io.ReadAll(io.LimitReader(zr, maxDecompressed+1))
	if err != nil {
		return nil, err
	}
	if len(out) > maxDecompressed {
		return nil, fmt.Errorf("decompressed data larger than %d bytes", maxDecompressed)
	}
	return out, nil
}

func (p *ccParser) coreos(n *yaml.Node) {
	p.fields(n, "coreos", ccCoreOSKeys, func(key string, k, v *yaml.Node) {
		field := "coreos." + key
		switch key {
		case "units":
			p.list(v, field, func(i int, n *yaml.Node) { p.unit(n, fmt.Sprintf("coreos.units[%d]", i)) })
		case "update":
			p.update(v)
		case "locksmith":
			p.locksmith(v)
		case "oem":
			p.oem(v)
		default:
			p.rep.warnf(at(k), "%s", ccDeprecated[key])
		}
	})
}

func (p *ccParser) unit(n *yaml.Node, where string) {
	u := Unit{at: at(n)}
	p.fields(n, where, ccUnitKeys, func(key string, k, v *yaml.Node) {
		field := where + "." + key
		switch key {
		case "name":
			u.Name, _ = p.str(v, field)
		case "content":
			if s, ok := p.str(v, field); ok {
				u.Contents = &s
			}
		case "enable":
			if b, ok := p.boolean(v, field); ok && b {
				// enable: false meant "do nothing" to coreos-cloudinit.
				u.Enable = &b
			}
		case "mask":
			if b, ok := p.boolean(v, field); ok {
				u.Mask = &b
				if !b {
					// Like coreos-cloudinit: mask: false does not unmask
					// a persistent unit.
					u.Mask = nil
				}
			}
		case "runtime":
			u.Runtime, _ = p.boolean(v, field)
		case "command":
			if s, ok := p.str(v, field); ok {
				if !validCommands[s] {
					p.rep.errorf(at(v), "%s: %q is not a unit command (want start, stop, restart, reload, try-restart, reload-or-restart or reload-or-try-restart)", field, s)
				}
				u.Command = s
			}
		case "drop_ins":
			p.list(v, field, func(i int, n *yaml.Node) {
				dw := fmt.Sprintf("%s.drop_ins[%d]", where, i)
				var d DropIn
				p.fields(n, dw, ccDropInKeys, func(key string, _, v *yaml.Node) {
					switch key {
					case "name":
						d.Name, _ = p.str(v, dw+".name")
					case "content":
						d.Contents, _ = p.str(v, dw+".content")
					}
				})
				if d.Name == "" {
					p.rep.errorf(at(n), "%s: name is required", dw)
					return
				}
				u.DropIns = append(u.DropIns, d)
			})
		}
	})
	if u.Name == "" {
		p.rep.errorf(at(n), "%s: name is required", where)
		return
	}
	p.cfg.Units = append(p.cfg.Units, u)
}

var validCommands = map[string]bool{
	"start": true, "stop": true, "restart": true, "reload": true, "try-restart": true,
	"reload-or-restart": true, "reload-or-try-restart": true,
}

func (p *ccParser) updateConf() *UpdateConf {
	if p.cfg.Update == nil {
		p.cfg.Update = &UpdateConf{}
	}
	return p.cfg.Update
}

func (p *ccParser) update(n *yaml.Node) {
	p.fields(n, "coreos.update", ccUpdateKeys, func(key string, _, v *yaml.Node) {
		s, ok := p.str(v, "coreos.update."+key)
		if !ok || s == "" {
			return
		}
		u := p.updateConf()
		switch key {
		case "reboot_strategy":
			u.RebootStrategy = s
			p.checkStrategy(s, at(v))
		case "group":
			u.Group = s
		case "server":
			u.Server = s
		}
	})
}

func (p *ccParser) locksmith(n *yaml.Node) {
	var startAt, lengthAt pos
	p.fields(n, "coreos.locksmith", ccLocksmithKeys, func(key string, k, v *yaml.Node) {
		s, ok := p.str(v, "coreos.locksmith."+key)
		if !ok || s == "" {
			return
		}
		u := p.updateConf()
		switch key {
		case "window_start":
			u.RebootWindowStart, startAt = s, at(v)
		case "window_length":
			u.RebootWindowLength, lengthAt = s, at(v)
		case "group":
			u.LocksmithGroup = s
		case "endpoint":
			u.LocksmithEndpoint = s
		default:
			p.rep.warnf(at(k), "coreos.locksmith.%s is ignored: flotilla agents take etcd credentials from their own configuration, not from update.conf", key)
		}
	})
	if u := p.cfg.Update; u != nil {
		checkWindow(&p.rep, u.RebootWindowStart, u.RebootWindowLength, startAt, lengthAt, at(n))
	}
}

func (p *ccParser) oem(n *yaml.Node) {
	vals := map[string]string{}
	p.fields(n, "coreos.oem", ccOEMKeys, func(key string, _, v *yaml.Node) {
		vals[key], _ = p.str(v, "coreos.oem."+key)
	})
	if vals["id"] == "" {
		// coreos-cloudinit wrote /etc/oem-release only with an id.
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "ID=%s\n", vals["id"])
	for _, kv := range [][2]string{{"VERSION_ID", "version_id"}, {"NAME", "name"}, {"HOME_URL", "home_url"}, {"BUG_REPORT_URL", "bug_report_url"}} {
		if s := vals[kv[1]]; s != "" {
			if kv[0] == "VERSION_ID" {
				fmt.Fprintf(&b, "%s=%s\n", kv[0], s)
			} else {
				fmt.Fprintf(&b, "%s=%q\n", kv[0], s)
			}
		}
	}
	p.cfg.Files = append(p.cfg.Files, File{Path: "/etc/oem-release", Contents: &Content{Inline: []byte(b.String())}, Mode: 0o644, Overwrite: true, at: at(n)})
}

// fields checks that n is a mapping and calls fn for each key, normalised;
// unknown keys are warnings with a suggestion.
func (p *ccParser) fields(n *yaml.Node, where string, known []string, fn func(key string, k, v *yaml.Node)) {
	n = deref(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		p.rep.errorf(at(n), "%s: want a mapping, got %s", orTop(where), kindName(n))
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), deref(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			p.rep.errorf(at(k), "%s: keys must be strings, got %s", orTop(where), kindName(k))
			continue
		}
		key := strings.ReplaceAll(k.Value, "-", "_")
		full := key
		if where != "" {
			full = where + "." + key
		}
		if seen[key] {
			p.rep.errorf(at(k), "%s: key given twice", full)
			continue
		}
		seen[key] = true
		if !contains(known, key) {
			p.unknownKey(k, where, key, known)
			continue
		}
		fn(key, k, v)
	}
}

func (p *ccParser) unknownKey(k *yaml.Node, where, key string, known []string) {
	full := key
	if where != "" {
		full = where + "." + key
	}
	msg := fmt.Sprintf("unknown key %q is ignored", full)
	switch {
	case where == "" && contains(ccCoreOSKeys, key):
		msg += fmt.Sprintf("; it belongs under \"coreos:\" (coreos.%s)", key)
	case where == "" && ccOtherCloudInit[key]:
		msg += "; it is a key of Ubuntu's cloud-init, which CoreOS cloud-config never supported"
	default:
		if s := suggest(key, known); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
	}
	p.rep.warnf(at(k), "%s", msg)
}

func (p *ccParser) list(n *yaml.Node, field string, fn func(i int, item *yaml.Node)) {
	n = deref(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		p.rep.errorf(at(n), "%s: want a list, got %s", field, kindName(n))
		return
	}
	for i, item := range n.Content {
		fn(i, deref(item))
	}
}

func (p *ccParser) str(n *yaml.Node, field string) (string, bool) {
	n = deref(n)
	if isNull(n) {
		return "", true
	}
	if n.Kind != yaml.ScalarNode {
		p.rep.errorf(at(n), "%s: want a string, got %s", field, kindName(n))
		return "", false
	}
	return n.Value, true
}

func (p *ccParser) boolean(n *yaml.Node, field string) (bool, bool) {
	s, ok := p.str(n, field)
	if !ok {
		return false, false
	}
	switch strings.ToLower(s) {
	case "true", "yes", "on":
		return true, true
	case "false", "no", "off", "":
		return false, true
	}
	p.rep.errorf(at(n), "%s: want true or false, got %q", field, s)
	return false, false
}

func (p *ccParser) strs(n *yaml.Node, field string) ([]string, bool) {
	var out []string
	ok := true
	n = deref(n)
	if isNull(n) {
		return nil, true
	}
	if n.Kind != yaml.SequenceNode {
		p.rep.errorf(at(n), "%s: want a list of strings, got %s", field, kindName(n))
		return nil, false
	}
	for i, item := range n.Content {
		s, good := p.str(item, fmt.Sprintf("%s[%d]", field, i))
		ok = ok && good
		if good && s != "" {
			out = append(out, s)
		}
	}
	return out, ok
}

func (p *ccParser) checkHostname(s string, at pos) {
	if err := checkHostname(s); err != nil {
		p.rep.errorf(at, "hostname: %v", err)
	}
}

func (p *ccParser) checkStrategy(s string, at pos) {
	checkStrategy(&p.rep, s, at)
}

// deref follows YAML aliases; the loop bound guards against a hostile
// document.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null") || n.Kind == 0
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

func at(n *yaml.Node) pos {
	if n == nil {
		return pos{}
	}
	return pos{line: n.Line, col: n.Column}
}

func orTop(where string) string {
	if where == "" {
		return "document"
	}
	return where
}

// yamlErrPos digs the line out of a yaml.v3 syntax error, which has no
// structured position.
func yamlErrPos(err error) pos {
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return pos{line: n}
	}
	return pos{}
}

func lineOf(doc, match []byte) int {
	i := bytes.Index(doc, match)
	return bytes.Count(doc[:max(i, 0)], []byte("\n")) + 1
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// suggest returns the known key closest to key when it is close enough to
// be a typo.
func suggest(key string, known []string) string {
	best, bestD := "", 1<<30
	for _, k := range known {
		if d := editDistance(key, k); d < bestD {
			best, bestD = k, d
		}
	}
	if bestD <= max(2, len(key)/3) {
		return best
	}
	return ""
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// looksPlainPassword guesses whether a passwd value is a clear-text
// password: crypt(3) hashes start with "$", locked entries with "!" or "*".
func looksPlainPassword(s string) bool {
	return s != "" && !strings.HasPrefix(s, "$") && !strings.HasPrefix(s, "!") && !strings.HasPrefix(s, "*")
}
