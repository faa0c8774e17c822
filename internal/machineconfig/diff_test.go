package machineconfig

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const diffDoc = `#cloud-config
hostname: drifty
users:
  - name: ops
write_files:
  - path: /etc/app.conf
    permissions: '0640'
    content: |
      listen=0.0.0.0
      port=8080
      workers=4
      log=info
coreos:
  units:
    - name: app.service
      enable: true
      content: |
        [Service]
        ExecStart=/opt/bin/app

        [Install]
        WantedBy=multi-user.target
`

func TestDiffAfterDrift(t *testing.T) {
	root := seedRoot(t)
	cfg := mustValidate(t, []byte(diffDoc))

	drift, err := Diff(cfg, root)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, d := range drift {
		kinds = append(kinds, d.Kind+" "+strings.Join(d.What, ","))
	}
	want := []string{"user missing", "home missing", "file missing", "hostname missing", "unit missing", "enable missing"}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Fatalf("drift of a fresh root (-want +got):\n%s", diff)
	}
	if !strings.Contains(drift[2].Diff, "+++ /etc/app.conf (config)\n@@ -0,0 +1,4 @@\n+listen=0.0.0.0\n") {
		t.Errorf("diff of a missing file:\n%s", drift[2].Diff)
	}

	mustApply(t, root, diffDoc, ApplyOptions{})
	if drift, _ := Diff(cfg, root); len(drift) != 0 {
		t.Fatalf("drift right after apply: %+v", drift)
	}

	// Hand edits: a changed line, a mode change, a removed unit and its
	// enable link.
	conf := filepath.Join(root, "etc/app.conf")
	if err := os.WriteFile(conf, []byte("listen=0.0.0.0\nport=9090\nworkers=4\nlog=info\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(conf, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, "etc/systemd/system/app.service")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, "etc/systemd/system/multi-user.target.wants/app.service")); err != nil {
		t.Fatal(err)
	}
	drift, err = Diff(cfg, root)
	if err != nil {
		t.Fatal(err)
	}
	wantDrift := []Drift{
		{Kind: "file", Path: "/etc/app.conf", What: []string{"content", "mode"}, Details: []string{"mode 0644 → 0640"},
			Diff: "--- /etc/app.conf (root)\n+++ /etc/app.conf (config)\n@@ -1,4 +1,4 @@\n listen=0.0.0.0\n-port=9090\n+port=8080\n workers=4\n log=info\n"},
		{Kind: "unit", Path: "/etc/systemd/system/app.service", Name: "app.service", What: []string{"missing"},
			Diff: "--- /etc/systemd/system/app.service (root)\n+++ /etc/systemd/system/app.service (config)\n@@ -0,0 +1,5 @@\n+[Service]\n+ExecStart=/opt/bin/app\n+\n+[Install]\n+WantedBy=multi-user.target\n"},
		{Kind: "enable", Path: "/etc/systemd/system/multi-user.target.wants/app.service", Name: "app.service", What: []string{"missing"}},
	}
	if diff := cmp.Diff(wantDrift, drift); diff != "" {
		t.Errorf("drift (-want +got):\n%s", diff)
	}
	if _, err := json.Marshal(drift); err != nil {
		t.Errorf("drift is not JSON-serializable: %v", err)
	}
	// Apply fixes exactly what Diff reported.
	res := mustApply(t, root, diffDoc, ApplyOptions{})
	if len(res.Changes) != len(drift) {
		t.Errorf("apply made %d changes for %d drift entries: %v", len(res.Changes), len(drift), res.Changes)
	}
	if drift, _ := Diff(cfg, root); len(drift) != 0 {
		t.Errorf("drift after re-apply: %+v", drift)
	}
}

func TestDiffAccountsAndRemote(t *testing.T) {
	root := seedRoot(t)
	doc := `{"ignition": {"version": "3.4.0"},
		"passwd": {"users": [{"name": "core", "shell": "/bin/zsh"}]},
		"storage": {"files": [{"path": "/etc/remote", "overwrite": true, "contents": {"source": "https://example.invalid/x",
			"verification": {"hash": "sha256-f7e3b2882e87ad58ff217a418bc0d2029a6174085358ab339a6ec22e81a9d473"}}}]}}`
	cfg := mustValidate(t, []byte(doc))
	if err := os.WriteFile(filepath.Join(root, "etc/remote"), []byte(remotePayload), 0o644); err != nil {
		t.Fatal(err)
	}
	drift, err := Diff(cfg, root)
	if err != nil {
		t.Fatal(err)
	}
	// The remote file matches its hash, so only the shell differs; Diff
	// never fetched the (unreachable) URL.
	want := []Drift{{Kind: "user", Path: "/etc/passwd", Name: "core", What: []string{"shell"}}}
	if diff := cmp.Diff(want, drift); diff != "" {
		t.Errorf("drift (-want +got):\n%s", diff)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/remote"), []byte("edited\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	drift, _ = Diff(cfg, root)
	if len(drift) != 2 || drift[1].Path != "/etc/remote" || !cmp.Equal(drift[1].What, []string{"content"}) || drift[1].Diff != "" {
		t.Errorf("drift of an edited remote file: %+v", drift)
	}
}

func TestUnifiedDiff(t *testing.T) {
	tests := []struct {
		name       string
		have, want string
		out        string
	}{
		{"one changed line", "a\nb\nc\n", "a\nB\nc\n", "@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"},
		{"far apart changes make two hunks", "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n", "x\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\ny\n",
			"@@ -1,4 +1,4 @@\n-1\n+x\n 2\n 3\n 4\n@@ -9,4 +9,4 @@\n 9\n 10\n 11\n-12\n+y\n"},
		{"missing final newline", "a\nb", "a\nb\n", "@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+b\n"},
		{"deletion only", "a\nb\nc\n", "a\nc\n", "@@ -1,3 +1,2 @@\n a\n-b\n c\n"},
		{"from empty", "", "x\n", "@@ -0,0 +1 @@\n+x\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := unifiedDiff("f", []byte(tt.have), []byte(tt.want))
			want := "--- f (root)\n+++ f (config)\n" + tt.out
			if got != want {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
	if got := unifiedDiff("bin", []byte{0, 1}, []byte{2}); !strings.HasPrefix(got, "Binary files") {
		t.Errorf("binary: %q", got)
	}
}
