package cli

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	v1 "github.com/flotilla/flotilla/api/v1"
	"github.com/flotilla/flotilla/client"
)

type activityOptions struct {
	app, group, since string
	before            int64
	limit             int
}

func newActivityCmd(g *globals) *cobra.Command {
	var o activityOptions
	cmd := &cobra.Command{
		Use:   "activity --app APPID [--group G] [--since AGE]",
		Short: "Show the activity log (rollouts, pauses, failures), newest first",
		Example: `  flotilla activity --app $APP --since 24h
  flotilla activity --app $APP --group production --limit 20`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runActivity(cmd.Context(), g, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.app, "app", "", "application id (required)")
	f.StringVar(&o.group, "group", "", "only entries about this group")
	f.StringVar(&o.since, "since", "", "only entries newer than this age (10m, 24h, 7d) or RFC 3339 time")
	f.Int64Var(&o.before, "before", 0, "only entries with a smaller id (paging)")
	f.IntVar(&o.limit, "limit", 0, "at most N entries (default: server's, 100)")
	return cmd
}

func runActivity(ctx context.Context, g *globals, o activityOptions) error {
	if err := requireFlags("app", o.app); err != nil {
		return err
	}
	if o.limit < 0 {
		return usagef("--limit must not be negative")
	}
	if o.before < 0 {
		return usagef("--before must not be negative")
	}
	since, err := parseTimeArg("since", o.since, time.Now())
	if err != nil {
		return err
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	list, err := c.ListActivity(ctx, o.app, client.ActivityQuery{Group: o.group, Since: since, Before: o.before, Limit: o.limit})
	if err != nil {
		return apiFailed("list activity", err)
	}
	if list.Activity == nil {
		list.Activity = []v1.Activity{}
	}
	if list.NextBefore != 0 {
		fmt.Fprintf(g.stderr, "more: --before %d\n", list.NextBefore)
	}
	if g.jsonOutput() {
		return printJSON(g.stdout, list)
	}
	t := newTable(g.stdout, "WHEN", "SEVERITY", "KIND", "GROUP", "VERSION", "MESSAGE")
	for _, a := range list.Activity {
		t.row(ago(a.At), a.Severity, a.Kind, a.Group, a.Version, a.Message)
	}
	return t.flush()
}

func newErrorCodeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "errorcode CODE",
		Short: "Decode an update_engine error code",
		Long: `Decode a raw update_engine error code, as machines report it in failure
events (decimal or 0x hexadecimal; flag bits such as dev-mode are split off).`,
		Example: `  flotilla errorcode 10
  flotilla errorcode 2147483658`,
		Args: exactArgs("CODE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runErrorCode(cmd.Context(), g, args[0])
		},
	}
}

func runErrorCode(ctx context.Context, g *globals, arg string) error {
	code, err := strconv.ParseInt(arg, 0, 64)
	if err != nil || code < 0 || code > 1<<32-1 {
		return usagef("error code %q: want a number from 0 to 4294967295, like 10, 2147483658 or 0x8000000a", arg)
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	ec, err := c.DecodeErrorCode(ctx, code)
	if err != nil {
		return apiFailed("decode error code", err)
	}
	if g.jsonOutput() {
		return printJSON(g.stdout, ec)
	}
	f := newFields(g.stdout)
	f.add("Raw", strconv.FormatInt(ec.Raw, 10))
	f.add("Code", strconv.Itoa(ec.Code))
	f.add("Name", ec.Name)
	if len(ec.Flags) > 0 {
		f.add("Flags", fmt.Sprint(ec.Flags))
	}
	f.add("Description", ec.Description)
	f.add("Hint", ec.Hint)
	return f.flush()
}
