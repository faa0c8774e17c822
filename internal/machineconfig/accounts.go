package machineconfig

import (
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
)

// Account databases are edited as text: lines flotilla does not change stay
// byte for byte, new entries are appended. No useradd is run, so the target
// root needs no shadow-utils and the host's databases are never involved.

// Account database paths inside the root.
const (
	passwdPath  = "/etc/passwd"
	groupPath   = "/etc/group"
	shadowPath  = "/etc/shadow"
	gshadowPath = "/etc/gshadow"
)

// UID/GID ranges, as in login.defs: regular accounts from 1000, system
// accounts below (allocated downwards, as useradd --system does).
const (
	firstRegularID = 1000
	lastRegularID  = 60000
	firstSystemID  = 100
	lastSystemID   = 999
	usersGID       = 100
)

// dbFile is one colon-separated database; lines keep their original text
// until an entry is changed.
type dbFile struct {
	path   string
	exists bool
	lines  []string
	// noFinalNewline remembers a file that did not end in a newline so an
	// unchanged file compares equal.
	noFinalNewline bool
}

func parseDB(p string, data []byte, exists bool) *dbFile {
	db := &dbFile{path: p, exists: exists}
	s := string(data)
	if s == "" {
		return db
	}
	if !strings.HasSuffix(s, "\n") {
		db.noFinalNewline = true
	} else {
		s = s[:len(s)-1]
	}
	db.lines = strings.Split(s, "\n")
	return db
}

func (db *dbFile) bytes() []byte {
	if len(db.lines) == 0 {
		return []byte{}
	}
	s := strings.Join(db.lines, "\n")
	if !db.noFinalNewline {
		s += "\n"
	}
	return []byte(s)
}

// find returns the index of the entry named name, or -1.
func (db *dbFile) find(name string) int {
	for i, l := range db.lines {
		if n, _, ok := strings.Cut(l, ":"); ok && n == name {
			return i
		}
	}
	return -1
}

func (db *dbFile) fields(i int) []string { return strings.Split(db.lines[i], ":") }

// get returns field n of entry name ("" if absent).
func (db *dbFile) get(name string, n int) (string, bool) {
	i := db.find(name)
	if i < 0 {
		return "", false
	}
	f := db.fields(i)
	if n >= len(f) {
		return "", true
	}
	return f[n], true
}

// set changes field n of the entry at i, padding short lines.
func (db *dbFile) set(i, n int, v string) {
	f := db.fields(i)
	for len(f) <= n {
		f = append(f, "")
	}
	f[n] = v
	db.lines[i] = strings.Join(f, ":")
}

func (db *dbFile) add(fields ...string) {
	db.lines = append(db.lines, strings.Join(fields, ":"))
	db.noFinalNewline = false
}

// ids returns the numeric ids in field n of all entries.
func (db *dbFile) ids(n int) map[int]bool {
	out := map[int]bool{}
	for i := range db.lines {
		f := db.fields(i)
		if n < len(f) {
			if id, err := strconv.Atoi(f[n]); err == nil {
				out[id] = true
			}
		}
	}
	return out
}

// accountDB is the four databases of a root.
type accountDB struct {
	passwd, group, shadow, gshadow *dbFile
	// orig keeps the loaded bytes so the planner can tell what changed.
	orig map[string][]byte
	// meta is the mode and owner of each existing file, kept on rewrite.
	meta map[string]nodeState
}

// accountChange is a user or group created or changed.
type accountChange struct {
	kind   string // "user" or "group"
	name   string
	create bool
	fields []string
}

func (db *accountDB) files() []*dbFile { return []*dbFile{db.group, db.gshadow, db.passwd, db.shadow} }

// uid and gid look names up in the (planned) databases.
func (db *accountDB) uid(name string) (int, bool) {
	s, ok := db.passwd.get(name, 2)
	if !ok {
		return 0, false
	}
	id, err := strconv.Atoi(s)
	return id, err == nil
}

func (db *accountDB) gid(name string) (int, bool) {
	s, ok := db.group.get(name, 2)
	if !ok {
		return 0, false
	}
	id, err := strconv.Atoi(s)
	return id, err == nil
}

// userHome returns a user's home directory and primary gid.
func (db *accountDB) userInfo(name string) (uid, gid int, home string, ok bool) {
	i := db.passwd.find(name)
	if i < 0 {
		return 0, 0, "", false
	}
	f := db.passwd.fields(i)
	if len(f) < 7 {
		return 0, 0, "", false
	}
	uid, err1 := strconv.Atoi(f[2])
	gid, err2 := strconv.Atoi(f[3])
	return uid, gid, f[5], err1 == nil && err2 == nil
}

// resolveOwner turns an Owner into numeric ids; unset parts are root.
func (db *accountDB) resolveOwner(o Owner) (uid, gid int, err error) {
	switch {
	case o.UID != nil:
		uid = *o.UID
	case o.User != "":
		id, ok := db.uid(o.User)
		if !ok {
			return 0, 0, fmt.Errorf("user %q does not exist in the root's %s", o.User, passwdPath)
		}
		uid = id
	}
	switch {
	case o.GID != nil:
		gid = *o.GID
	case o.Group != "":
		id, ok := db.gid(o.Group)
		if !ok {
			return 0, 0, fmt.Errorf("group %q does not exist in the root's %s", o.Group, groupPath)
		}
		gid = id
	}
	return uid, gid, nil
}

// allocID picks a free id: the lowest free regular id, or the highest free
// system id.
func allocID(used map[int]bool, system bool) (int, error) {
	if system {
		for id := lastSystemID; id >= firstSystemID; id-- {
			if !used[id] {
				return id, nil
			}
		}
		return 0, fmt.Errorf("no free system id in %d-%d", firstSystemID, lastSystemID)
	}
	for id := firstRegularID; id <= lastRegularID; id++ {
		if !used[id] {
			return id, nil
		}
	}
	return 0, fmt.Errorf("no free id in %d-%d", firstRegularID, lastRegularID)
}

// planAccounts applies the document's groups and users to db and returns
// what changed. It is a pure function of db and the config.
func planAccounts(db *accountDB, groups []Group, users []User) ([]accountChange, error) {
	var changes []accountChange
	for _, g := range groups {
		c, err := planGroup(db, g)
		if err != nil {
			return nil, fmt.Errorf("group %s: %w", g.Name, err)
		}
		if c != nil {
			changes = append(changes, *c)
		}
	}
	for _, u := range users {
		c, err := planUser(db, u)
		if err != nil {
			return nil, fmt.Errorf("user %s: %w", u.Name, err)
		}
		if c != nil {
			changes = append(changes, *c)
		}
	}
	return changes, nil
}

func planGroup(db *accountDB, g Group) (*accountChange, error) {
	if i := db.group.find(g.Name); i >= 0 {
		var changed []string
		if g.GID != nil {
			if cur, _ := db.gid(g.Name); cur != *g.GID {
				return nil, fmt.Errorf("exists with gid %d, the document asks for %d (flotilla does not renumber groups)", cur, *g.GID)
			}
		}
		if g.PasswordHash != nil && setShadowField(db.gshadow, g.Name, 1, *g.PasswordHash, []string{g.Name, *g.PasswordHash, "", ""}) {
			changed = append(changed, "password")
		}
		if len(changed) == 0 {
			return nil, nil
		}
		return &accountChange{kind: "group", name: g.Name, fields: changed}, nil
	}
	var gid int
	if g.GID != nil {
		if db.group.ids(2)[*g.GID] {
			return nil, fmt.Errorf("gid %d is already used by another group", *g.GID)
		}
		gid = *g.GID
	} else {
		id, err := allocID(db.group.ids(2), g.System)
		if err != nil {
			return nil, err
		}
		gid = id
	}
	db.group.add(g.Name, "x", strconv.Itoa(gid), "")
	hash := "!"
	if g.PasswordHash != nil {
		hash = *g.PasswordHash
	}
	db.gshadow.add(g.Name, hash, "", "")
	return &accountChange{kind: "group", name: g.Name, create: true, fields: []string{"gid " + strconv.Itoa(gid)}}, nil
}

// setShadowField sets field n of name in a shadow-style database, adding
// the whole line when the entry is missing. It reports whether anything
// changed.
func setShadowField(db *dbFile, name string, n int, v string, line []string) bool {
	i := db.find(name)
	if i < 0 {
		db.add(line...)
		return true
	}
	if cur, _ := db.get(name, n); cur == v {
		return false
	}
	db.set(i, n, v)
	return true
}

func planUser(db *accountDB, u User) (*accountChange, error) {
	var primaryGID *int
	if u.PrimaryGroup != "" {
		gid, ok := db.gid(u.PrimaryGroup)
		if !ok {
			if id, err := strconv.Atoi(u.PrimaryGroup); err == nil {
				gid, ok = id, true
			}
		}
		if !ok {
			return nil, fmt.Errorf("primary group %q does not exist in the root's %s and the document does not create it", u.PrimaryGroup, groupPath)
		}
		primaryGID = &gid
	}
	for _, g := range u.Groups {
		if db.group.find(g) < 0 {
			return nil, fmt.Errorf("group %q does not exist in the root's %s and the document does not create it", g, groupPath)
		}
	}
	if i := db.passwd.find(u.Name); i >= 0 {
		return updateUser(db, u, i, primaryGID)
	}
	return createUser(db, u, primaryGID)
}

func updateUser(db *accountDB, u User, i int, primaryGID *int) (*accountChange, error) {
	var changed []string
	f := db.passwd.fields(i)
	if u.UID != nil && (len(f) < 3 || f[2] != strconv.Itoa(*u.UID)) {
		return nil, fmt.Errorf("exists with uid %s, the document asks for %d (flotilla does not renumber users)", fieldOr(f, 2), *u.UID)
	}
	set := func(n int, v, what string) {
		if v != "" && fieldOr(db.passwd.fields(i), n) != v {
			db.passwd.set(i, n, v)
			changed = append(changed, what)
		}
	}
	if primaryGID != nil {
		set(3, strconv.Itoa(*primaryGID), "primary group")
	}
	set(4, u.Gecos, "gecos")
	set(5, u.HomeDir, "home")
	set(6, u.Shell, "shell")
	if u.PasswordHash != nil && setShadowField(db.shadow, u.Name, 1, *u.PasswordHash, shadowLine(u.Name, *u.PasswordHash)) {
		changed = append(changed, "password")
	}
	if addToGroups(db, u.Name, u.Groups) {
		changed = append(changed, "groups")
	}
	if len(changed) == 0 {
		return nil, nil
	}
	return &accountChange{kind: "user", name: u.Name, fields: changed}, nil
}

func createUser(db *accountDB, u User, primaryGID *int) (*accountChange, error) {
	usedUIDs := db.passwd.ids(2)
	var uid int
	if u.UID != nil {
		if usedUIDs[*u.UID] {
			return nil, fmt.Errorf("uid %d is already used by another user", *u.UID)
		}
		uid = *u.UID
	} else {
		id, err := allocID(usedUIDs, u.System)
		if err != nil {
			return nil, err
		}
		uid = id
	}
	fields := []string{"uid " + strconv.Itoa(uid)}
	var gid int
	switch {
	case primaryGID != nil:
		gid = *primaryGID
	case u.NoUserGroup:
		gid = usersGID
		if id, ok := db.gid("users"); ok {
			gid = id
		}
	default:
		if id, ok := db.gid(u.Name); ok {
			// A group of the user's name already exists: use it, as
			// useradd -N -g NAME would.
			gid = id
			break
		}
		usedGIDs := db.group.ids(2)
		if !usedGIDs[uid] {
			gid = uid
		} else {
			id, err := allocID(usedGIDs, u.System)
			if err != nil {
				return nil, err
			}
			gid = id
		}
		db.group.add(u.Name, "x", strconv.Itoa(gid), "")
		db.gshadow.add(u.Name, "!", "", "")
		fields = append(fields, "group "+u.Name)
	}
	home := u.HomeDir
	if home == "" {
		home = "/home/" + u.Name
	}
	shell := u.Shell
	if shell == "" {
		shell = "/bin/bash"
	}
	db.passwd.add(u.Name, "x", strconv.Itoa(uid), strconv.Itoa(gid), u.Gecos, home, shell)
	hash := "*"
	if u.PasswordHash != nil {
		hash = *u.PasswordHash
	}
	// The last-change field stays empty: it would make the result depend
	// on the day of the apply, and empty disables password aging.
	db.shadow.add(shadowLine(u.Name, hash)...)
	if addToGroups(db, u.Name, u.Groups) {
		fields = append(fields, "groups "+strings.Join(u.Groups, ","))
	}
	return &accountChange{kind: "user", name: u.Name, create: true, fields: fields}, nil
}

func shadowLine(name, hash string) []string {
	return []string{name, hash, "", "", "", "", "", "", ""}
}

func fieldOr(f []string, n int) string {
	if n < len(f) {
		return f[n]
	}
	return ""
}

// addToGroups adds user to the member lists of groups (in group and, when
// the entry is there, gshadow); it never removes memberships.
func addToGroups(db *accountDB, user string, groups []string) bool {
	changed := false
	for _, g := range groups {
		if addMember(db.group, g, 3, user) {
			changed = true
		}
		if db.gshadow.find(g) >= 0 {
			addMember(db.gshadow, g, 3, user)
		}
	}
	return changed
}

func addMember(db *dbFile, group string, n int, user string) bool {
	i := db.find(group)
	if i < 0 {
		return false
	}
	cur := fieldOr(db.fields(i), n)
	var members []string
	if cur != "" {
		members = strings.Split(cur, ",")
	}
	if slices.Contains(members, user) {
		return false
	}
	db.set(i, n, strings.Join(append(members, user), ","))
	return true
}

// loadAccounts reads the root's databases; missing ones start empty.
func loadAccounts(rf *rootFS) (*accountDB, error) {
	db := &accountDB{orig: map[string][]byte{}, meta: map[string]nodeState{}}
	for _, p := range []string{passwdPath, groupPath, shadowPath, gshadowPath} {
		rp, err := rf.resolve(p)
		if err != nil {
			return nil, err
		}
		st, err := rf.inspect(rp, true)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		if st.exists && !st.isRegular() {
			return nil, fmt.Errorf("read %s: not a regular file", p)
		}
		db.orig[p] = st.data
		db.meta[p] = st
		f := parseDB(p, st.data, st.exists)
		switch p {
		case passwdPath:
			db.passwd = f
		case groupPath:
			db.group = f
		case shadowPath:
			db.shadow = f
		case gshadowPath:
			db.gshadow = f
		}
	}
	return db, nil
}

// defaultDBMode is the mode of a database file flotilla has to create.
func defaultDBMode(p string) fs.FileMode {
	if p == shadowPath || p == gshadowPath {
		return 0o600
	}
	return 0o644
}
