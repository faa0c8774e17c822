package cli

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/flotilla/flotilla/omaha"
)

// Commands for machine configuration managed per group on the server:
// store a new version (config set-group), read one (get-group), list the
// versions (history), compare two (diff-versions) and see which machines
// run which version (status).

// configGroupOptions are the flags every group-config command shares.
type configGroupOptions struct {
	app string
}

func (o *configGroupOptions) bind(cmd *cobra.Command) {
	// Defaulting to the agent's default app id means a fleet that never
	// set --app-id needs no flag here either.
	cmd.Flags().StringVar(&o.app, "app", omaha.FlatcarAppID, "application id (the agents' --app-id)")
}

func newConfigSetGroupCmd(g *globals) *cobra.Command {
	var o configGroupOptions
	var comment string
	cmd := &cobra.Command{
		Use:   "set-group GROUP FILE",
		Short: "Store a cloud-config or Ignition document as a group's next config version",
		Long: `Validate FILE on the server and store it as the next version of GROUP's
config; the group's agents (flotilla agent --config-root) fetch, apply and
report it. A document with errors is rejected with the findings; one equal
to the latest version stores nothing. Prints the version. FILE "-" reads
standard input.`,
		Example: `  flotilla config set-group production user-data.yaml --comment "motd: new text"
  flotilla config set-group canary node.ign --app $APP`,
		Args: exactArgs("GROUP", "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runConfigSetGroup(cmd.Context(), g, o, args[0], args[1], comment)
		},
	}
	o.bind(cmd)
	cmd.Flags().StringVar(&comment, "comment", "", "what changed, kept in the history")
	return cmd
}

func runConfigSetGroup(ctx context.Context, g *globals, o configGroupOptions, group, file, comment string) error {
	doc, _, err := readConfigDoc(g, file)
	if err != nil {
		return err
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	out, err := c.SetGroupConfig(ctx, o.app, group, string(doc), comment)
	if err != nil {
		return apiFailed("set group config", err)
	}
	if g.jsonOutput() {
		return printJSON(g.stdout, out)
	}
	for _, w := range out.Warnings {
		fmt.Fprintf(g.stderr, "%s: %s\n", file, w)
	}
	if out.Unchanged {
		fmt.Fprintf(g.stdout, "group %s: unchanged, still version %d\n", group, out.Version)
		return nil
	}
	fmt.Fprintf(g.stdout, "group %s: version %d (%s, %d bytes)\n", group, out.Version, out.Format, out.Size)
	return nil
}

func newConfigGetGroupCmd(g *globals) *cobra.Command {
	var o configGroupOptions
	var version int
	cmd := &cobra.Command{
		Use:   "get-group GROUP [--version N]",
		Short: "Print a group's config document (the latest version by default)",
		Args:  exactArgs("GROUP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if version < 0 {
				return usagef("--version %d: want a version number ≥ 1 (0 = latest)", version)
			}
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			out, err := c.GetGroupConfig(cmd.Context(), o.app, args[0], version)
			if err != nil {
				return apiFailed("get group config", err)
			}
			if g.jsonOutput() {
				return printJSON(g.stdout, out)
			}
			_, err = fmt.Fprint(g.stdout, out.Document)
			return err
		},
	}
	o.bind(cmd)
	cmd.Flags().IntVar(&version, "version", 0, "version to print (default: the latest)")
	return cmd
}

func newConfigHistoryCmd(g *globals) *cobra.Command {
	var o configGroupOptions
	cmd := &cobra.Command{
		Use:   "history GROUP",
		Short: "List a group's config versions, newest first",
		Args:  exactArgs("GROUP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			list, err := c.GroupConfigHistory(cmd.Context(), o.app, args[0])
			if err != nil {
				return apiFailed("list group config history", err)
			}
			if g.jsonOutput() {
				return printJSON(g.stdout, list)
			}
			t := newTable(g.stdout, "VERSION", "CREATED", "AUTHOR", "FORMAT", "SIZE", "SHA256", "COMMENT")
			for _, v := range list {
				t.row(strconv.Itoa(v.Version), timestamp(v.CreatedAt), orDashStr(v.Author), v.Format,
					strconv.Itoa(v.Size), v.SHA256[:min(12, len(v.SHA256))], orDashStr(v.Comment))
			}
			return t.flush()
		},
	}
	o.bind(cmd)
	return cmd
}

func newConfigDiffVersionsCmd(g *globals) *cobra.Command {
	var o configGroupOptions
	cmd := &cobra.Command{
		Use:   "diff-versions GROUP A B",
		Short: "Show a unified diff between two versions of a group's config",
		Long: `Show what changed in GROUP's config document from version A to version B.
A or B "latest" means the latest version.`,
		Example: `  flotilla config diff-versions production 3 latest`,
		Args:    exactArgs("GROUP", "A", "B"),
		RunE: func(cmd *cobra.Command, args []string) error {
			from, err := parseConfigVersion(args[1])
			if err != nil {
				return err
			}
			to, err := parseConfigVersion(args[2])
			if err != nil {
				return err
			}
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			d, err := c.DiffGroupConfig(cmd.Context(), o.app, args[0], from, to)
			if err != nil {
				return apiFailed("diff group config versions", err)
			}
			if g.jsonOutput() {
				return printJSON(g.stdout, d)
			}
			if d.Diff == "" {
				fmt.Fprintf(g.stdout, "versions %d and %d are identical\n", d.From, d.To)
				return nil
			}
			_, err = fmt.Fprint(g.stdout, d.Diff)
			return err
		},
	}
	o.bind(cmd)
	return cmd
}

func parseConfigVersion(s string) (int, error) {
	if s == "latest" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, usagef("version %q: want a number ≥ 1 or latest", s)
	}
	return n, nil
}

func newConfigStatusCmd(g *globals) *cobra.Command {
	var o configGroupOptions
	cmd := &cobra.Command{
		Use:   "status GROUP",
		Short: "Show which machines of a group run which config version, with drift and errors",
		Args:  exactArgs("GROUP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			st, err := c.GroupConfigStatus(cmd.Context(), o.app, args[0])
			if err != nil {
				return apiFailed("get group config status", err)
			}
			if g.jsonOutput() {
				return printJSON(g.stdout, st)
			}
			f := newFields(g.stdout)
			latest := "none"
			if st.Latest > 0 {
				latest = strconv.Itoa(st.Latest)
			}
			f.add("Group", st.Group)
			f.add("Latest version", latest)
			f.add("Machines", fmt.Sprintf("%d reporting, %d on latest, %d drifted, %d failed",
				len(st.Machines), st.OnLatest, st.Drifted, st.Failed))
			var vs []string
			for v, n := range st.ByVersion {
				vs = append(vs, fmt.Sprintf("v%s: %d", v, n))
			}
			sort.Strings(vs)
			if len(vs) > 0 {
				f.add("By version", strings.Join(vs, ", "))
			}
			if err := f.flush(); err != nil {
				return err
			}
			if len(st.Machines) == 0 {
				return nil
			}
			fmt.Fprintln(g.stdout)
			t := newTable(g.stdout, "MACHINE", "VERSION", "APPLIED", "REPORTED", "DRIFT", "ERROR")
			for _, m := range st.Machines {
				drift := "-"
				if len(m.Drift) > 0 {
					drift = fmt.Sprintf("%d: %s", len(m.Drift), m.Drift[0])
					if len(m.Drift) > 1 {
						drift += ", …"
					}
				}
				applied := "-"
				if !m.AppliedAt.IsZero() {
					applied = ago(m.AppliedAt)
				}
				t.row(m.MachineID, strconv.Itoa(m.Version), applied, ago(m.ReportedAt), drift, orDashStr(m.Error))
			}
			return t.flush()
		},
	}
	o.bind(cmd)
	return cmd
}

func orDashStr(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
