package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	v1 "github.com/flotilla/flotilla/api/v1"
	"github.com/flotilla/flotilla/client"
)

func newAppCmd(g *globals) *cobra.Command {
	return parentCmd("app", "Manage applications (Omaha app ids)",
		newAppCreateCmd(g), newAppListCmd(g), newAppShowCmd(g), newAppUpdateCmd(g), newAppDeleteCmd(g))
}

type appCreateOptions struct {
	id, name, description string
}

func newAppCreateCmd(g *globals) *cobra.Command {
	var o appCreateOptions
	cmd := &cobra.Command{
		Use:     "create --id APPID --name NAME",
		Short:   "Create an application",
		Example: `  flotilla app create --id e96281a6-d1af-4bde-9a0a-97b76e56dc57 --name "Flatcar Container Linux"`,
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAppCreate(cmd.Context(), g, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.id, "id", "", "Omaha app id, a UUID (required)")
	f.StringVar(&o.name, "name", "", "display name (required)")
	f.StringVar(&o.description, "description", "", "free-form description")
	return cmd
}

func runAppCreate(ctx context.Context, g *globals, o appCreateOptions) error {
	if err := requireFlags("id", o.id, "name", o.name); err != nil {
		return err
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	app, err := c.CreateApp(ctx, v1.App{ID: o.id, Name: o.name, Description: o.description})
	if err != nil {
		return apiFailed("create app", err)
	}
	if g.jsonOutput() {
		return printJSON(g.stdout, app)
	}
	fmt.Fprintf(g.stdout, "app %s created\n", app.ID)
	return nil
}

func newAppListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List applications",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAppList(cmd.Context(), g)
		},
	}
}

func runAppList(ctx context.Context, g *globals) error {
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	apps, err := c.ListApps(ctx)
	if err != nil {
		return apiFailed("list apps", err)
	}
	if g.jsonOutput() {
		if apps == nil {
			apps = []v1.App{}
		}
		return printJSON(g.stdout, apps)
	}
	t := newTable(g.stdout, "ID", "NAME", "DESCRIPTION", "CREATED")
	for _, a := range apps {
		t.row(a.ID, a.Name, a.Description, date(a.CreatedAt))
	}
	return t.flush()
}

func newAppShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show APPID",
		Short: "Show an application",
		Args:  exactArgs("APPID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runAppShow(cmd.Context(), g, args[0])
		},
	}
}

func runAppShow(ctx context.Context, g *globals, appID string) error {
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	app, err := c.GetApp(ctx, appID)
	if err != nil {
		return apiFailed("show app", err)
	}
	if g.jsonOutput() {
		return printJSON(g.stdout, app)
	}
	return printApp(g, app)
}

func printApp(g *globals, app v1.App) error {
	f := newFields(g.stdout)
	f.add("ID", app.ID)
	f.add("Name", app.Name)
	f.add("Description", app.Description)
	f.add("Created", timestamp(app.CreatedAt))
	return f.flush()
}

type appUpdateOptions struct {
	id                string
	name, description string
	setName, setDesc  bool
}

func newAppUpdateCmd(g *globals) *cobra.Command {
	var o appUpdateOptions
	cmd := &cobra.Command{
		Use:   "update APPID [--name NAME] [--description TEXT]",
		Short: "Change an application's name or description",
		Args:  exactArgs("APPID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.id = args[0]
			o.setName = cmd.Flags().Changed("name")
			o.setDesc = cmd.Flags().Changed("description")
			return runAppUpdate(cmd.Context(), g, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.name, "name", "", "new display name")
	f.StringVar(&o.description, "description", "", "new description")
	return cmd
}

func runAppUpdate(ctx context.Context, g *globals, o appUpdateOptions) error {
	var p client.AppPatch
	if o.setName {
		if o.name == "" {
			return usagef("--name must not be empty")
		}
		p.Name = &o.name
	}
	if o.setDesc {
		p.Description = &o.description
	}
	if p.Name == nil && p.Description == nil {
		return usagef("nothing to change: pass --name or --description")
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	app, err := c.UpdateApp(ctx, o.id, p)
	if err != nil {
		return apiFailed("update app", err)
	}
	if g.jsonOutput() {
		return printJSON(g.stdout, app)
	}
	fmt.Fprintf(g.stdout, "app %s updated\n", app.ID)
	return nil
}

func newAppDeleteCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete APPID",
		Short: "Delete an application (it must have no channels, groups or packages)",
		Args:  exactArgs("APPID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runAppDelete(cmd.Context(), g, args[0])
		},
	}
}

func runAppDelete(ctx context.Context, g *globals, appID string) error {
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	if err := c.DeleteApp(ctx, appID); err != nil {
		return apiFailed("delete app", err)
	}
	if !g.jsonOutput() {
		fmt.Fprintf(g.stdout, "app %s deleted\n", appID)
	}
	return nil
}
