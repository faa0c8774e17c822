package machineconfig

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func applyDoc(t *testing.T, root, doc string, opts ApplyOptions) (Result, error) {
	t.Helper()
	opts.Root = root
	res, _, err := ApplyDocument(context.Background(), []byte(doc), opts)
	return res, err
}

func mustApply(t *testing.T, root, doc string, opts ApplyOptions) Result {
	t.Helper()
	res, err := applyDoc(t, root, doc, opts)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return res
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestApplyInvalidWritesNothing(t *testing.T) {
	srv := startContentServer(t)
	tests := []struct {
		name       string
		doc        string
		validation bool // rejected by Validate rather than during apply
		is         error
	}{
		{name: "bad base64", validation: true, doc: "#cloud-config\nhostname: a\nwrite_files:\n  - path: /etc/a\n    content: hi\n  - path: /etc/b\n    encoding: b64\n    content: '%%%'\n"},
		{name: "yaml syntax error", validation: true, doc: "#cloud-config\nhostname: a\nwrite_files: [\n"},
		{name: "unknown ignition version", validation: true, doc: `{"ignition": {"version": "3.7.0"}, "storage": {"files": [{"path": "/etc/a", "contents": {"source": "data:,x"}}]}}`},
		{name: "wrong hash for a remote file", is: ErrHashMismatch, doc: `{"ignition": {"version": "3.4.0"},
			"storage": {"files": [
				{"path": "/etc/first", "contents": {"source": "data:,written%20first%3F"}},
				{"path": "/etc/remote", "contents": {"source": "` + srv.URL + `/tampered", "verification": {"hash": "sha512-7f042ca9bedf5c926b5c50d2e5c3cb81d9c3db5ea98c11ecc9570e440b00af6b24f34c61699c442a4bd0bda1a791876a4f3271ea0e8f5cda6be9c1fbaf871251"}}}]},
			"passwd": {"users": [{"name": "early"}]}}`},
		{name: "remote file missing", doc: `{"ignition": {"version": "3.4.0"}, "storage": {"files": [{"path": "/etc/first", "contents": {"source": "data:,x"}}, {"path": "/etc/remote", "contents": {"source": "` + srv.URL + `/nope"}}]}}`},
		{name: "unknown owner", doc: "#cloud-config\nhostname: a\nwrite_files:\n  - path: /etc/a\n    content: hi\n  - path: /etc/b\n    owner: nobody-here\n    content: hi\n"},
		{name: "hard link to nothing", doc: `{"ignition": {"version": "3.4.0"}, "storage": {"files": [{"path": "/etc/first", "contents": {"source": "data:,x"}}], "links": [{"path": "/etc/hard", "target": "/etc/none", "hard": true}]}}`},
		{name: "missing supplementary group", doc: "#cloud-config\nhostname: a\nusers:\n  - name: x\n    groups: [no-such-group]\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := seedRoot(t)
			before := dumpTree(t, root)
			res, err := applyDoc(t, root, tt.doc, ApplyOptions{HTTPClient: srv.Client()})
			if err == nil {
				t.Fatalf("apply succeeded: %+v", res.Changes)
			}
			var ve *ValidationError
			if errors.As(err, &ve) != tt.validation {
				t.Errorf("error %v: validation error %t, want %t", err, !tt.validation, tt.validation)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v does not wrap %v", err, tt.is)
			}
			if !strings.HasPrefix(err.Error(), "apply: ") {
				t.Errorf("error %q lacks the operation prefix", err)
			}
			if after := dumpTree(t, root); after != before {
				t.Errorf("root changed:\n%s", cmp.Diff(before, after))
			}
			if len(res.Changes) != 0 {
				t.Errorf("changes reported: %v", res.Changes)
			}
		})
	}
}

func TestApplyInvalidModel(t *testing.T) {
	root := seedRoot(t)
	cfg := Config{Files: []File{{Path: "etc/relative", Contents: &Content{Inline: []byte("x")}, Mode: 0o644}}}
	_, err := Apply(context.Background(), cfg, ApplyOptions{Root: root})
	var ve *ValidationError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "path must be absolute") {
		t.Fatalf("err = %v, want a validation error about the path", err)
	}
	if _, err := Apply(context.Background(), Config{}, ApplyOptions{}); err == nil {
		t.Fatal("apply without a root succeeded")
	}
}

// TestApplySymlinkEscape checks that links inside the root are resolved as
// if chrooted: nothing outside the root is written or followed.
func TestApplySymlinkEscape(t *testing.T) {
	root := seedRoot(t)
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "motd"), []byte("host file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// An absolute link: /etc → /outside means <root>/outside.
	if err := os.Rename(filepath.Join(root, "etc"), filepath.Join(root, "real-etc")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/real-etc", filepath.Join(root, "etc")); err != nil {
		t.Fatal(err)
	}
	// A relative link climbing out of the root (on the host it reaches
	// outside); inside the root ".." stops at the root.
	relOut, err := filepath.Rel(filepath.Join(root), outside)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(relOut, filepath.Join(root, "var")); err != nil {
		t.Fatal(err)
	}
	// An absolute link to the host's directory: followed as <root>/<outside>.
	if err := os.Symlink(outside, filepath.Join(root, "opt")); err != nil {
		t.Fatal(err)
	}
	// A link at the final component pointing out: replaced, not written
	// through.
	if err := os.Symlink(filepath.Join(outside, "motd"), filepath.Join(root, "real-etc", "motd")); err != nil {
		t.Fatal(err)
	}
	doc := `#cloud-config
hostname: jailed
write_files:
  - path: /var/escape.txt
    content: relative
  - path: /opt/escape.txt
    content: absolute
  - path: /etc/motd
    content: replaced
users:
  - name: jailbird
`
	mustApply(t, root, doc, ApplyOptions{})

	entries, err := os.ReadDir(outside)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || readFile(t, filepath.Join(outside, "motd")) != "host file\n" {
		t.Errorf("outside directory was touched: %v", entries)
	}
	for p, want := range map[string]string{
		"real-etc/hostname": "jailed\n",
		filepath.Join(relOutInRoot(relOut), "escape.txt"): "relative",
		filepath.Join(outside[1:], "escape.txt"):          "absolute",
		"real-etc/motd":                                   "replaced",
	} {
		if got := readFile(t, filepath.Join(root, p)); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	if fi, err := os.Lstat(filepath.Join(root, "real-etc/motd")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("/etc/motd is not a regular file now: %v", err)
	}
	if !strings.Contains(readFile(t, filepath.Join(root, "real-etc/passwd")), "\njailbird:x:1000:") {
		t.Errorf("user not added to the root's passwd")
	}
	// Idempotent through the links as well.
	if res := mustApply(t, root, doc, ApplyOptions{}); len(res.Changes) != 0 {
		t.Errorf("second apply: %v", res.Changes)
	}
}

// relOutInRoot is where a relative link like "../../x/y" lands inside the
// root: every ".." stops at the root.
func relOutInRoot(rel string) string {
	var out []string
	for _, c := range strings.Split(filepath.ToSlash(rel), "/") {
		if c != ".." && c != "" {
			out = append(out, c)
		}
	}
	return filepath.Join(out...)
}

func TestResolveLoop(t *testing.T) {
	root := t.TempDir()
	if err := os.Symlink("/b", filepath.Join(root, "a")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/a", filepath.Join(root, "b")); err != nil {
		t.Fatal(err)
	}
	rf, err := openRootFS(root)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	if _, err := rf.resolve("/a/x"); !errors.Is(err, syscall.ELOOP) {
		t.Fatalf("resolve = %v, want ELOOP", err)
	}
}

func TestApplyOverwriteConflict(t *testing.T) {
	doc := `{"ignition": {"version": "3.4.0"}, "storage": {"files": [
		{"path": "/etc/new", "contents": {"source": "data:,new"}},
		{"path": "/etc/existing", "contents": {"source": "data:,from%20config"}}]}}`
	root := seedRoot(t)
	existing := filepath.Join(root, "etc/existing")
	if err := os.WriteFile(existing, []byte("local edit\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := dumpTree(t, root)
	_, err := applyDoc(t, root, doc, ApplyOptions{FirstBoot: true})
	if err == nil || !strings.Contains(err.Error(), "overwrite is false") || !strings.Contains(err.Error(), "nothing written") {
		t.Fatalf("first-boot apply: err = %v", err)
	}
	if after := dumpTree(t, root); after != before {
		t.Errorf("first-boot conflict wrote:\n%s", cmp.Diff(before, after))
	}

	res := mustApply(t, root, doc, ApplyOptions{})
	if readFile(t, existing) != "local edit\n" || readFile(t, filepath.Join(root, "etc/new")) != "new" {
		t.Errorf("conflicting file changed or new file missing")
	}
	if len(res.Changes) != 1 || res.Changes[0].Path != "/etc/new" {
		t.Errorf("changes = %v", res.Changes)
	}
	if !strings.Contains(strings.Join(res.Warnings, "\n"), "/etc/existing exists with other contents and overwrite is false; left alone") {
		t.Errorf("warnings = %q", res.Warnings)
	}
}

func TestApplyExistingUser(t *testing.T) {
	root := seedRoot(t)
	doc := `#cloud-config
users:
  - name: core
    passwd: $6$abc$def
    groups: [sudo]
    shell: /bin/zsh
`
	res := mustApply(t, root, doc, ApplyOptions{})
	want := []Change{{Kind: "user", Name: "core", Action: "update", Details: []string{"shell", "password", "groups"}}}
	if diff := cmp.Diff(want, res.Changes); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
	passwd := readFile(t, filepath.Join(root, "etc/passwd"))
	if passwd != "root:x:0:0:root:/root:/bin/bash\ncore:x:500:500:CoreOS Admin:/home/core:/bin/zsh\n" {
		t.Errorf("passwd:\n%s", passwd)
	}
	if got := readFile(t, filepath.Join(root, "etc/shadow")); got != "root:*:::::::\ncore:$6$abc$def:::::::\n" {
		t.Errorf("shadow:\n%s", got)
	}
	if got := readFile(t, filepath.Join(root, "etc/group")); !strings.Contains(got, "\nsudo:x:150:core\n") || !strings.HasPrefix(got, "root:x:0:\nwheel:x:10:root,core\n") {
		t.Errorf("group:\n%s", got)
	}
	if fi, _ := os.Stat(filepath.Join(root, "etc/shadow")); fi.Mode().Perm() != 0o640 {
		t.Errorf("shadow mode %v, want the original 0640 kept", fi.Mode())
	}
	if res := mustApply(t, root, doc, ApplyOptions{}); len(res.Changes) != 0 {
		t.Errorf("second apply: %v", res.Changes)
	}
}

func TestApplyIDAllocation(t *testing.T) {
	root := seedRoot(t)
	appendFile(t, filepath.Join(root, "etc/passwd"), "taken:x:1000:1000::/home/taken:/bin/sh\n")
	appendFile(t, filepath.Join(root, "etc/group"), "taken:x:1000:\nclash:x:1001:\n")
	doc := "#cloud-config\nusers:\n  - name: newbie\n  - name: daemon1\n    system: true\n"
	mustApply(t, root, doc, ApplyOptions{})
	passwd := readFile(t, filepath.Join(root, "etc/passwd"))
	// uid 1001 is free in passwd, but gid 1001 is not: the user group
	// takes the next free gid.
	for _, want := range []string{"newbie:x:1001:1002::/home/newbie:/bin/bash\n", "daemon1:x:999:999::/home/daemon1:/bin/bash\n"} {
		if !strings.Contains(passwd, want) {
			t.Errorf("passwd lacks %q:\n%s", want, passwd)
		}
	}
	if group := readFile(t, filepath.Join(root, "etc/group")); !strings.Contains(group, "newbie:x:1002:\n") {
		t.Errorf("group:\n%s", group)
	}
}

func TestApplyCreatesMissingDatabases(t *testing.T) {
	root := t.TempDir()
	mustApply(t, root, "#cloud-config\nusers:\n  - name: solo\n", ApplyOptions{})
	for name, want := range map[string]string{
		"etc/passwd":  "solo:x:1000:1000::/home/solo:/bin/bash\n",
		"etc/group":   "solo:x:1000:\n",
		"etc/shadow":  "solo:*:::::::\n",
		"etc/gshadow": "solo:!::\n",
	} {
		if got := readFile(t, filepath.Join(root, name)); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if fi, _ := os.Stat(filepath.Join(root, "etc/shadow")); fi.Mode().Perm() != 0o600 {
		t.Errorf("new shadow mode %v", fi.Mode())
	}
}

func appendFile(t *testing.T, p, s string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func TestApplyDryRun(t *testing.T) {
	root := seedRoot(t)
	before := dumpTree(t, root)
	sd := &recordingSystemd{}
	res := mustApply(t, root, "#cloud-config\nhostname: dry\ncoreos:\n  units:\n    - name: a.service\n      command: restart\n      content: \"[Service]\\nExecStart=/bin/true\\n\"\n", ApplyOptions{DryRun: true, Systemd: sd})
	if len(res.Changes) != 2 || !res.DaemonReload || len(res.Commands) != 1 {
		t.Errorf("dry run result = %+v", res)
	}
	if len(sd.calls) != 0 {
		t.Errorf("dry run called systemd: %v", sd.calls)
	}
	if after := dumpTree(t, root); after != before {
		t.Errorf("dry run wrote:\n%s", cmp.Diff(before, after))
	}
}

func TestApplyModeChangeDoesNotRewrite(t *testing.T) {
	root := seedRoot(t)
	doc := "#cloud-config\nwrite_files:\n  - path: /etc/app.conf\n    permissions: '0640'\n    content: a=b\n"
	mustApply(t, root, doc, ApplyOptions{})
	p := filepath.Join(root, "etc/app.conf")
	if err := os.Chmod(p, 0o666); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(p)
	res := mustApply(t, root, doc, ApplyOptions{})
	want := []Change{{Kind: "file", Path: "/etc/app.conf", Action: "update", Details: []string{"mode 0666 → 0640"}}}
	if diff := cmp.Diff(want, res.Changes); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
	after, _ := os.Stat(p)
	if !os.SameFile(before, after) {
		t.Errorf("file was rewritten for a mode change")
	}
	if after.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", after.Mode())
	}
}

func TestApplyUnitCommands(t *testing.T) {
	root := seedRoot(t)
	doc := func(env string) string {
		return `#cloud-config
coreos:
  units:
    - name: web.service
      command: restart
      content: |
        [Service]
        ExecStart=/opt/bin/web
      drop-ins:
        - name: 10-env.conf
          content: |
            [Service]
            Environment=` + env + `
    - name: cache.service
      command: start
      content: |
        [Service]
        ExecStart=/opt/bin/cache
`
	}
	sd := &recordingSystemd{}
	mustApply(t, root, doc("A=1"), ApplyOptions{Systemd: sd})
	if want := []string{"daemon-reload", "restart web.service", "start cache.service"}; !cmp.Equal(sd.calls, want) {
		t.Errorf("first apply calls = %q, want %q", sd.calls, want)
	}
	sd.calls = nil
	mustApply(t, root, doc("A=1"), ApplyOptions{Systemd: sd})
	if want := []string{"start cache.service"}; !cmp.Equal(sd.calls, want) {
		t.Errorf("unchanged apply calls = %q, want %q", sd.calls, want)
	}
	sd.calls = nil
	res := mustApply(t, root, doc("A=2"), ApplyOptions{Systemd: sd})
	if want := []string{"daemon-reload", "restart web.service", "start cache.service"}; !cmp.Equal(sd.calls, want) {
		t.Errorf("drop-in change calls = %q, want %q", sd.calls, want)
	}
	if len(res.Changes) != 1 || res.Changes[0].Kind != "dropin" {
		t.Errorf("changes = %v", res.Changes)
	}
}

func TestApplyUnmaskAndDisable(t *testing.T) {
	root := seedRoot(t)
	on := `{"ignition": {"version": "3.4.0"}, "systemd": {"units": [
		{"name": "update-engine.service", "mask": true},
		{"name": "docker.socket", "enabled": true}]}}`
	mustApply(t, root, on, ApplyOptions{})
	maskLink := filepath.Join(root, "etc/systemd/system/update-engine.service")
	wantsLink := filepath.Join(root, "etc/systemd/system/sockets.target.wants/docker.socket")
	for _, p := range []string{maskLink, wantsLink} {
		if _, err := os.Lstat(p); err != nil {
			t.Fatalf("after enable/mask: %v", err)
		}
	}
	off := `{"ignition": {"version": "3.4.0"}, "systemd": {"units": [
		{"name": "update-engine.service", "mask": false},
		{"name": "docker.socket", "enabled": false}]}}`
	res := mustApply(t, root, off, ApplyOptions{})
	if len(res.Changes) != 2 || res.Changes[0].Action != "remove" || res.Changes[1].Action != "remove" {
		t.Errorf("changes = %v", res.Changes)
	}
	for _, p := range []string{maskLink, wantsLink} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there: %v", p, err)
		}
	}
	if res := mustApply(t, root, off, ApplyOptions{}); len(res.Changes) != 0 {
		t.Errorf("second apply: %v", res.Changes)
	}
}

func TestApplyMergesUpdateConfAndKeys(t *testing.T) {
	root := seedRoot(t)
	conf := filepath.Join(root, "etc/flotilla/update.conf")
	if err := os.MkdirAll(filepath.Dir(conf), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte("# local settings\nGROUP=alpha\nMACHINE_ALIAS=rack4-u12\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(root, "home/core/.ssh/authorized_keys")
	if err := os.MkdirAll(filepath.Dir(keys), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keys, []byte("ssh-ed25519 AAAA hand-added\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := func(key string) string {
		return "#cloud-config\nssh_authorized_keys: [" + key + "]\ncoreos:\n  update:\n    group: stable\n    reboot_strategy: reboot\n"
	}
	mustApply(t, root, doc("ssh-ed25519 BBBB one"), ApplyOptions{})
	mustApply(t, root, doc("ssh-ed25519 CCCC two"), ApplyOptions{})
	if got, want := readFile(t, conf), "# local settings\nGROUP=stable\nMACHINE_ALIAS=rack4-u12\nREBOOT_STRATEGY=reboot\n"; got != want {
		t.Errorf("update.conf = %q, want %q", got, want)
	}
	if got, want := readFile(t, keys), "ssh-ed25519 AAAA hand-added\n"+keysBegin+"\nssh-ed25519 CCCC two\n"+keysEnd+"\n"; got != want {
		t.Errorf("authorized_keys = %q, want %q", got, want)
	}
}

// TestDecideWithoutChown covers a non-root apply: owners that differ are
// warned about, not changed, so re-applies still converge.
func TestDecideWithoutChown(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	rf, err := openRootFS(root)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	rf.canChown = false
	fi, _ := os.Stat(filepath.Join(root, "f"))
	uid := int(fi.Sys().(*syscall.Stat_t).Uid) + 1
	for _, set := range []bool{true, false} {
		d, err := rf.decide(op{path: "/f", typ: typeFile, data: []byte("x"), mode: 0o644, uid: uid, ownerSet: set, overwrite: true})
		if err != nil {
			t.Fatal(err)
		}
		if d.act != actNone {
			t.Errorf("ownerSet=%t: act %v, want none", set, d.act)
		}
		if (d.warning != "") != set {
			t.Errorf("ownerSet=%t: warning %q", set, d.warning)
		}
	}
	rf.canChown = true
	d, _ := rf.decide(op{path: "/f", typ: typeFile, data: []byte("x"), mode: 0o644, uid: uid, overwrite: true})
	if d.act != actUpdate || !cmp.Equal(d.what, []string{"owner"}) {
		t.Errorf("as root: %v %v, want an owner update", d.act, d.what)
	}
}

func TestMergeKeyValues(t *testing.T) {
	got := string(mergeKeyValues([]byte("A=1\n#c\nB = 2\n"), [][2]string{{"B", "3"}, {"C", "4"}}))
	if want := "A=1\n#c\nB=3\nC=4\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := string(mergeKeyValues(nil, [][2]string{{"X", "y"}})); got != "X=y\n" {
		t.Errorf("empty file: %q", got)
	}
}

func TestReplaceBlock(t *testing.T) {
	first := replaceBlock([]byte("keep\nno newline"), "# B", "# E", []string{"one"})
	if want := "keep\nno newline\n# B\none\n# E\n"; string(first) != want {
		t.Errorf("append: %q", first)
	}
	second := replaceBlock(append(first, "after\n"...), "# B", "# E", []string{"two", "three"})
	if want := "keep\nno newline\n# B\ntwo\nthree\n# E\nafter\n"; string(second) != want {
		t.Errorf("replace: %q", second)
	}
}
