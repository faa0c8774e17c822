package machineconfig

import (
	"strings"
	"testing"
)

// want is one expected report entry: its position and a fragment of its
// message.
type want struct {
	sev       Severity
	line, col int
	path      string
	msg       string
}

func TestValidateFindings(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []want
	}{
		{"unknown key with suggestion", "#cloud-config\nhostnme: x\n", []want{{SeverityWarning, 2, 1, "", `unknown key "hostnme" is ignored; did you mean "hostname"?`}}},
		{"misplaced coreos key", "#cloud-config\nunits:\n  - name: a.service\n", []want{{SeverityWarning, 2, 1, "", `belongs under "coreos:"`}}},
		{"ubuntu cloud-init key", "#cloud-config\nruncmd: [ls]\n", []want{{SeverityWarning, 2, 1, "", "Ubuntu's cloud-init"}}},
		{"nested unknown key", "#cloud-config\ncoreos:\n  units:\n    - name: a.service\n      comand: start\n", []want{{SeverityWarning, 5, 7, "", `did you mean "command"?`}}},
		{"map where a list is expected", "#cloud-config\nusers:\n  name: a\n", []want{{SeverityError, 3, 3, "", "users: want a list, got a mapping"}}},
		{"list where a string is expected", "#cloud-config\nhostname: [a, b]\n", []want{{SeverityError, 2, 11, "", "hostname: want a string, got a list"}}},
		{"bad octal permissions", "#cloud-config\nwrite_files:\n  - path: /etc/a\n    permissions: 0999\n", []want{{SeverityError, 4, 18, "", `"0999" is not an octal mode`}}},
		{"bad encoding", "#cloud-config\nwrite_files:\n  - path: /etc/a\n    encoding: rot13\n    content: x\n", []want{{SeverityError, 4, 15, "", `unknown encoding "rot13"`}}},
		{"bad base64", "#cloud-config\nwrite_files:\n  - path: /etc/a\n    encoding: b64\n    content: '!!!'\n", []want{{SeverityError, 5, 14, "", "bad base64"}}},
		{"bad gzip", "#cloud-config\nwrite_files:\n  - path: /etc/a\n    encoding: gzip+base64\n    content: aGVsbG8K\n", []want{{SeverityError, 5, 14, "", "bad gzip data"}}},
		{"bad owner", "#cloud-config\nwrite_files:\n  - path: /etc/a\n    owner: a:b:c\n", []want{{SeverityError, 4, 12, "", `want "user" or "user:group"`}}},
		{"relative path", "#cloud-config\nwrite_files:\n  - path: etc/a\n", []want{{SeverityError, 3, 5, "", "path must be absolute"}}},
		{"path under /usr", "#cloud-config\nwrite_files:\n  - path: /usr/bin/x\n", []want{{SeverityError, 3, 5, "", "/usr is the read-only OS image"}}},
		{"bad unit name", "#cloud-config\ncoreos:\n  units:\n    - name: foo\n", []want{{SeverityError, 4, 7, "", "unit type suffix"}}},
		{"bad unit command", "#cloud-config\ncoreos:\n  units:\n    - name: a.service\n      command: launch\n", []want{{SeverityError, 5, 16, "", `"launch" is not a unit command`}}},
		{"enable without install", "#cloud-config\ncoreos:\n  units:\n    - name: a.service\n      enable: true\n      content: |\n        [Service]\n        ExecStart=/bin/true\n", []want{{SeverityWarning, 4, 7, "", "no [Install] section"}}},
		{"bad reboot strategy", "#cloud-config\ncoreos:\n  update:\n    reboot_strategy: sometimes\n", []want{{SeverityError, 4, 22, "", `reboot_strategy "sometimes"`}}},
		{"window without length", "#cloud-config\ncoreos:\n  locksmith:\n    window_start: Thu 04:00\n", []want{{SeverityError, 4, 5, "", "set both window_start and window_length"}}},
		{"bad window", "#cloud-config\ncoreos:\n  locksmith:\n    window_start: Someday 25:00\n    window_length: soon\n", []want{
			{SeverityError, 4, 19, "", "window_start"}, {SeverityError, 5, 20, "", "window_length"}}},
		{"deprecated etcd2", "#cloud-config\ncoreos:\n  etcd2:\n    name: a\n", []want{{SeverityWarning, 3, 3, "", "flotilla server embeds etcd"}}},
		{"deprecated fleet", "#cloud-config\ncoreos:\n  fleet:\n    metadata: a=b\n", []want{{SeverityWarning, 3, 3, "", "flotilla unit"}}},
		{"github import", "#cloud-config\nusers:\n  - name: a\n    coreos_ssh_import_github: a\n", []want{{SeverityWarning, 4, 5, "", "never fetches keys"}}},
		{"plain text password", "#cloud-config\nusers:\n  - name: a\n    passwd: hunter2\n", []want{{SeverityWarning, 4, 13, "", "crypt(3) hash"}}},
		{"manage_etc_hosts value", "#cloud-config\nmanage_etc_hosts: true\n", []want{{SeverityError, 2, 19, "", `the only value is "localhost"`}}},
		{"bad hostname", "#cloud-config\nhostname: -bad-\n", []want{{SeverityError, 2, 11, "", "not a valid host name"}}},
		{"duplicate key", "#cloud-config\nhostname: a\nhostname: b\n", []want{{SeverityError, 0, 0, "", ""}}},
		{"yaml syntax error", "#cloud-config\nfoo: [\n", []want{{SeverityError, 2, 0, "", "YAML syntax"}}},
		{"script", "#!/bin/sh\necho hi\n", []want{{SeverityError, 1, 1, "", "scripts (#!) are not supported"}}},
		{"unrecognized", "hello: world\n", []want{{SeverityError, 1, 1, "", "unrecognized format"}}},
		{"ignition 2.x", `{"ignition": {"version": "2.2.0"}}`, []want{{SeverityError, 0, 0, "$.ignition.version", "Ignition spec 2.2.0 (Container Linux era) is not supported"}}},
		{"ignition 1", `{"ignitionVersion": 1}`, []want{{SeverityError, 0, 0, "$.ignition.version", "Ignition spec 1"}}},
		{"unknown ignition version", `{"ignition": {"version": "3.9.0"}}`, []want{{SeverityError, 0, 0, "$.ignition.version", "3.9.0 is not supported"}}},
		{"missing ignition version", `{"storage": {}}`, []want{{SeverityError, 0, 0, "$.ignition.version", "missing"}}},
		{"ignition path error keeps path and position", `{"ignition": {"version": "3.4.0"}, "storage": {"files": [{"path": "relative"}]}}`,
			[]want{{SeverityError, 1, 67, "$.storage.files.0.path", "path not absolute"}}},
		{"ignition unused key", `{"ignition": {"version": "3.4.0"}, "storage": {"filez": []}}`, []want{{SeverityWarning, 1, 48, "$.storage.filez", "unused key filez"}}},
		{"ignition syntax error", "{\"ignition\": {\"version\": \"3.4.0\"},\n \"storage\": {\"files\": [{\"path\": \"/a\"  \"mode\": 1}]}}", []want{{SeverityError, 2, 40, "", "invalid character"}}},
		{"ignition wrong type", "{\"ignition\": {\"version\": \"3.4.0\"},\n \"storage\": {\"files\": [{\"path\": \"/a\", \"mode\": \"x\"}]}}", []want{{SeverityError, 2, 50, "", "cannot unmarshal string"}}},
		{"ignition inline hash mismatch", `{"ignition": {"version": "3.4.0"}, "storage": {"files": [{"path": "/a", "contents": {"source": "data:,x", "verification": {"hash": "sha256-0000000000000000000000000000000000000000000000000000000000000000"}}}]}}`,
			[]want{{SeverityError, 0, 0, "$.storage.files.0.contents.verification.hash", "hash mismatch"}}},
		{"ignition s3 source", `{"ignition": {"version": "3.4.0"}, "storage": {"files": [{"path": "/a", "contents": {"source": "s3://bucket/x"}}]}}`,
			[]want{{SeverityError, 0, 0, "$.storage.files.0.contents.source", `scheme "s3" is not supported`}}},
		{"ignition merge", `{"ignition": {"version": "3.4.0", "config": {"merge": [{"source": "https://example.com/a.ign"}]}}}`,
			[]want{{SeverityError, 0, 0, "$.ignition.config", "merge and replace are not supported"}}},
		{"ignition enabled without install", `{"ignition": {"version": "3.4.0"}, "systemd": {"units": [{"name": "a.service", "enabled": true, "contents": "[Service]\nExecStart=/bin/true\n"}]}}`,
			[]want{{SeverityWarning, 0, 0, "$.systemd.units.0.contents", "no install section"}}},
		{"ignition /usr path", `{"ignition": {"version": "3.4.0"}, "storage": {"files": [{"path": "/usr/bin/x"}]}}`,
			[]want{{SeverityError, 0, 0, "$.storage.files.0", "/usr is the read-only OS image"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, rep := Validate([]byte(tt.doc))
			if len(rep.Entries) != len(tt.want) {
				t.Fatalf("got %d entries, want %d:\n%s", len(rep.Entries), len(tt.want), entriesString(rep))
			}
			for i, w := range tt.want {
				e := rep.Entries[i]
				if e.Severity != w.sev || !strings.Contains(e.Message, w.msg) || e.Path != w.path ||
					(w.line != 0 && e.Line != w.line) || (w.col != 0 && e.Column != w.col) {
					t.Errorf("entry %d = %s\nwant %s at %d:%d %s: …%s…", i, e, w.sev, w.line, w.col, w.path, w.msg)
				}
			}
			if got, wantErr := rep.HasErrors(), hasError(tt.want); got != wantErr {
				t.Errorf("HasErrors() = %t, want %t", got, wantErr)
			}
		})
	}
}

func entriesString(r Report) string {
	var b strings.Builder
	for _, e := range r.Entries {
		b.WriteString(e.String() + "\n")
	}
	return b.String()
}

func hasError(ws []want) bool {
	for _, w := range ws {
		if w.sev == SeverityError {
			return true
		}
	}
	return false
}

func TestValidateCloudConfigModel(t *testing.T) {
	doc := `#cloud-config
hostname: node1
users:
  - name: core
    ssh_authorized_keys: [key-a]
  - name: ops
    system: yes
    groups: [docker]
ssh_authorized_keys:
  - key-b
write_files:
  - path: /etc/x
    permissions: 0600
    owner: "1000:docker"
    content: hi
coreos:
  units:
    - name: a.service
      mask: false
      enable: false
      drop-ins:
        - name: x.conf
          content: "[Service]\n"
`
	cfg := mustValidate(t, []byte(doc))
	if cfg.Hostname != "node1" || len(cfg.Users) != 2 {
		t.Fatalf("cfg = %+v", cfg)
	}
	if got := cfg.Users[0].SSHAuthorizedKeys; len(got) != 2 || got[0] != "key-a" || got[1] != "key-b" {
		t.Errorf("core keys = %q, want the top-level key merged into core's entry", got)
	}
	if !cfg.Users[1].System {
		t.Errorf("system: yes not read as true")
	}
	f := cfg.Files[0]
	if f.Mode != 0o600 || f.Owner.UID == nil || *f.Owner.UID != 1000 || f.Owner.Group != "docker" || string(f.Contents.Inline) != "hi" {
		t.Errorf("file = %+v", f)
	}
	u := cfg.Units[0]
	// coreos-cloudinit semantics: enable: false and mask: false do nothing.
	if u.Mask != nil || u.Enable != nil || len(u.DropIns) != 1 || u.DropIns[0].Name != "x.conf" {
		t.Errorf("unit = %+v", u)
	}
}

func TestValidateIgnitionAllVersions(t *testing.T) {
	for _, v := range []string{"3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0", "3.5.0", "3.6.0-experimental"} {
		doc := `{"ignition": {"version": "` + v + `"}, "storage": {"files": [{"path": "/etc/a", "mode": 384, "contents": {"source": "data:,hi"}}]}}`
		cfg, rep := Validate([]byte(doc))
		if rep.HasErrors() || cfg.Format != FormatIgnition || cfg.Version != v {
			t.Errorf("%s: format %q version %q, %v", v, cfg.Format, cfg.Version, rep.Entries)
			continue
		}
		if len(cfg.Files) != 1 || cfg.Files[0].Mode != 0o600 || string(cfg.Files[0].Contents.Inline) != "hi" {
			t.Errorf("%s: files = %+v", v, cfg.Files)
		}
	}
}

func TestValidateGzipDocument(t *testing.T) {
	doc := gzipBytes(t, []byte("#cloud-config\nhostname: zipped\n"))
	cfg, rep := Validate(doc)
	if rep.HasErrors() || cfg.Hostname != "zipped" {
		t.Fatalf("cfg %+v, report %v", cfg, rep.Entries)
	}
}

func TestEditDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{{"", "", 0}, {"abc", "", 3}, {"hostnme", "hostname", 1}, {"kitten", "sitting", 3}, {"units", "users", 3}} {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
	if got := suggest("write_file", ccTopKeys); got != "write_files" {
		t.Errorf("suggest = %q", got)
	}
	if got := suggest("zzzzzzzz", ccTopKeys); got != "" {
		t.Errorf("suggest for nonsense = %q, want none", got)
	}
}
