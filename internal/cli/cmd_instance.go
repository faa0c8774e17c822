package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	v1 "github.com/flotilla/flotilla/api/v1"
	"github.com/flotilla/flotilla/client"
	"github.com/flotilla/flotilla/internal/store"
)

func newInstanceCmd(g *globals) *cobra.Command {
	return parentCmd("instance", "Inspect machines (instances) of an application",
		newInstanceListCmd(g), newInstanceShowCmd(g), newInstanceDeleteCmd(g))
}

type instanceListOptions struct {
	app, group, status, version, prefix string
	seenBefore, seenAfter               string
	sort, cursor                        string
	limit                               int
	all                                 bool
}

func newInstanceListCmd(g *globals) *cobra.Command {
	var o instanceListOptions
	cmd := &cobra.Command{
		Use:   "list --app APPID [filters]",
		Short: "List instances",
		Long: `List an application's instances, one page at a time (--all follows all pages).

--seen-before and --seen-after take an age (10m, 36h, 7d: relative to now)
or an RFC 3339 time; --seen-before 1h lists machines silent for an hour.`,
		Example: `  flotilla instance list --app $APP --group production --status error
  flotilla instance list --app $APP --seen-before 24h --all
  flotilla instance list --app $APP --sort -last_check --limit 20`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runInstanceList(cmd.Context(), g, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.app, "app", "", "application id (required)")
	f.StringVar(&o.group, "group", "", "only instances in this group")
	f.StringVar(&o.status, "status", "", "only instances with this status ("+statusWords()+")")
	f.StringVar(&o.version, "version", "", "only instances running this version")
	f.StringVar(&o.prefix, "prefix", "", "only machine ids or aliases starting with this")
	f.StringVar(&o.seenBefore, "seen-before", "", "only instances whose last check is older (age or RFC 3339 time)")
	f.StringVar(&o.seenAfter, "seen-after", "", "only instances whose last check is newer (age or RFC 3339 time)")
	f.StringVar(&o.sort, "sort", "machine_id", "order: machine_id or -last_check (newest check first)")
	f.StringVar(&o.cursor, "cursor", "", "continue after a previous page")
	f.IntVar(&o.limit, "limit", 0, "page size (default: server's, 100)")
	f.BoolVar(&o.all, "all", false, "follow cursors and list every matching instance")
	return cmd
}

// statusWords lists the valid instance status words.
func statusWords() string {
	words := make([]string, len(store.AllStatuses))
	for i, s := range store.AllStatuses {
		words[i] = string(s)
	}
	return strings.Join(words, ", ")
}

func runInstanceList(ctx context.Context, g *globals, o instanceListOptions) error {
	if err := requireFlags("app", o.app); err != nil {
		return err
	}
	q := client.InstanceQuery{
		Group:   o.group,
		Status:  o.status,
		Version: o.version,
		Prefix:  o.prefix,
		Sort:    o.sort,
		Cursor:  o.cursor,
		Limit:   o.limit,
	}
	if o.status != "" && !store.Status(o.status).Valid() {
		return usagef("--status %q: want one of %s", o.status, statusWords())
	}
	switch o.sort {
	case "machine_id", "-last_check":
	default:
		return usagef("--sort %q: want machine_id or -last_check", o.sort)
	}
	if o.limit < 0 {
		return usagef("--limit must not be negative")
	}
	now := time.Now()
	var err error
	if q.SeenBefore, err = parseTimeArg("seen-before", o.seenBefore, now); err != nil {
		return err
	}
	if q.SeenAfter, err = parseTimeArg("seen-after", o.seenAfter, now); err != nil {
		return err
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	var list v1.InstanceList
	if o.all {
		list, err = c.ListAllInstances(ctx, o.app, q)
	} else {
		list, err = c.ListInstances(ctx, o.app, q)
	}
	if err != nil {
		return apiFailed("list instances", err)
	}
	if list.Instances == nil {
		list.Instances = []v1.Instance{}
	}
	if list.NextCursor != "" {
		fmt.Fprintf(g.stderr, "%d of %d instances shown; more: --cursor %s (or --all)\n",
			len(list.Instances), list.Total, list.NextCursor)
	}
	if g.jsonOutput() {
		return printJSON(g.stdout, list)
	}
	t := newTable(g.stdout, "MACHINE ID", "ALIAS", "GROUP", "VERSION", "STATUS", "LAST CHECK")
	for _, in := range list.Instances {
		t.row(in.MachineID, in.Alias, in.Group, in.Version, in.Status, ago(in.LastCheck))
	}
	return t.flush()
}

type instanceShowOptions struct {
	app, machineID string
	history        int
}

func newInstanceShowCmd(g *globals) *cobra.Command {
	var o instanceShowOptions
	cmd := &cobra.Command{
		Use:   "show --app APPID MACHINE_ID",
		Short: "Show an instance, its last error and recent history",
		Args:  exactArgs("MACHINE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.machineID = args[0]
			return runInstanceShow(cmd.Context(), g, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.app, "app", "", "application id (required)")
	f.IntVar(&o.history, "history", 10, "show at most N status changes and N events (0 = none; -o json includes them too)")
	return cmd
}

// instanceDetail is the -o json output of instance show: the instance's
// own fields at the top level (as in instance list), plus its history.
type instanceDetail struct {
	v1.Instance
	History v1.InstanceHistory `json:"history"`
}

func runInstanceShow(ctx context.Context, g *globals, o instanceShowOptions) error {
	if err := requireFlags("app", o.app); err != nil {
		return err
	}
	if o.history < 0 {
		return usagef("--history must not be negative")
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	in, err := c.GetInstance(ctx, o.app, o.machineID)
	if err != nil {
		return apiFailed("show instance", err)
	}
	var h v1.InstanceHistory
	if o.history > 0 {
		if h, err = c.InstanceHistory(ctx, o.app, o.machineID, o.history); err != nil {
			return apiFailed("instance history", err)
		}
	}
	if h.Statuses == nil {
		h.Statuses = []v1.StatusChange{}
	}
	if h.Events == nil {
		h.Events = []v1.Event{}
	}
	if g.jsonOutput() {
		return printJSON(g.stdout, instanceDetail{Instance: in, History: h})
	}

	f := newFields(g.stdout)
	f.add("Machine ID", in.MachineID)
	f.add("Alias", in.Alias)
	f.add("App", in.AppID)
	f.add("Group", in.Group)
	f.add("Version", in.Version)
	status := in.Status
	if !in.StatusChanged.IsZero() {
		status += " (since " + ago(in.StatusChanged) + ")"
	}
	f.add("Status", status)
	if in.GrantedVersion != "" {
		f.add("Granted", in.GrantedVersion+" at "+timestamp(in.GrantedAt))
	}
	if in.BlockedVersion != "" {
		f.add("Blocked version", in.BlockedVersion+" (rolled back; not offered again automatically)")
	}
	f.add("Last check", timestamp(in.LastCheck))
	f.add("IP", in.IP)
	oem := in.OEM
	if in.OEMVersion != "" {
		oem += " " + in.OEMVersion
	}
	f.add("OEM", oem)
	f.add("Board", in.Board)
	f.add("First version", in.AlephVersion)
	f.add("First seen", timestamp(in.CreatedAt))
	if e := in.LastError; e != nil {
		f.add("Last error", errorCodeText(e))
		if e.Description != "" {
			f.add("  Description", e.Description)
		}
		if e.Hint != "" {
			f.add("  Hint", e.Hint)
		}
	}
	if err := f.flush(); err != nil {
		return err
	}

	if n := min(o.history, len(h.Statuses)); n > 0 {
		fmt.Fprintln(g.stdout, "\nStatus history (newest first):")
		t := newTable(g.stdout, "WHEN", "STATUS", "VERSION", "GROUP", "ERROR")
		for _, s := range h.Statuses[:n] {
			t.row(timestamp(s.At), s.Status, s.Version, s.Group, errorCodeShort(s.Error))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if n := min(o.history, len(h.Events)); n > 0 {
		fmt.Fprintln(g.stdout, "\nEvents (newest first):")
		t := newTable(g.stdout, "WHEN", "EVENT", "VERSION", "ERROR")
		for _, e := range h.Events[:n] {
			desc := e.Description
			if desc == "" {
				desc = fmt.Sprintf("type %d result %d", e.Type, e.Result)
			}
			t.row(timestamp(e.At), desc, e.Version, errorCodeShort(e.Error))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	return nil
}

// errorCodeText describes a decoded error code on one line.
func errorCodeText(e *v1.ErrorCode) string {
	s := fmt.Sprintf("%s (code %d", e.Name, e.Code)
	if e.Raw != int64(e.Code) {
		s += fmt.Sprintf(", raw %d", e.Raw)
	}
	s += ")"
	if len(e.Flags) > 0 {
		s += " [" + strings.Join(e.Flags, ", ") + "]"
	}
	return s
}

// errorCodeShort is the error code's name for table cells.
func errorCodeShort(e *v1.ErrorCode) string {
	if e == nil {
		return ""
	}
	if e.Name != "" {
		return e.Name
	}
	return strconv.FormatInt(e.Raw, 10)
}

type instanceRefOptions struct {
	app, machineID string
}

func newInstanceDeleteCmd(g *globals) *cobra.Command {
	var o instanceRefOptions
	cmd := &cobra.Command{
		Use:   "delete --app APPID MACHINE_ID",
		Short: "Forget an instance (it reappears at its next update check)",
		Args:  exactArgs("MACHINE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.machineID = args[0]
			return runInstanceDelete(cmd.Context(), g, o)
		},
	}
	cmd.Flags().StringVar(&o.app, "app", "", "application id (required)")
	return cmd
}

func runInstanceDelete(ctx context.Context, g *globals, o instanceRefOptions) error {
	if err := requireFlags("app", o.app); err != nil {
		return err
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	if err := c.DeleteInstance(ctx, o.app, o.machineID); err != nil {
		return apiFailed("delete instance", err)
	}
	if !g.jsonOutput() {
		fmt.Fprintf(g.stdout, "instance %s deleted\n", o.machineID)
	}
	return nil
}
