package unitfile

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestParseName(t *testing.T) {
	tests := []struct {
		in       string
		want     Name
		template bool
		instance bool
		err      bool
	}{
		{in: "web.service", want: Name{Full: "web.service", Prefix: "web", Suffix: "service"}},
		{in: "web@.service", want: Name{Full: "web@.service", Prefix: "web", Suffix: "service", Templated: true}, template: true},
		{in: "web@1.service", want: Name{Full: "web@1.service", Prefix: "web", Instance: "1", Suffix: "service", Templated: true}, instance: true},
		{in: "a.b-c_d:e.socket", want: Name{Full: "a.b-c_d:e.socket", Prefix: "a.b-c_d:e", Suffix: "socket"}},
		{in: "", err: true},
		{in: "web", err: true},
		{in: "web.", err: true},
		{in: ".service", err: true},
		{in: "web.exe", err: true},
		{in: "we b.service", err: true},
		{in: "web/1.service", err: true},
		{in: "@1.service", err: true},
		{in: "a@b@c.service", err: true},
		{in: "dev@x.mount", err: true}, // mounts cannot be templates
		{in: strings.Repeat("a", 250) + ".service", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseName(tt.in)
			if tt.err {
				if !errors.Is(err, ErrInvalidName) {
					t.Fatalf("ParseName(%q) error = %v, want ErrInvalidName", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseName(%q) (-want +got):\n%s", tt.in, diff)
			}
			if got.IsTemplate() != tt.template || got.IsInstance() != tt.instance {
				t.Errorf("template=%v instance=%v, want %v %v", got.IsTemplate(), got.IsInstance(), tt.template, tt.instance)
			}
		})
	}
	n, _ := ParseName("web@1.service")
	if got := n.Template(); got != "web@.service" {
		t.Errorf("Template() = %q", got)
	}
}

func TestExpand(t *testing.T) {
	n, err := ParseName("web@8080.service")
	if err != nil {
		t.Fatal(err)
	}
	got := Expand("%n|%N|%p|%i|%%|%H|100%", n)
	want := "web@8080.service|web@8080|web|8080|%|%H|100%"
	if got != want {
		t.Errorf("Expand = %q, want %q", got, want)
	}
}

func TestParseOptions(t *testing.T) {
	tests := []struct {
		name, unit string
		body       string
		want       Options
		warnings   int
	}{
		{
			name: "all options", unit: "web@1.service",
			body: `[Unit]
Description=web %i
[Service]
ExecStart=/bin/true
[X-Fleet]
MachineID=abc123
MachineOf=%p-db@%i.service
MachineMetadata="region=us-east" "region=us-west" disk=ssd
MachineMetadata=role=web
Conflicts=%p@*.service
MoveBeforeReboot=yes
`,
			want: Options{
				MachineID:        "abc123",
				MachineOf:        []string{"web-db@1.service"},
				MachineMetadata:  map[string][]string{"region": {"us-east", "us-west"}, "disk": {"ssd"}, "role": {"web"}},
				Conflicts:        []string{"web@*.service"},
				MoveBeforeReboot: true,
			},
		},
		{
			name: "global", unit: "log.service",
			body: "[Service]\nExecStart=/bin/true\n[X-Fleet]\nGlobal=true\nMachineMetadata=role=edge\nConflicts=other.service\n",
			want: Options{Global: true, MachineMetadata: map[string][]string{"role": {"edge"}}, Conflicts: []string{"other.service"}},
		},
		{
			name: "replaces", unit: "new.service",
			body: "[Service]\nExecStart=/bin/true\n[X-Fleet]\nReplaces=old*.service\n",
			want: Options{Replaces: []string{"old*.service"}},
		},
		{
			name: "deprecated and unknown keys warn", unit: "a.service",
			body: "[Service]\nExecStart=/bin/true\n[X-Fleet]\nX-ConditionMachineID=m1\nX-Conflicts=b.service\nFrobnicate=1\n",
			want: Options{MachineID: "m1", Conflicts: []string{"b.service"}}, warnings: 3,
		},
		{
			name: "empty value resets list", unit: "a.service",
			body: "[X-Fleet]\nConflicts=b.service\nConflicts=\nConflicts=c.service\n",
			want: Options{Conflicts: []string{"c.service"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse(tt.unit, tt.body)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, f.Options, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
			if len(f.Warnings) != tt.warnings {
				t.Errorf("warnings = %q, want %d", f.Warnings, tt.warnings)
			}
			if f.Hash != Hash(tt.body) || len(f.Hash) != 64 {
				t.Errorf("hash = %q", f.Hash)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ name, unit, body string }{
		{"empty", "a.service", "  \n"},
		{"bad name", "a.exe", "[Service]\nExecStart=/bin/true\n"},
		{"not ini", "a.service", "[Service\nExecStart=/bin/true\n"},
		{"bad bool", "a.service", "[X-Fleet]\nGlobal=perhaps\n"},
		{"bad metadata", "a.service", "[X-Fleet]\nMachineMetadata=region\n"},
		{"unterminated quote", "a.service", "[X-Fleet]\nMachineMetadata=\"region=x\n"},
		{"bad glob", "a.service", "[X-Fleet]\nConflicts=[a\n"},
		{"global+machineid", "a.service", "[X-Fleet]\nGlobal=true\nMachineID=x\n"},
		{"global+machineof", "a.service", "[X-Fleet]\nGlobal=true\nMachineOf=b.service\n"},
		{"global+replaces", "a.service", "[X-Fleet]\nGlobal=true\nReplaces=b.service\n"},
		{"replaces+conflicts", "a.service", "[X-Fleet]\nReplaces=b.service\nConflicts=c.service\n"},
		{"machineof self", "a.service", "[X-Fleet]\nMachineOf=%n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.unit, tt.body)
			if !errors.Is(err, ErrInvalidUnit) && !errors.Is(err, ErrInvalidName) {
				t.Fatalf("Parse error = %v, want ErrInvalidUnit", err)
			}
		})
	}
}

func TestValuesAndSplitCommand(t *testing.T) {
	f, err := Parse("a.service", "[Unit]\nDescription=first\nDescription=second\n[Service]\nExecStartPre=/bin/a\nExecStartPre=/bin/b\n")
	if err != nil {
		t.Fatal(err)
	}
	if d := f.Description(); d != "second" {
		t.Errorf("Description = %q", d)
	}
	if got := f.Values("Service", "ExecStartPre"); !cmp.Equal(got, []string{"/bin/a", "/bin/b"}) {
		t.Errorf("Values = %q", got)
	}
	argv, err := SplitCommand(`/bin/sh -c 'echo "hi there"; exit 0' a\ b ""`)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/bin/sh", "-c", `echo "hi there"; exit 0`, "a b", ""}
	if !cmp.Equal(argv, want) {
		t.Errorf("SplitCommand = %q, want %q", argv, want)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("a.service", "[Service]\nExecStart=/bin/true\n[X-Fleet]\nMachineMetadata=\"a=b\" c=d\n")
	f.Add("web@1.service", "[X-Fleet]\nConflicts=%p@*.service\nGlobal=1\n")
	f.Fuzz(func(t *testing.T, name, body string) {
		u, err := Parse(name, body)
		if err == nil && u.Hash != Hash(body) {
			t.Fatal("hash mismatch")
		}
	})
}
