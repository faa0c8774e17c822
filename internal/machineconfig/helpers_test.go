package machineconfig

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"unicode/utf8"
)

// seedFiles is the minimal Container Linux-like root every apply test
// starts from: account databases, core's home, and vendor units in /usr.
var seedFiles = map[string]string{
	"etc/passwd":                            "root:x:0:0:root:/root:/bin/bash\ncore:x:500:500:CoreOS Admin:/home/core:/bin/bash\n",
	"etc/group":                             "root:x:0:\nwheel:x:10:root,core\nusers:x:100:\nsudo:x:150:\nsystemd-journal:x:190:core\ndocker:x:233:core\ncore:x:500:\n",
	"etc/shadow":                            "root:*:::::::\ncore:*:::::::\n",
	"etc/gshadow":                           "root:::\nwheel:::root,core\nusers:::\nsudo:::\nsystemd-journal:::core\ndocker:::core\ncore:!::\n",
	"usr/lib/systemd/system/docker.service": "[Unit]\nDescription=Docker Application Container Engine\n\n[Service]\nExecStart=/usr/bin/dockerd\n",
	"usr/lib/systemd/system/docker.socket":  "[Unit]\nDescription=Docker Socket\n\n[Socket]\nListenStream=/var/run/docker.sock\n\n[Install]\nWantedBy=sockets.target\n",
	"usr/lib/systemd/system/update-engine.service": "[Service]\nExecStart=/usr/sbin/update_engine\n",
	"usr/lib/systemd/system/getty@.service":        "[Service]\nExecStart=-/sbin/agetty %I\n\n[Install]\nWantedBy=getty.target\n",
}

// seedRoot returns a fresh root directory with seedFiles in it.
func seedRoot(t testing.TB) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range seedFiles {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := fs.FileMode(0o644)
		if strings.Contains(name, "shadow") {
			mode = 0o640
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(root, "home"), 0o755); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(root, "home/core")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(home, 500, 500); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// dumpTree describes every node under root, sorted by path: type, mode,
// owner (when running as root, where owners are meaningful), symlink
// targets, shared inodes, and the contents of text files (binary ones by
// hash). Leftover temporary files would show up here too.
func dumpTree(t testing.TB, root string) string {
	t.Helper()
	var b strings.Builder
	inodes := map[uint64]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		owner := ""
		if os.Geteuid() == 0 {
			owner = fmt.Sprintf(" %d:%d", st.Uid, st.Gid)
		}
		name := "/" + filepath.ToSlash(rel)
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			fmt.Fprintf(&b, "l%s %s -> %s\n", owner, name, target)
		case fi.IsDir():
			fmt.Fprintf(&b, "d %s%s %s\n", modeString(fi.Mode()), owner, name)
		default:
			fmt.Fprintf(&b, "f %s%s %s", modeString(fi.Mode()), owner, name)
			if first, ok := inodes[st.Ino]; ok && st.Nlink > 1 {
				fmt.Fprintf(&b, " (hard link to %s)\n", first)
				return nil
			}
			inodes[st.Ino] = name
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if !utf8.Valid(data) || strings.ContainsRune(string(data), 0) || len(data) > 4096 {
				sum := sha256.Sum256(data)
				fmt.Fprintf(&b, " sha256:%s\n", hex.EncodeToString(sum[:]))
				return nil
			}
			b.WriteString("\n")
			for _, l := range strings.SplitAfter(string(data), "\n") {
				if l == "" {
					continue
				}
				b.WriteString("  | " + strings.TrimSuffix(l, "\n"))
				if !strings.HasSuffix(l, "\n") {
					b.WriteString("⏎(no newline)")
				}
				b.WriteString("\n")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// recordingSystemd is the fake at the systemd boundary: it records calls.
type recordingSystemd struct {
	calls []string
}

func (r *recordingSystemd) DaemonReload(context.Context) error {
	r.calls = append(r.calls, "daemon-reload")
	return nil
}

func (r *recordingSystemd) RunUnitCommand(_ context.Context, unit, command string) error {
	r.calls = append(r.calls, command+" "+unit)
	return nil
}

// Remote contents the Ignition tests fetch from a loopback server.
const (
	remotePayload  = "remote payload fetched over HTTP\n"
	remoteGzPath   = "testdata/remote.gz"
	privatePayload = "private payload\n"
	privateToken   = "s3cret"
)

// startContentServer serves the remote files of the golden Ignition
// configs.
func startContentServer(t testing.TB) *httptest.Server {
	t.Helper()
	gz, err := os.ReadFile(remoteGzPath)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/payload", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, remotePayload)
	})
	mux.HandleFunc("/payload.gz", func(w http.ResponseWriter, r *http.Request) {
		w.Write(gz)
	})
	mux.HandleFunc("/private", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Flotilla-Token") != privateToken {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		fmt.Fprint(w, privatePayload)
	})
	mux.HandleFunc("/tampered", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "not what the hash says\n")
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// loadDoc reads a test document, filling in the content server's URL.
func loadDoc(t testing.TB, name, server string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(strings.ReplaceAll(string(b), "{{SERVER}}", server))
}

// mustValidate parses doc and fails the test on validation errors.
func mustValidate(t testing.TB, doc []byte) Config {
	t.Helper()
	cfg, rep := Validate(doc)
	if rep.HasErrors() {
		t.Fatalf("validation errors: %v", rep.Errors())
	}
	return cfg
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
