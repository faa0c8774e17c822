package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/flotilla/flotilla/internal/machineconfig"
)

// runConfig runs "flotilla config ARGS" in-process and returns the exit
// code Run would give (0, 1, or 2 for usage errors). It builds the command
// with newConfigCmd under a minimal root carrying the global -o flag, so
// the test does not depend on how root.go wires it.
func runConfig(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	g := &globals{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb, output: outputTable}
	root := &cobra.Command{Use: "flotilla", SilenceUsage: true, SilenceErrors: true}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().StringVarP(&g.output, "output", "o", outputTable, "output format")
	root.AddCommand(newConfigCmd(g))
	root.SetArgs(append([]string{"config"}, args...))
	root.SetOut(&out)
	root.SetErr(&errb)
	err = root.ExecuteContext(context.Background())
	var ue usageError
	switch {
	case err == nil:
		code = 0
	case errors.As(err, &ue):
		code = 2
	default:
		code = 1
	}
	return code, out.String(), errb.String(), err
}

// configTestRoot is a root with the account databases apply needs.
func configTestRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/bash\ncore:x:500:500::/home/core:/bin/bash\n",
		"etc/group":  "root:x:0:\ncore:x:500:\ndocker:x:233:\n",
	} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func writeConfigDoc(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "user-data")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const configCLIDoc = `#cloud-config
hostname: cli-node
write_files:
  - path: /etc/app.conf
    permissions: '0600'
    content: |
      a=1
      b=2
coreos:
  update:
    group: beta
`

func TestConfigValidate(t *testing.T) {
	good := writeConfigDoc(t, configCLIDoc+"hostnam: typo\n")
	code, out, _, err := runConfig(t, "", "validate", good)
	if code != 0 {
		t.Fatalf("exit %d: %v\n%s", code, err, out)
	}
	want := good + `:12:1: warning: unknown key "hostnam" is ignored; did you mean "hostname"?` + "\n" + good + ": valid cloud-config (1 warning)\n"
	if out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}

	bad := writeConfigDoc(t, "#cloud-config\nwrite_files:\n  - path: /etc/a\n    encoding: b64\n    content: '%%'\n")
	code, out, _, err = runConfig(t, "", "validate", bad)
	if code != 1 || err == nil || !strings.Contains(err.Error(), "is not valid: 1 error, 0 warnings") {
		t.Errorf("bad document: exit %d, err %v", code, err)
	}
	if !strings.HasPrefix(out, bad+":5:14: error: write_files[0].content: bad base64") {
		t.Errorf("stdout: %s", out)
	}

	ign := `{"ignition": {"version": "3.4.0"}, "storage": {"files": [{"path": "/a", "contents": {"source": "s3://b/k"}}]}}`
	code, out, _, _ = runConfig(t, ign, "validate", "-")
	if code != 1 || !strings.Contains(out, `<stdin>: $.storage.files.0.contents.source: error: source scheme "s3"`) {
		t.Errorf("ignition from stdin: exit %d\n%s", code, out)
	}

	code, out, _, _ = runConfig(t, "", "validate", bad, "-o", "json")
	var v struct {
		Valid   bool `json:"valid"`
		Entries []struct {
			Severity string `json:"severity"`
			Line     int    `json:"line"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || code != 1 || v.Valid || len(v.Entries) != 1 || v.Entries[0].Line != 5 {
		t.Errorf("json: exit %d, %v, %+v\n%s", code, err, v, out)
	}

	if code, _, _, err := runConfig(t, "", "validate", filepath.Join(t.TempDir(), "missing")); code != 1 || !strings.Contains(err.Error(), "read configuration:") {
		t.Errorf("missing file: exit %d, %v", code, err)
	}
	if code, _, _, _ := runConfig(t, "", "validate"); code != 2 {
		t.Errorf("no FILE: exit %d, want 2", code)
	}
	if code, _, _, _ := runConfig(t, "", "validate", good, "-o", "yaml"); code != 2 {
		t.Errorf("-o yaml: exit %d, want 2", code)
	}
}

func TestConfigApplyAndDiff(t *testing.T) {
	root := configTestRoot(t)
	doc := writeConfigDoc(t, configCLIDoc)

	code, out, _, err := runConfig(t, "", "diff", doc, "--root", root)
	if code != 1 || !errors.Is(err, errConfigDrift) {
		t.Fatalf("diff of a fresh root: exit %d, %v", code, err)
	}
	for _, want := range []string{"+ file /etc/app.conf: missing\n", "    +a=1\n", "+ hostname /etc/hostname: missing\n", "3 differences\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("diff output lacks %q:\n%s", want, out)
		}
	}

	code, out, _, err = runConfig(t, "", "apply", doc, "--root", root, "--dry-run")
	if code != 0 || !strings.HasSuffix(out, "3 changes (dry run, nothing written)\n") {
		t.Fatalf("dry run: exit %d, %v\n%s", code, err, out)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/hostname")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dry run wrote /etc/hostname")
	}

	code, out, _, err = runConfig(t, "", "apply", doc, "--root", root)
	want := "create file /etc/app.conf\ncreate hostname /etc/hostname\ncreate update.conf /etc/flotilla/update.conf\n3 changes\n"
	if code != 0 || out != want {
		t.Fatalf("apply: exit %d, %v\n%s\nwant:\n%s", code, err, out, want)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/flotilla/update.conf")); string(b) != "GROUP=beta\n" {
		t.Errorf("update.conf = %q", b)
	}
	if code, out, _, _ = runConfig(t, "", "apply", doc, "--root", root); code != 0 || out != "0 changes\n" {
		t.Errorf("second apply: exit %d\n%s", code, out)
	}
	if code, out, _, _ = runConfig(t, "", "diff", doc, "--root", root); code != 0 || !strings.Contains(out, "matches") {
		t.Errorf("diff after apply: exit %d\n%s", code, out)
	}

	// Drift: a hand edit and a chmod.
	conf := filepath.Join(root, "etc/app.conf")
	if err := os.WriteFile(conf, []byte("a=1\nb=3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(conf, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _, _ = runConfig(t, "", "diff", doc, "--root", root)
	wantDiff := "~ file /etc/app.conf: content, mode (mode 0644 → 0600)\n" +
		"    --- /etc/app.conf (root)\n    +++ /etc/app.conf (config)\n    @@ -1,2 +1,2 @@\n     a=1\n    -b=3\n    +b=2\n1 difference\n"
	if code != 1 || out != wantDiff {
		t.Errorf("diff after edit: exit %d\n%s\nwant:\n%s", code, out, wantDiff)
	}
	code, out, _, _ = runConfig(t, "", "diff", doc, "--root", root, "-o", "json")
	var d struct {
		Drift []struct {
			Kind string   `json:"kind"`
			What []string `json:"what"`
			Diff string   `json:"diff"`
		} `json:"drift"`
	}
	if err := json.Unmarshal([]byte(out), &d); err != nil || code != 1 || len(d.Drift) != 1 || d.Drift[0].Kind != "file" || !strings.Contains(d.Drift[0].Diff, "+b=2") {
		t.Errorf("diff json: exit %d, %v, %+v", code, err, d)
	}

	code, out, _, _ = runConfig(t, "", "apply", doc, "--root", root, "-o", "json")
	var res struct {
		Changes []struct {
			Kind    string   `json:"kind"`
			Action  string   `json:"action"`
			Details []string `json:"details"`
		} `json:"changes"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 0 || len(res.Changes) != 1 || res.Changes[0].Action != "update" {
		t.Errorf("apply json: exit %d, %v, %+v\n%s", code, err, res, out)
	}
}

func TestConfigApplyInvalid(t *testing.T) {
	root := configTestRoot(t)
	code, _, stderr, err := runConfig(t, "#cloud-config\nhostname: x\nusers: {name: a}\n", "apply", "-", "--root", root)
	if code != 1 || !strings.Contains(err.Error(), "<stdin> is not valid (1 error, 0 warnings); nothing applied") {
		t.Fatalf("exit %d, %v", code, err)
	}
	if !strings.Contains(stderr, "<stdin>:3:8: error: users: want a list, got a mapping") {
		t.Errorf("stderr: %s", stderr)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/hostname")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("invalid document wrote /etc/hostname")
	}
	if code, _, _, _ := runConfig(t, "", "apply", "x", "--root", ""); code != 2 {
		t.Errorf("empty --root: exit %d, want 2", code)
	}
	if code, _, _, _ := runConfig(t, "", "frobnicate"); code != 2 {
		t.Errorf("unknown subcommand: exit %d, want 2", code)
	}
}

func TestFormatConfigEntry(t *testing.T) {
	for _, tt := range []struct {
		line, col int
		path      string
		want      string
	}{
		{3, 7, "", "f:3:7: error: boom"},
		{3, 0, "", "f:3: error: boom"},
		{1, 67, "$.a.b", "f:1:67: error: $.a.b: boom"},
		{0, 0, "$.a.b", "f: $.a.b: error: boom"},
		{0, 0, "", "f: error: boom"},
	} {
		e := struct{ l, c int }{tt.line, tt.col}
		got := formatConfigEntry("f", configEntryAt(e.l, e.c, tt.path))
		if got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}

func configEntryAt(line, col int, path string) machineconfig.Entry {
	return machineconfig.Entry{Severity: machineconfig.SeverityError, Line: line, Column: col, Path: path, Message: "boom"}
}
