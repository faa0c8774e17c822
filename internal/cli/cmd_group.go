package cli

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	v1 "github.com/flotilla/flotilla/api/v1"
	"github.com/flotilla/flotilla/client"
	"github.com/flotilla/flotilla/internal/store"
)

func newGroupCmd(g *globals) *cobra.Command {
	return parentCmd("group", "Manage groups and their rollouts",
		newGroupCreateCmd(g), newGroupListCmd(g), newGroupShowCmd(g), newGroupStatusCmd(g),
		newGroupUpdateCmd(g), newGroupSetPolicyCmd(g), newGroupPauseCmd(g), newGroupResumeCmd(g),
		newGroupDeleteCmd(g))
}

// groupRef addresses one group.
type groupRef struct {
	app, name string
}

func (r *groupRef) bind(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&r.app, "app", "", "application id (required)")
	f.StringVar(&r.name, "name", "", "group name (required)")
}

func (r groupRef) require() error {
	return requireFlags("app", r.app, "name", r.name)
}

type groupCreateOptions struct {
	groupRef
	channel, track, description string
	policy                      policyFlags
}

func newGroupCreateCmd(g *globals) *cobra.Command {
	var o groupCreateOptions
	cmd := &cobra.Command{
		Use:   "create --app APPID --name NAME --channel CHANNEL [--track TRACK] [policy flags]",
		Short: "Create a group",
		Long: `Create a group of machines following a channel. Machines join the group by
sending its track (default: the group name) in their update checks.

Policy flags not given keep the defaults: 100% at once, no rate limit,
updates at any time, 24h update timeout, auto-pause after 1 failure.`,
		Example: `  flotilla group create --app $APP --name canary --channel stable --rate 5/1h
  flotilla group create --app $APP --name production --channel stable \
    --rate 20/1h --max-in-progress 10 --percent 10 --ramp 24h \
    --window "Mon-Fri 09:00-17:00" --timezone Europe/Berlin`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.policy.record(cmd)
			return runGroupCreate(cmd.Context(), g, o)
		},
	}
	o.bind(cmd)
	f := cmd.Flags()
	f.StringVar(&o.channel, "channel", "", "channel the group follows (required)")
	f.StringVar(&o.track, "track", "", "track machines send to join (default: the group name)")
	f.StringVar(&o.description, "description", "", "free-form description")
	o.policy.bind(cmd)
	return cmd
}

func runGroupCreate(ctx context.Context, g *globals, o groupCreateOptions) error {
	if err := requireFlags("app", o.app, "name", o.name, "channel", o.channel); err != nil {
		return err
	}
	req := v1.CreateGroup{Name: o.name, Description: o.description, Track: o.track, Channel: o.channel}
	patch, ok, err := o.policy.patch()
	if err != nil {
		return err
	}
	if ok {
		p := applyPatch(defaultPolicy(), patch)
		req.Policy = &p
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	grp, err := c.CreateGroup(ctx, o.app, req)
	if err != nil {
		return apiFailed("create group", err)
	}
	if g.jsonOutput() {
		return printJSON(g.stdout, grp)
	}
	fmt.Fprintf(g.stdout, "group %s created (track %s, channel %s)\n", grp.Name, grp.Track, grp.Channel)
	return nil
}

func newGroupListCmd(g *globals) *cobra.Command {
	var o appOptions
	cmd := &cobra.Command{
		Use:   "list --app APPID",
		Short: "List an application's groups",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runGroupList(cmd.Context(), g, o)
		},
	}
	cmd.Flags().StringVar(&o.app, "app", "", "application id (required)")
	return cmd
}

func runGroupList(ctx context.Context, g *globals, o appOptions) error {
	if err := requireFlags("app", o.app); err != nil {
		return err
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	groups, err := c.ListGroups(ctx, o.app)
	if err != nil {
		return apiFailed("list groups", err)
	}
	if g.jsonOutput() {
		if groups == nil {
			groups = []v1.Group{}
		}
		return printJSON(g.stdout, groups)
	}
	t := newTable(g.stdout, "NAME", "TRACK", "CHANNEL", "VERSION", "PAUSED", "RATE", "PERCENT", "WINDOWS")
	for _, grp := range groups {
		p := grp.Policy
		pct := percent(p.RolloutPercent)
		if p.RampDuration != "" && humanDuration(p.RampDuration) != "0" && p.RolloutPercent < 100 {
			pct += " (ramp " + humanDuration(p.RampDuration) + ")"
		}
		t.row(grp.Name, grp.Track, grp.Channel, grp.RolloutVersion, yesNo(p.Paused), describeRate(p), pct, strconv.Itoa(len(p.Windows)))
	}
	return t.flush()
}

func newGroupShowCmd(g *globals) *cobra.Command {
	var o groupRef
	cmd := &cobra.Command{
		Use:   "show --app APPID --name NAME",
		Short: "Show a group and its policy",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runGroupShow(cmd.Context(), g, o)
		},
	}
	o.bind(cmd)
	return cmd
}

func runGroupShow(ctx context.Context, g *globals, o groupRef) error {
	if err := o.require(); err != nil {
		return err
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	grp, err := c.GetGroup(ctx, o.app, o.name)
	if err != nil {
		return apiFailed("show group", err)
	}
	return printGroup(g, grp)
}

// printGroup prints a group with its policy (or as JSON).
func printGroup(g *globals, grp v1.Group) error {
	if g.jsonOutput() {
		return printJSON(g.stdout, grp)
	}
	f := newFields(g.stdout)
	f.add("Name", grp.Name)
	f.add("App", grp.AppID)
	f.add("Description", grp.Description)
	f.add("Track", grp.Track)
	f.add("Channel", grp.Channel)
	f.add("Paused", pausedText(grp.Policy.Paused, grp.PausedReason))
	rollout := grp.RolloutVersion
	if rollout != "" && !grp.RolloutStartedAt.IsZero() {
		rollout += ", started " + timestamp(grp.RolloutStartedAt)
	}
	f.add("Rollout", rollout)
	addPolicy(f, grp.Policy)
	f.add("Created", timestamp(grp.CreatedAt))
	f.add("Updated", timestamp(grp.UpdatedAt))
	return f.flush()
}

func pausedText(paused bool, reason string) string {
	if !paused {
		return "no"
	}
	if reason == "" {
		return "yes"
	}
	return "yes: " + reason
}

type groupStatusOptions struct {
	app, name string
}

func newGroupStatusCmd(g *globals) *cobra.Command {
	var o groupStatusOptions
	cmd := &cobra.Command{
		Use:   "status --app APPID [--name NAME]",
		Short: "Show rollout status of all groups, or of one group in detail",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runGroupStatus(cmd.Context(), g, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.app, "app", "", "application id (required)")
	f.StringVar(&o.name, "name", "", "group name (default: all groups)")
	return cmd
}

func runGroupStatus(ctx context.Context, g *globals, o groupStatusOptions) error {
	if err := requireFlags("app", o.app); err != nil {
		return err
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	if o.name != "" {
		st, err := c.GroupStatus(ctx, o.app, o.name)
		if err != nil {
			return apiFailed("group status", err)
		}
		if g.jsonOutput() {
			return printJSON(g.stdout, st)
		}
		return printGroupStatus(g, st)
	}
	all, err := allGroupStatuses(ctx, c, o.app)
	if err != nil {
		return err
	}
	if g.jsonOutput() {
		return printJSON(g.stdout, all)
	}
	return printGroupStatusTable(g, all)
}

// allGroupStatuses fetches the status of every group of an app, a few at a
// time, in the order the server lists the groups.
func allGroupStatuses(ctx context.Context, c *client.Client, appID string) ([]v1.GroupStatus, error) {
	groups, err := c.ListGroups(ctx, appID)
	if err != nil {
		return nil, apiFailed("list groups", err)
	}
	out := make([]v1.GroupStatus, len(groups))
	found := make([]bool, len(groups))
	eg, ctx := errgroup.WithContext(ctx)
	eg.SetLimit(8)
	for i, grp := range groups {
		eg.Go(func() error {
			st, err := c.GroupStatus(ctx, appID, grp.Name)
			if client.IsNotFound(err) {
				return nil // deleted meanwhile
			}
			if err != nil {
				return apiFailed("status of group "+grp.Name, err)
			}
			out[i], found[i] = st, true // distinct indices: no lock needed
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return nil, err
	}
	res := make([]v1.GroupStatus, 0, len(out))
	for i, st := range out {
		if found[i] {
			res = append(res, st)
		}
	}
	return res, nil
}

// printGroupStatusTable prints one row per group, with a column for every
// status that occurs in any group.
func printGroupStatusTable(g *globals, all []v1.GroupStatus) error {
	counts := make([]map[string]int, len(all))
	for i, st := range all {
		counts[i] = st.ByStatus
	}
	statuses := statusColumns(counts...)
	headers := []string{"GROUP", "CHANNEL", "TARGET", "PAUSED", "PERCENT", "TOTAL", "ON-TARGET"}
	for _, s := range statuses {
		headers = append(headers, strings.ToUpper(s))
	}
	t := newTable(g.stdout, headers...)
	for _, st := range all {
		row := []string{st.Group, st.Channel, st.TargetVersion, yesNo(st.Paused), percent(st.CurrentPercent),
			strconv.Itoa(st.Total), strconv.Itoa(st.OnTarget)}
		for _, s := range statuses {
			row = append(row, strconv.Itoa(st.ByStatus[s]))
		}
		t.row(row...)
	}
	return t.flush()
}

// statusColumns lists the statuses with a non-zero count in any of the maps:
// known statuses in display order, then unknown ones sorted.
func statusColumns(maps ...map[string]int) []string {
	present := map[string]bool{}
	for _, m := range maps {
		for s, n := range m {
			if n != 0 {
				present[s] = true
			}
		}
	}
	var out []string
	for _, s := range store.AllStatuses {
		if present[string(s)] {
			out = append(out, string(s))
			delete(present, string(s))
		}
	}
	var rest []string
	for s := range present {
		rest = append(rest, s)
	}
	sort.Strings(rest)
	return append(out, rest...)
}

// printGroupStatus prints the detailed status of one group.
func printGroupStatus(g *globals, st v1.GroupStatus) error {
	f := newFields(g.stdout)
	f.add("Group", st.Group)
	f.add("App", st.AppID)
	f.add("Channel", st.Channel)
	f.add("Target version", st.TargetVersion)
	f.add("Paused", pausedText(st.Paused, st.PausedReason))
	f.add("Rollout started", timestamp(st.RolloutStarted))
	f.add("Current percent", percent(st.CurrentPercent))
	f.add("In update window", yesNo(st.InWindow))
	onTarget := strconv.Itoa(st.OnTarget)
	if st.Total > 0 {
		onTarget += " (" + percent(roundTenth(100*float64(st.OnTarget)/float64(st.Total))) + ")"
	}
	f.add("Instances", strconv.Itoa(st.Total))
	f.add("On target", onTarget)
	if err := f.flush(); err != nil {
		return err
	}

	type count struct {
		key string
		n   int
	}
	var versions []count
	for v, n := range st.ByVersion {
		versions = append(versions, count{v, n})
	}
	sort.Slice(versions, func(i, j int) bool {
		if versions[i].n != versions[j].n {
			return versions[i].n > versions[j].n
		}
		return versions[i].key < versions[j].key
	})
	if len(versions) > 0 {
		fmt.Fprintln(g.stdout)
		t := newTable(g.stdout, "VERSION", "INSTANCES")
		for _, c := range versions {
			name := c.key
			if c.key == st.TargetVersion {
				name += " (target)"
			}
			t.row(name, strconv.Itoa(c.n))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if statuses := statusColumns(st.ByStatus); len(statuses) > 0 {
		fmt.Fprintln(g.stdout)
		t := newTable(g.stdout, "STATUS", "INSTANCES")
		for _, s := range statuses {
			t.row(s, strconv.Itoa(st.ByStatus[s]))
		}
		return t.flush()
	}
	return nil
}

func roundTenth(x float64) float64 { return float64(int64(x*10+0.5)) / 10 }

type groupUpdateOptions struct {
	groupRef
	description, track, channel string
	set                         map[string]bool
}

func newGroupUpdateCmd(g *globals) *cobra.Command {
	var o groupUpdateOptions
	cmd := &cobra.Command{
		Use:   "update --app APPID --name NAME [--description D] [--track T] [--channel C]",
		Short: "Change a group's description, track or channel",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.set = map[string]bool{}
			for _, n := range []string{"description", "track", "channel"} {
				o.set[n] = cmd.Flags().Changed(n)
			}
			return runGroupUpdate(cmd.Context(), g, o)
		},
	}
	o.bind(cmd)
	f := cmd.Flags()
	f.StringVar(&o.description, "description", "", "new description")
	f.StringVar(&o.track, "track", "", "new track")
	f.StringVar(&o.channel, "channel", "", "channel to follow instead")
	return cmd
}

func runGroupUpdate(ctx context.Context, g *globals, o groupUpdateOptions) error {
	if err := o.require(); err != nil {
		return err
	}
	var u v1.UpdateGroup
	if o.set["description"] {
		u.Description = &o.description
	}
	if o.set["track"] {
		if o.track == "" {
			return usagef("--track must not be empty")
		}
		u.Track = &o.track
	}
	if o.set["channel"] {
		if o.channel == "" {
			return usagef("--channel must not be empty")
		}
		u.Channel = &o.channel
	}
	if u == (v1.UpdateGroup{}) {
		return usagef("nothing to change: pass --description, --track or --channel")
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	grp, err := c.UpdateGroup(ctx, o.app, o.name, u)
	if err != nil {
		return apiFailed("update group", err)
	}
	if g.jsonOutput() {
		return printJSON(g.stdout, grp)
	}
	fmt.Fprintf(g.stdout, "group %s updated\n", grp.Name)
	return nil
}

type groupSetPolicyOptions struct {
	groupRef
	policy policyFlags
}

func newGroupSetPolicyCmd(g *globals) *cobra.Command {
	var o groupSetPolicyOptions
	cmd := &cobra.Command{
		Use:   "set-policy --app APPID --name NAME [policy flags]",
		Short: "Change some fields of a group's rollout policy",
		Long: `Change the rollout policy fields given as flags; all others are kept.
--window replaces the whole list of windows; --clear-windows removes them.`,
		Example: `  flotilla group set-policy --app $APP --name production --rate 50/1h
  flotilla group set-policy --app $APP --name production --percent 100 --ramp 0
  flotilla group set-policy --app $APP --name production --window "Sat-Sun 02:00-06:00" --timezone UTC`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.policy.record(cmd)
			return runGroupSetPolicy(cmd.Context(), g, o)
		},
	}
	o.bind(cmd)
	o.policy.bind(cmd)
	return cmd
}

func runGroupSetPolicy(ctx context.Context, g *globals, o groupSetPolicyOptions) error {
	if err := o.require(); err != nil {
		return err
	}
	patch, ok, err := o.policy.patch()
	if err != nil {
		return err
	}
	if !ok {
		return usagef("nothing to change: pass at least one policy flag (see --help)")
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	grp, err := c.PatchPolicy(ctx, o.app, o.name, patch)
	if err != nil {
		return apiFailed("set policy", err)
	}
	if g.jsonOutput() {
		return printJSON(g.stdout, grp)
	}
	fmt.Fprintf(g.stdout, "policy of group %s updated\n", grp.Name)
	f := newFields(g.stdout)
	addPolicy(f, grp.Policy)
	return f.flush()
}

type groupPauseOptions struct {
	groupRef
	reason string
}

func newGroupPauseCmd(g *globals) *cobra.Command {
	var o groupPauseOptions
	cmd := &cobra.Command{
		Use:   "pause --app APPID --name NAME [--reason TEXT]",
		Short: "Stop granting updates in a group",
		Long: `Stop granting updates in a group. Machines already updating finish; no new
machine is offered the update until the group is resumed.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runGroupPause(cmd.Context(), g, o)
		},
	}
	o.bind(cmd)
	cmd.Flags().StringVar(&o.reason, "reason", "", "why (shown in status and activity)")
	return cmd
}

func runGroupPause(ctx context.Context, g *globals, o groupPauseOptions) error {
	if err := o.require(); err != nil {
		return err
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	grp, err := c.PauseGroup(ctx, o.app, o.name, o.reason)
	if err != nil {
		return apiFailed("pause group", err)
	}
	if g.jsonOutput() {
		return printJSON(g.stdout, grp)
	}
	fmt.Fprintf(g.stdout, "group %s paused\n", grp.Name)
	return nil
}

func newGroupResumeCmd(g *globals) *cobra.Command {
	var o groupRef
	cmd := &cobra.Command{
		Use:   "resume --app APPID --name NAME",
		Short: "Resume granting updates in a paused group",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runGroupResume(cmd.Context(), g, o)
		},
	}
	o.bind(cmd)
	return cmd
}

func runGroupResume(ctx context.Context, g *globals, o groupRef) error {
	if err := o.require(); err != nil {
		return err
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	grp, err := c.ResumeGroup(ctx, o.app, o.name)
	if err != nil {
		return apiFailed("resume group", err)
	}
	if g.jsonOutput() {
		return printJSON(g.stdout, grp)
	}
	fmt.Fprintf(g.stdout, "group %s resumed\n", grp.Name)
	return nil
}

func newGroupDeleteCmd(g *globals) *cobra.Command {
	var o groupRef
	cmd := &cobra.Command{
		Use:   "delete --app APPID --name NAME",
		Short: "Delete a group",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runGroupDelete(cmd.Context(), g, o)
		},
	}
	o.bind(cmd)
	return cmd
}

func runGroupDelete(ctx context.Context, g *globals, o groupRef) error {
	if err := o.require(); err != nil {
		return err
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	if err := c.DeleteGroup(ctx, o.app, o.name); err != nil {
		return apiFailed("delete group", err)
	}
	if !g.jsonOutput() {
		fmt.Fprintf(g.stdout, "group %s deleted\n", o.name)
	}
	return nil
}
