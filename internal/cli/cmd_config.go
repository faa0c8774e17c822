package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/flotilla/flotilla/internal/machineconfig"
)

// Commands for declarative machine configuration: check a cloud-config or
// Ignition document (config validate), make a root directory match it
// (config apply) and show how a root differs from it (config diff).

// errConfigDrift is what config diff returns when the root differs from
// the document, so the command exits 1 like diff(1).
var errConfigDrift = errors.New("root differs from the configuration")

// configStdinName is how a document read from "-" is named in messages.
const configStdinName = "<stdin>"

func newConfigCmd(g *globals) *cobra.Command {
	return parentCmd("config", "Validate, apply and diff machine configuration (cloud-config, Ignition)",
		newConfigValidateCmd(g), newConfigApplyCmd(g), newConfigDiffCmd(g),
		newConfigSetGroupCmd(g), newConfigGetGroupCmd(g), newConfigHistoryCmd(g),
		newConfigDiffVersionsCmd(g), newConfigStatusCmd(g))
}

func newConfigValidateCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE",
		Short: "Check a cloud-config or Ignition document without applying it",
		Long: `Check a machine configuration document and print every finding, one a line:

  FILE:LINE:COL: error|warning: message           (cloud-config, JSON syntax)
  FILE:LINE:COL: error|warning: $.path: message   (Ignition, position known)
  FILE: $.path: error|warning: message            (Ignition, path only)

The format is detected from the content: a first line "#cloud-config" is a
CoreOS cloud-config, JSON starting with "{" an Ignition config (spec 3.0.0
to 3.5.0). Unknown keys and deprecated sections are warnings; wrong types,
bad encodings, bad hashes and unsupported versions are errors. Exits 1 when
there are errors. FILE "-" reads standard input.`,
		Example: `  flotilla config validate user-data.yaml
  flotilla config validate config.ign -o json
  butane < node.bu | flotilla config validate -`,
		Args: exactArgs("FILE"),
		RunE: func(_ *cobra.Command, args []string) error {
			return runConfigValidate(g, args[0])
		},
	}
}

func runConfigValidate(g *globals, file string) error {
	if err := g.checkOutput(); err != nil {
		return err
	}
	doc, name, err := readConfigDoc(g, file)
	if err != nil {
		return err
	}
	_, rep := machineconfig.Validate(doc)
	errs, warns := len(rep.Errors()), len(rep.Warnings())
	if g.jsonOutput() {
		if err := printJSON(g.stdout, struct {
			File    string                `json:"file"`
			Format  machineconfig.Format  `json:"format,omitempty"`
			Valid   bool                  `json:"valid"`
			Entries []machineconfig.Entry `json:"entries"`
		}{name, rep.Format, errs == 0, cfgNonNil(rep.Entries)}); err != nil {
			return err
		}
	} else {
		printConfigEntries(g.stdout, name, rep.Entries)
	}
	if errs > 0 {
		return fmt.Errorf("%s is not valid: %s", name, cfgCountFindings(errs, warns))
	}
	if !g.jsonOutput() {
		format := string(rep.Format)
		if format == "" {
			format = "document"
		}
		fmt.Fprintf(g.stdout, "%s: valid %s (%s)\n", name, format, cfgPlural(warns, "warning"))
	}
	return nil
}

type configApplyOptions struct {
	root      string
	dryRun    bool
	firstBoot bool
}

func newConfigApplyCmd(g *globals) *cobra.Command {
	o := configApplyOptions{root: "/"}
	cmd := &cobra.Command{
		Use:   "apply FILE [--root DIR] [--dry-run] [--first-boot]",
		Short: "Make a root directory match a cloud-config or Ignition document",
		Long: `Apply a machine configuration to a root directory: files, directories,
links, users and groups, SSH keys, systemd units (drop-ins, enable, mask),
the host name and update.conf settings.

The document is validated and every remote file is fetched and verified
before anything is written; a document with errors changes nothing. Each
file is written atomically and only when its content, mode or owner
differ, so applying the same document twice reports "0 changes" the second
time. Paths are resolved inside --root as if chrooted. Partitioning, RAID,
filesystems, LUKS and kernel arguments are first-boot only and are reported,
not applied.

With --root / (the default) flotilla also tells systemd: one daemon-reload
when units changed, then the units' commands (cloud-config "command:";
Ignition's enabled units are started). Other roots are offline: no systemd
calls. --first-boot uses Ignition's strict rule that an existing file in the
way of an entry with overwrite=false is an error; without it such entries
are left alone with a warning. FILE "-" reads standard input.`,
		Example: `  flotilla config apply user-data.yaml
  flotilla config apply node.ign --root /mnt/sysroot --first-boot
  flotilla config apply user-data.yaml --dry-run -o json`,
		Args: exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runConfigApply(cmd.Context(), g, args[0], o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.root, "root", o.root, "root directory to apply to")
	f.BoolVar(&o.dryRun, "dry-run", false, "print what would change, write nothing")
	f.BoolVar(&o.firstBoot, "first-boot", false, "Ignition's first-boot rules: conflicts with overwrite=false entries are errors")
	return cmd
}

func runConfigApply(ctx context.Context, g *globals, file string, o configApplyOptions) error {
	if err := g.checkOutput(); err != nil {
		return err
	}
	if o.root == "" {
		return usagef("--root must not be empty")
	}
	if ctx == nil {
		ctx = context.Background()
	}
	doc, name, err := readConfigDoc(g, file)
	if err != nil {
		return err
	}
	cfg, rep := machineconfig.Validate(doc)
	if rep.HasErrors() {
		printConfigEntries(g.stderr, name, rep.Entries)
		return fmt.Errorf("%s is not valid (%s); nothing applied", name, cfgCountFindings(len(rep.Errors()), len(rep.Warnings())))
	}
	if !g.jsonOutput() {
		printConfigEntries(g.stderr, name, rep.Warnings())
	}
	opts := machineconfig.ApplyOptions{Root: o.root, DryRun: o.dryRun, FirstBoot: o.firstBoot}
	if isHostRootDir(o.root) && !o.dryRun {
		sd, err := machineconfig.NewSystemdNotifier(ctx)
		if err != nil {
			fmt.Fprintf(g.stderr, "warning: %v: unit files are written, but systemd is not reloaded and no unit is started\n", err)
		} else {
			defer sd.Close()
			opts.Systemd = sd
		}
	}
	res, err := machineconfig.Apply(ctx, cfg, opts)
	if g.jsonOutput() {
		if jerr := printJSON(g.stdout, struct {
			File   string                `json:"file"`
			Root   string                `json:"root"`
			DryRun bool                  `json:"dry_run"`
			Report []machineconfig.Entry `json:"report"`
			machineconfig.Result
			Error string `json:"error,omitempty"`
		}{name, o.root, o.dryRun, cfgNonNil(rep.Entries), res, cfgErrString(err)}); jerr != nil {
			return jerr
		}
		return err
	}
	for _, c := range res.Changes {
		fmt.Fprintln(g.stdout, c.String())
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(g.stdout, "warning: %s\n", w)
	}
	if res.DaemonReload {
		fmt.Fprintln(g.stdout, "systemd: daemon-reload")
	}
	for _, c := range res.Commands {
		fmt.Fprintf(g.stdout, "systemd: %s %s\n", c.Command, c.Unit)
	}
	if err != nil {
		if len(res.Changes) > 0 {
			fmt.Fprintf(g.stdout, "%s made before the error\n", cfgPlural(len(res.Changes), "change"))
		}
		return err
	}
	summary := cfgPlural(len(res.Changes), "change")
	if o.dryRun {
		summary += " (dry run, nothing written)"
	}
	fmt.Fprintln(g.stdout, summary)
	return nil
}

func newConfigDiffCmd(g *globals) *cobra.Command {
	root := "/"
	cmd := &cobra.Command{
		Use:   "diff FILE [--root DIR]",
		Short: "Show how a root directory differs from a cloud-config or Ignition document",
		Long: `Compare a root directory with a machine configuration and print what
"flotilla config apply" would change: missing files, units and users,
content (as a unified diff from the root's version to the configured one),
mode, owner and link targets. Remote file contents are not fetched; they
are compared by their verification hash when they have one.

Exit status follows diff(1): 0 when the root matches, 1 when it differs
(or when the comparison fails; the message on standard error says which),
2 for usage errors. FILE "-" reads standard input.`,
		Example: `  flotilla config diff user-data.yaml
  flotilla config diff node.ign --root /mnt/sysroot -o json`,
		Args: exactArgs("FILE"),
		RunE: func(_ *cobra.Command, args []string) error {
			return runConfigDiff(g, args[0], root)
		},
	}
	cmd.Flags().StringVar(&root, "root", root, "root directory to compare with")
	return cmd
}

func runConfigDiff(g *globals, file, root string) error {
	if err := g.checkOutput(); err != nil {
		return err
	}
	if root == "" {
		return usagef("--root must not be empty")
	}
	doc, name, err := readConfigDoc(g, file)
	if err != nil {
		return err
	}
	cfg, rep := machineconfig.Validate(doc)
	if rep.HasErrors() {
		printConfigEntries(g.stderr, name, rep.Entries)
		return fmt.Errorf("%s is not valid (%s)", name, cfgCountFindings(len(rep.Errors()), len(rep.Warnings())))
	}
	drift, err := machineconfig.Diff(cfg, root)
	if err != nil {
		return err
	}
	if g.jsonOutput() {
		if err := printJSON(g.stdout, struct {
			File  string                `json:"file"`
			Root  string                `json:"root"`
			Drift []machineconfig.Drift `json:"drift"`
		}{name, root, drift}); err != nil {
			return err
		}
	} else {
		printConfigDrift(g.stdout, drift)
		if len(drift) == 0 {
			fmt.Fprintf(g.stdout, "%s matches %s\n", root, name)
		} else {
			fmt.Fprintln(g.stdout, cfgPlural(len(drift), "difference"))
		}
	}
	if len(drift) > 0 {
		return fmt.Errorf("%w: %s (run \"flotilla config apply\" to fix)", errConfigDrift, cfgPlural(len(drift), "difference"))
	}
	return nil
}

// printConfigDrift writes one line per difference, marked like a diff: "+"
// missing (apply creates it), "-" present (apply removes it), "~" differs;
// text content follows as a unified diff.
func printConfigDrift(w io.Writer, drift []machineconfig.Drift) {
	for _, d := range drift {
		mark := "~"
		switch {
		case len(d.What) == 1 && d.What[0] == "missing":
			mark = "+"
		case len(d.What) == 1 && d.What[0] == "present":
			mark = "-"
		}
		subject := d.Path
		if d.Kind == "user" || d.Kind == "group" {
			subject = d.Name
		}
		line := fmt.Sprintf("%s %s %s: %s", mark, d.Kind, subject, strings.Join(d.What, ", "))
		if len(d.Details) > 0 {
			line += " (" + strings.Join(d.Details, "; ") + ")"
		}
		fmt.Fprintln(w, line)
		if d.Diff != "" {
			for _, l := range strings.SplitAfter(strings.TrimSuffix(d.Diff, "\n"), "\n") {
				fmt.Fprintf(w, "    %s", l)
			}
			fmt.Fprintln(w)
		}
	}
}

// readConfigDoc reads FILE, or standard input for "-".
func readConfigDoc(g *globals, file string) ([]byte, string, error) {
	if file == "-" {
		in := g.stdin
		if in == nil {
			in = os.Stdin
		}
		b, err := io.ReadAll(in)
		if err != nil {
			return nil, configStdinName, fmt.Errorf("read standard input: %w", err)
		}
		return b, configStdinName, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, file, fmt.Errorf("read configuration: %w", err)
	}
	return b, file, nil
}

// printConfigEntries writes findings as FILE:LINE:COL: severity: message.
func printConfigEntries(w io.Writer, name string, entries []machineconfig.Entry) {
	for _, e := range entries {
		fmt.Fprintln(w, formatConfigEntry(name, e))
	}
}

func formatConfigEntry(name string, e machineconfig.Entry) string {
	if e.Line > 0 {
		return name + ":" + e.String()
	}
	return name + ": " + e.String()
}

// isHostRootDir reports whether root is the running system's root, the only
// case in which systemd is told about unit changes.
func isHostRootDir(root string) bool {
	abs, err := filepath.Abs(root)
	return err == nil && abs == "/"
}

func cfgCountFindings(errs, warns int) string {
	return cfgPlural(errs, "error") + ", " + cfgPlural(warns, "warning")
}

func cfgPlural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func cfgNonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func cfgErrString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
