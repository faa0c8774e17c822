package machineconfig

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseCloudConfig feeds arbitrary documents through Validate: it must
// never panic, positions must be sane, and the model must serialise.
func FuzzParseCloudConfig(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/golden/*.yaml")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"#cloud-config\n",
		"#cloud-config\nusers: {a: b}\n",
		"#cloud-config\nwrite_files:\n  - path: /a\n    encoding: gz+b64\n    content: !!binary AAAA\n",
		"#cloud-config\na: &x [*x]\n",
		"#cloud-config\ncoreos:\n  units:\n    - name: a@.service\n      enable: yes\n",
		"#cloud-config\n? [a]\n: b\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		cfg, rep := Validate(doc)
		for _, e := range rep.Entries {
			if e.Line < 0 || e.Column < 0 || e.Message == "" {
				t.Fatalf("bad entry %+v", e)
			}
			if e.Severity != SeverityError && e.Severity != SeverityWarning {
				t.Fatalf("bad severity %+v", e)
			}
		}
		if _, err := json.Marshal(cfg); err != nil {
			t.Fatalf("config does not serialise: %v", err)
		}
	})
}
