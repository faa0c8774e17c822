package machineconfig

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
)

// rootFS confines every file operation to a root directory. Paths are
// absolute as seen from inside the root ("/etc/hostname"). Symlinks in
// the parent components are resolved as if the process were chrooted
// (an absolute target starts over at the root, ".." stops at the root),
// so a root whose /etc links to /outside gets <root>/outside written, never
// the host's /outside. The operations themselves go through os.Root, which
// refuses to leave the root even if a link is swapped in concurrently.
type rootFS struct {
	r   *os.Root
	dir string
	// canChown is set when running as root; otherwise ownership is
	// reported, not changed.
	canChown bool
}

func openRootFS(dir string) (*rootFS, error) {
	if dir == "" {
		return nil, errors.New("root directory is empty")
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open root: %w", err)
	}
	return &rootFS{r: r, dir: dir, canChown: os.Geteuid() == 0}, nil
}

func (rf *rootFS) Close() error { return rf.r.Close() }

// maxLinkHops matches the kernel's limit on symlinks followed in one
// lookup.
const maxLinkHops = 40

// rel turns an in-root absolute path into the name os.Root wants.
func rel(p string) string {
	p = strings.TrimLeft(path.Clean("/"+p), "/")
	if p == "" {
		return "."
	}
	return p
}

// resolve returns p with every symlink in its parent directories replaced
// by its target, interpreted inside the root. The last component is not
// followed: writes replace a link there instead of writing through it.
func (rf *rootFS) resolve(p string) (string, error) {
	todo := splitPath(p)
	var done []string
	hops := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(done) > 0 {
				done = done[:len(done)-1]
			}
			continue
		}
		if len(todo) == 0 {
			done = append(done, c)
			break
		}
		cand := "/" + path.Join(append(done, c)...)
		fi, err := rf.r.Lstat(rel(cand))
		if errors.Is(err, fs.ErrNotExist) {
			// Nothing below a missing directory can be a link yet.
			done = append(done, c)
			continue
		}
		if err != nil {
			return "", fmt.Errorf("resolve %s: %w", p, err)
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			done = append(done, c)
			continue
		}
		if hops++; hops > maxLinkHops {
			return "", fmt.Errorf("resolve %s: %w", p, syscall.ELOOP)
		}
		target, err := rf.r.Readlink(rel(cand))
		if err != nil {
			return "", fmt.Errorf("resolve %s: %w", p, err)
		}
		if path.IsAbs(target) {
			done = nil
		}
		todo = append(splitPath(target), todo...)
	}
	return "/" + path.Join(done...), nil
}

func splitPath(p string) []string {
	return strings.Split(strings.Trim(p, "/"), "/")
}

// nodeState is what is at a path now.
type nodeState struct {
	exists   bool
	mode     fs.FileMode // full mode, type bits included
	uid, gid int
	data     []byte // regular files only
	target   string // symlinks only
	info     fs.FileInfo
}

func (s nodeState) isRegular() bool { return s.exists && s.mode.IsRegular() }
func (s nodeState) isDir() bool     { return s.exists && s.mode.IsDir() }
func (s nodeState) isSymlink() bool { return s.exists && s.mode&fs.ModeSymlink != 0 }

// inspect reads the node at a resolved path; readData also reads a regular
// file's contents.
func (rf *rootFS) inspect(p string, readData bool) (nodeState, error) {
	fi, err := rf.r.Lstat(rel(p))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nodeState{}, nil
	}
	if err != nil {
		return nodeState{}, err
	}
	st := nodeState{exists: true, mode: fi.Mode(), info: fi}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.uid, st.gid = int(sys.Uid), int(sys.Gid)
	}
	switch {
	case fi.Mode().IsRegular() && readData:
		if st.data, err = rf.r.ReadFile(rel(p)); err != nil {
			return nodeState{}, err
		}
	case fi.Mode()&fs.ModeSymlink != 0:
		if st.target, err = rf.r.Readlink(rel(p)); err != nil {
			return nodeState{}, err
		}
	}
	return st, nil
}

// exists reports whether something is at the in-root path p.
func (rf *rootFS) exists(p string) bool {
	rp, err := rf.resolve(p)
	if err != nil {
		return false
	}
	st, err := rf.inspect(rp, false)
	return err == nil && st.exists
}

// readFile reads an in-root file through resolve; a missing file is
// (nil, false, nil).
func (rf *rootFS) readFile(p string) ([]byte, bool, error) {
	rp, err := rf.resolve(p)
	if err != nil {
		return nil, false, err
	}
	b, err := rf.r.ReadFile(rel(rp))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return b, true, nil
}

// mkdirParents creates the parent directories of a resolved path (0755,
// owned by whoever runs apply, as Ignition does with root).
func (rf *rootFS) mkdirParents(p string) error {
	dir := path.Dir(p)
	if dir == "/" {
		return nil
	}
	return rf.r.MkdirAll(rel(dir), 0o755)
}

func tempName(p string) (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return path.Join(path.Dir(p), "."+path.Base(p)+".flotilla-"+hex.EncodeToString(b[:])), nil
}

// writeFile replaces the file at the resolved path p atomically: the data
// goes to a temporary file in the same directory, gets its owner and mode,
// is synced, and is renamed over p. A reader sees the old or the new file,
// never a partial one.
func (rf *rootFS) writeFile(p string, data []byte, mode fs.FileMode, uid, gid int, chown bool) (err error) {
	if err := rf.mkdirParents(p); err != nil {
		return err
	}
	tmp, err := tempName(p)
	if err != nil {
		return err
	}
	f, err := rf.r.OpenFile(rel(tmp), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			rf.r.Remove(rel(tmp))
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if chown {
		// Before chmod: chown clears setuid and setgid bits.
		if err = f.Chown(uid, gid); err != nil {
			return err
		}
	}
	if err = f.Chmod(permBits(mode)); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return rf.r.Rename(rel(tmp), rel(p))
}

// symlink makes p a symlink to target, replacing a file or link there
// atomically.
func (rf *rootFS) symlink(p, target string, uid, gid int, chown bool) error {
	if err := rf.mkdirParents(p); err != nil {
		return err
	}
	tmp, err := tempName(p)
	if err != nil {
		return err
	}
	if err := rf.r.Symlink(target, rel(tmp)); err != nil {
		return err
	}
	if chown {
		if err := rf.r.Lchown(rel(tmp), uid, gid); err != nil {
			rf.r.Remove(rel(tmp))
			return err
		}
	}
	if err := rf.r.Rename(rel(tmp), rel(p)); err != nil {
		rf.r.Remove(rel(tmp))
		return err
	}
	return nil
}

// hardlink makes p a hard link to the resolved in-root path target.
func (rf *rootFS) hardlink(p, target string) error {
	if err := rf.mkdirParents(p); err != nil {
		return err
	}
	tmp, err := tempName(p)
	if err != nil {
		return err
	}
	if err := rf.r.Link(rel(target), rel(tmp)); err != nil {
		return err
	}
	if err := rf.r.Rename(rel(tmp), rel(p)); err != nil {
		rf.r.Remove(rel(tmp))
		return err
	}
	return nil
}

func (rf *rootFS) mkdir(p string, mode fs.FileMode, uid, gid int, chown bool) error {
	if err := rf.mkdirParents(p); err != nil {
		return err
	}
	if err := rf.r.Mkdir(rel(p), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return rf.setMeta(p, mode, uid, gid, chown)
}

// setMeta fixes owner and mode of an existing file or directory (not a
// symlink: callers have checked the type).
func (rf *rootFS) setMeta(p string, mode fs.FileMode, uid, gid int, chown bool) error {
	if chown {
		if err := rf.r.Lchown(rel(p), uid, gid); err != nil {
			return err
		}
	}
	return rf.r.Chmod(rel(p), permBits(mode))
}

func (rf *rootFS) removeAll(p string) error { return rf.r.RemoveAll(rel(p)) }
func (rf *rootFS) remove(p string) error    { return rf.r.Remove(rel(p)) }
