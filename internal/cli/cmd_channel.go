package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	v1 "github.com/flotilla/flotilla/api/v1"
)

func newChannelCmd(g *globals) *cobra.Command {
	return parentCmd("channel", "Manage channels (which release an application offers)",
		newChannelCreateCmd(g), newChannelSetPackageCmd(g), newChannelListCmd(g), newChannelShowCmd(g), newChannelDeleteCmd(g))
}

type channelOptions struct {
	app, name, pkg string
}

func (o *channelOptions) bind(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.app, "app", "", "application id (required)")
	f.StringVar(&o.name, "name", "", "channel name (required)")
}

func newChannelCreateCmd(g *globals) *cobra.Command {
	var o channelOptions
	cmd := &cobra.Command{
		Use:     "create --app APPID --name NAME [--package VERSION]",
		Short:   "Create a channel",
		Example: `  flotilla channel create --app $APP --name stable --package 3815.2.0`,
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runChannelCreate(cmd.Context(), g, o)
		},
	}
	o.bind(cmd)
	cmd.Flags().StringVar(&o.pkg, "package", "", "version the channel offers (default: none yet)")
	return cmd
}

func runChannelCreate(ctx context.Context, g *globals, o channelOptions) error {
	if err := requireFlags("app", o.app, "name", o.name); err != nil {
		return err
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	ch, err := c.CreateChannel(ctx, o.app, v1.Channel{Name: o.name, Package: o.pkg})
	if err != nil {
		return apiFailed("create channel", err)
	}
	if g.jsonOutput() {
		return printJSON(g.stdout, ch)
	}
	fmt.Fprintf(g.stdout, "channel %s created\n", ch.Name)
	return nil
}

func newChannelSetPackageCmd(g *globals) *cobra.Command {
	var o channelOptions
	cmd := &cobra.Command{
		Use:   "set-package --app APPID --name NAME --package VERSION",
		Short: "Point a channel at a version (starts a rollout in its groups)",
		Long: `Point a channel at a version. Every group following the channel starts
rolling the version out under its policy.`,
		Example: `  flotilla channel set-package --app $APP --name stable --package 3815.2.1`,
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runChannelSetPackage(cmd.Context(), g, o)
		},
	}
	o.bind(cmd)
	cmd.Flags().StringVar(&o.pkg, "package", "", "version to offer (required)")
	return cmd
}

func runChannelSetPackage(ctx context.Context, g *globals, o channelOptions) error {
	if err := requireFlags("app", o.app, "name", o.name, "package", o.pkg); err != nil {
		return err
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	ch, err := c.SetChannelPackage(ctx, o.app, o.name, o.pkg)
	if err != nil {
		return apiFailed("set channel package", err)
	}
	if g.jsonOutput() {
		return printJSON(g.stdout, ch)
	}
	fmt.Fprintf(g.stdout, "channel %s now offers %s\n", ch.Name, ch.Package)
	if len(ch.Groups) > 0 {
		fmt.Fprintf(g.stdout, "rolling out in groups: %s\n", strings.Join(ch.Groups, ", "))
	}
	return nil
}

type appOptions struct {
	app string
}

func newChannelListCmd(g *globals) *cobra.Command {
	var o appOptions
	cmd := &cobra.Command{
		Use:   "list --app APPID",
		Short: "List an application's channels",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runChannelList(cmd.Context(), g, o)
		},
	}
	cmd.Flags().StringVar(&o.app, "app", "", "application id (required)")
	return cmd
}

func runChannelList(ctx context.Context, g *globals, o appOptions) error {
	if err := requireFlags("app", o.app); err != nil {
		return err
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	chs, err := c.ListChannels(ctx, o.app)
	if err != nil {
		return apiFailed("list channels", err)
	}
	if g.jsonOutput() {
		if chs == nil {
			chs = []v1.Channel{}
		}
		return printJSON(g.stdout, chs)
	}
	t := newTable(g.stdout, "NAME", "PACKAGE", "GROUPS", "UPDATED")
	for _, ch := range chs {
		t.row(ch.Name, ch.Package, strings.Join(ch.Groups, ","), ago(ch.UpdatedAt))
	}
	return t.flush()
}

func newChannelShowCmd(g *globals) *cobra.Command {
	var o channelOptions
	cmd := &cobra.Command{
		Use:   "show --app APPID --name NAME",
		Short: "Show a channel",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runChannelShow(cmd.Context(), g, o)
		},
	}
	o.bind(cmd)
	return cmd
}

func runChannelShow(ctx context.Context, g *globals, o channelOptions) error {
	if err := requireFlags("app", o.app, "name", o.name); err != nil {
		return err
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	ch, err := c.GetChannel(ctx, o.app, o.name)
	if err != nil {
		return apiFailed("show channel", err)
	}
	if g.jsonOutput() {
		return printJSON(g.stdout, ch)
	}
	f := newFields(g.stdout)
	f.add("App", ch.AppID)
	f.add("Name", ch.Name)
	f.add("Package", ch.Package)
	f.add("Groups", strings.Join(ch.Groups, ", "))
	f.add("Updated", timestamp(ch.UpdatedAt))
	f.add("Created", timestamp(ch.CreatedAt))
	return f.flush()
}

func newChannelDeleteCmd(g *globals) *cobra.Command {
	var o channelOptions
	cmd := &cobra.Command{
		Use:   "delete --app APPID --name NAME",
		Short: "Delete a channel (no group may follow it)",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runChannelDelete(cmd.Context(), g, o)
		},
	}
	o.bind(cmd)
	return cmd
}

func runChannelDelete(ctx context.Context, g *globals, o channelOptions) error {
	if err := requireFlags("app", o.app, "name", o.name); err != nil {
		return err
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	if err := c.DeleteChannel(ctx, o.app, o.name); err != nil {
		return apiFailed("delete channel", err)
	}
	if !g.jsonOutput() {
		fmt.Fprintf(g.stdout, "channel %s deleted\n", o.name)
	}
	return nil
}
