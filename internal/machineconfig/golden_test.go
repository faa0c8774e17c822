package machineconfig

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// TestGolden applies every document in testdata/golden to a seeded root
// and compares the report, the changes, the systemd calls and the
// resulting tree with <name>.golden. A second apply must change nothing.
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/golden/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	more, _ := filepath.Glob("testdata/golden/*.json")
	inputs = append(inputs, more...)
	if len(inputs) < 8 {
		t.Fatalf("found only %d golden inputs", len(inputs))
	}
	srv := startContentServer(t)
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), filepath.Ext(in))
		t.Run(name, func(t *testing.T) {
			doc := loadDoc(t, in, srv.URL)
			cfg, rep := Validate(doc)
			if rep.HasErrors() {
				t.Fatalf("validation errors: %v", rep.Errors())
			}
			root := seedRoot(t)
			sd := &recordingSystemd{}
			res, err := Apply(context.Background(), cfg, ApplyOptions{Root: root, Systemd: sd, HTTPClient: srv.Client()})
			if err != nil {
				t.Fatalf("apply: %v", err)
			}
			var b strings.Builder
			fmt.Fprintf(&b, "# format %s %s\n", cfg.Format, cfg.Version)
			b.WriteString("# report\n")
			for _, e := range rep.Entries {
				b.WriteString(e.String() + "\n")
			}
			b.WriteString("# changes\n")
			for _, c := range res.Changes {
				b.WriteString(c.String() + "\n")
			}
			b.WriteString("# warnings\n")
			for _, w := range res.Warnings {
				b.WriteString(w + "\n")
			}
			b.WriteString("# systemd\n")
			for _, c := range sd.calls {
				b.WriteString(c + "\n")
			}
			b.WriteString("# tree\n")
			b.WriteString(dumpTree(t, root))
			got := b.String()

			golden := filepath.Join("testdata/golden", name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			wantB, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			want := string(wantB)
			if os.Geteuid() != 0 {
				// Owners are only set, and dumped, when running as root.
				want = regexp.MustCompile(`(?m)^([fd] \d{4}|l) \d+:\d+ `).ReplaceAllString(want, "$1 ")
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s mismatch (-want +got):\n%s", golden, diff)
			}

			// Idempotence: the same document again changes nothing and
			// runs only the unconditional unit commands.
			before := dumpTree(t, root)
			sd2 := &recordingSystemd{}
			res2, err := Apply(context.Background(), cfg, ApplyOptions{Root: root, Systemd: sd2, HTTPClient: srv.Client()})
			if err != nil {
				t.Fatalf("second apply: %v", err)
			}
			if len(res2.Changes) != 0 {
				t.Errorf("second apply: %d changes, want 0: %v", len(res2.Changes), res2.Changes)
			}
			if res2.DaemonReload {
				t.Errorf("second apply asked for a daemon-reload")
			}
			for _, c := range sd2.calls {
				if !strings.HasPrefix(c, "start ") && !strings.HasPrefix(c, "stop ") {
					t.Errorf("second apply ran %q", c)
				}
			}
			if after := dumpTree(t, root); after != before {
				t.Errorf("second apply changed the tree:\n%s", cmp.Diff(before, after))
			}
			drift, err := Diff(cfg, root)
			if err != nil {
				t.Fatal(err)
			}
			if len(drift) != 0 {
				t.Errorf("drift right after apply: %+v", drift)
			}
		})
	}
}
