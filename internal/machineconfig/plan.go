package machineconfig

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
)

// Apply and Diff share one plan: the document becomes a list of ops, each
// the desired state of one path; an op is compared with what is at the
// path (decide) and, for Apply, carried out. Diff is therefore exactly
// "what Apply would change".

type nodeType int

const (
	typeFile nodeType = iota
	typeDir
	typeSymlink
	typeHardlink
	// typeRemoveLink removes a symlink when removeIf accepts its target
	// (unmask, disable).
	typeRemoveLink
)

// op is the desired state of one path.
type op struct {
	kind string // change kind shown to the operator
	name string // user or unit name, when the op belongs to one
	path string // as in the document; resolved inside the root when used
	typ  nodeType

	// Regular files: data is the desired contents; transform, when set,
	// computes them from the current contents instead; keepData leaves
	// existing contents (Ignition file without contents) and appendData
	// is ensured at the end of the file.
	data       []byte
	transform  func(cur []byte, exists bool) []byte
	keepData   bool
	appendData []byte
	// unknownData marks remote contents Diff did not fetch; hash, when
	// set, still lets it compare them.
	unknownData bool
	hash        string

	mode     fs.FileMode
	uid, gid int
	ownerSet bool
	// keepMeta keeps the mode and owner of an existing file (account
	// databases).
	keepMeta bool

	overwrite     bool
	onlyIfMissing bool
	// silent ops are not reported as changes themselves (account
	// databases: their users and groups are).
	silent bool

	target   string
	removeIf func(target string) bool
	// unit is the unit whose files this op manages, for daemon-reload and
	// restart decisions.
	unit string
}

type action int

const (
	actNone action = iota
	actCreate
	actUpdate
	actReplace
	actRemove
	actConflict
)

var actionNames = map[action]string{actCreate: "create", actUpdate: "update", actReplace: "replace", actRemove: "remove", actConflict: "conflict"}

// decision is the outcome of comparing an op with the root.
type decision struct {
	act      action
	what     []string // content, mode, owner, target, type
	resolved string
	cur      nodeState
	data     []byte
	detail   []string // human-readable specifics ("mode 0644 → 0600")
	conflict string
	warning  string
}

// decide compares o with what is in the root. It does not write.
func (rf *rootFS) decide(o op) (decision, error) {
	rp, err := rf.resolve(o.path)
	if err != nil {
		return decision{}, err
	}
	cur, err := rf.inspect(rp, o.typ == typeFile)
	if err != nil {
		return decision{}, fmt.Errorf("inspect %s: %w", o.path, err)
	}
	d := decision{resolved: rp, cur: cur}
	switch o.typ {
	case typeFile:
		rf.decideFile(o, &d)
	case typeDir:
		rf.decideDir(o, &d)
	case typeSymlink:
		rf.decideSymlink(o, &d)
	case typeHardlink:
		if err := rf.decideHardlink(o, &d); err != nil {
			return decision{}, err
		}
	case typeRemoveLink:
		if cur.isSymlink() && o.removeIf(cur.target) {
			d.act, d.what = actRemove, []string{"target"}
			d.detail = []string{"link to " + cur.target}
		}
	}
	return d, nil
}

// desiredData computes a file's contents from the current ones.
func (o op) desiredData(cur nodeState) []byte {
	var base []byte
	switch {
	case o.transform != nil:
		return o.transform(cur.data, cur.isRegular())
	case o.keepData:
		if cur.isRegular() {
			base = cur.data
		}
		// Appending again on every apply would grow the file; a file
		// that already ends in the fragments is left as it is.
		if len(o.appendData) > 0 && bytes.HasSuffix(base, o.appendData) {
			return base
		}
	default:
		base = o.data
	}
	if len(o.appendData) == 0 {
		return base
	}
	return append(slices.Clip(base), o.appendData...)
}

func (rf *rootFS) decideFile(o op, d *decision) {
	cur := d.cur
	if !o.unknownData {
		d.data = o.desiredData(cur)
	}
	if !cur.exists {
		d.act = actCreate
		return
	}
	if !cur.isRegular() {
		if o.keepMeta || o.overwrite {
			d.act, d.what = actReplace, []string{"type"}
			d.detail = []string{"replaces a " + typeName(cur.mode)}
			return
		}
		d.act, d.conflict = actConflict, fmt.Sprintf("%s exists and is a %s, and overwrite is false", o.path, typeName(cur.mode))
		return
	}
	switch {
	case o.unknownData && o.hash != "":
		if verifyHash(o.hash, cur.data) != nil {
			d.what = append(d.what, "content")
		}
	case o.unknownData:
	case !bytes.Equal(d.data, cur.data):
		d.what = append(d.what, "content")
	}
	if len(d.what) > 0 && !o.overwrite && !o.keepData && o.transform == nil {
		d.act, d.conflict = actConflict, fmt.Sprintf("%s exists with other contents and overwrite is false", o.path)
		return
	}
	rf.compareMeta(o, d)
	if len(d.what) > 0 {
		d.act = actUpdate
	}
}

// compareMeta adds mode and owner differences to d.
func (rf *rootFS) compareMeta(o op, d *decision) {
	if o.keepMeta {
		return
	}
	cur := d.cur
	if want, have := permBits(o.mode), permBits(cur.mode); want != have {
		d.what = append(d.what, "mode")
		d.detail = append(d.detail, fmt.Sprintf("mode %s → %s", modeString(have), modeString(want)))
	}
	if cur.uid != o.uid || cur.gid != o.gid {
		switch {
		case rf.canChown:
			d.what = append(d.what, "owner")
			d.detail = append(d.detail, fmt.Sprintf("owner %d:%d → %d:%d", cur.uid, cur.gid, o.uid, o.gid))
		case o.ownerSet:
			d.warning = fmt.Sprintf("%s: owner is %d:%d, the config wants %d:%d; only root can change it", o.path, cur.uid, cur.gid, o.uid, o.gid)
		}
	}
}

func (rf *rootFS) decideDir(o op, d *decision) {
	cur := d.cur
	switch {
	case !cur.exists:
		d.act = actCreate
		return
	case o.onlyIfMissing:
		return
	case !cur.isDir():
		if o.overwrite {
			d.act, d.what = actReplace, []string{"type"}
			d.detail = []string{"replaces a " + typeName(cur.mode)}
			return
		}
		d.act, d.conflict = actConflict, fmt.Sprintf("%s exists and is a %s, and overwrite is false", o.path, typeName(cur.mode))
		return
	}
	rf.compareMeta(o, d)
	if len(d.what) > 0 {
		d.act = actUpdate
	}
}

func (rf *rootFS) decideSymlink(o op, d *decision) {
	cur := d.cur
	switch {
	case !cur.exists:
		d.act = actCreate
		return
	case cur.isSymlink() && path.Clean(cur.target) == path.Clean(o.target):
		if o.ownerSet && rf.canChown && (cur.uid != o.uid || cur.gid != o.gid) {
			d.act, d.what = actUpdate, []string{"owner"}
			d.detail = []string{fmt.Sprintf("owner %d:%d → %d:%d", cur.uid, cur.gid, o.uid, o.gid)}
		}
		return
	}
	what, detail := "type", "replaces a "+typeName(cur.mode)
	if cur.isSymlink() {
		what, detail = "target", fmt.Sprintf("target %s → %s", cur.target, o.target)
	}
	if !o.overwrite {
		d.act, d.conflict = actConflict, fmt.Sprintf("%s exists (%s) and overwrite is false", o.path, strings.TrimPrefix(detail, "replaces "))
		return
	}
	d.act, d.what, d.detail = actReplace, []string{what}, []string{detail}
}

func (rf *rootFS) decideHardlink(o op, d *decision) error {
	rt, err := rf.resolve(o.target)
	if err != nil {
		return err
	}
	tst, err := rf.inspect(rt, false)
	if err != nil {
		return err
	}
	cur := d.cur
	switch {
	case !cur.exists:
		d.act = actCreate
		return nil
	case tst.exists && os.SameFile(tst.info, cur.info):
		return nil
	case !o.overwrite:
		d.act, d.conflict = actConflict, fmt.Sprintf("%s exists and is not a hard link to %s, and overwrite is false", o.path, o.target)
		return nil
	}
	d.act, d.what = actReplace, []string{"target"}
	d.detail = []string{"hard link to " + o.target}
	return nil
}

func typeName(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "regular file"
	case m.IsDir():
		return "directory"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	}
	return "special file"
}

// replaceBlock puts body between begin and end marker lines in text,
// replacing an earlier block or appending a new one. Lines outside the
// block are kept as they are.
func replaceBlock(text []byte, begin, end string, body []string) []byte {
	block := begin + "\n"
	for _, l := range body {
		block += l + "\n"
	}
	block += end + "\n"
	s := string(text)
	if i := strings.Index(s, begin+"\n"); i >= 0 && (i == 0 || s[i-1] == '\n') {
		if j := strings.Index(s[i:], end+"\n"); j >= 0 {
			return []byte(s[:i] + block + s[i+j+len(end)+1:])
		}
	}
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return []byte(s + block)
}

// mergeKeyValues sets KEY=value lines in an environment-style file: an
// existing line for a key is replaced in place, missing keys are appended
// in the given order, all other lines stay.
func mergeKeyValues(text []byte, pairs [][2]string) []byte {
	want := map[string]string{}
	for _, kv := range pairs {
		want[kv[0]] = kv[1]
	}
	var lines []string
	s := string(text)
	if s != "" {
		lines = strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	}
	done := map[string]bool{}
	for i, l := range lines {
		k, _, ok := strings.Cut(l, "=")
		k = strings.TrimSpace(k)
		if v, managed := want[k]; ok && managed {
			lines[i] = k + "=" + v
			done[k] = true
		}
	}
	for _, kv := range pairs {
		if !done[kv[0]] {
			lines = append(lines, kv[0]+"="+kv[1])
		}
	}
	if len(lines) == 0 {
		return []byte{}
	}
	return []byte(strings.Join(lines, "\n") + "\n")
}
