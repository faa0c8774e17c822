package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	v1 "github.com/flotilla/flotilla/api/v1"
)

func newTokenCmd(g *globals) *cobra.Command {
	return parentCmd("token", "Manage API tokens (admin only)",
		newTokenCreateCmd(g), newTokenListCmd(g), newTokenDeleteCmd(g))
}

type tokenCreateOptions struct{ name, role string }

func newTokenCreateCmd(g *globals) *cobra.Command {
	var o tokenCreateOptions
	cmd := &cobra.Command{
		Use:     "create --name NAME [--role viewer|admin]",
		Short:   "Create an API token and print its secret (shown only once)",
		Example: `  flotilla token create --name dashboard --role viewer`,
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runTokenCreate(cmd.Context(), g, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.name, "name", "", "what the token is for (required)")
	f.StringVar(&o.role, "role", "viewer", "viewer (read-only) or admin")
	return cmd
}

func runTokenCreate(ctx context.Context, g *globals, o tokenCreateOptions) error {
	if err := requireFlags("name", o.name); err != nil {
		return err
	}
	if o.role != "viewer" && o.role != "admin" {
		return usagef("--role %q: want viewer or admin", o.role)
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	tok, err := c.CreateToken(ctx, v1.CreateToken{Name: o.name, Role: o.role})
	if err != nil {
		return apiFailed("create token", err)
	}
	if g.jsonOutput() {
		return printJSON(g.stdout, tok)
	}
	fmt.Fprintf(g.stdout, "token %s (%s, %s) created; its secret, shown only once:\n\n    %s\n\n", tok.ID, tok.Name, tok.Role, tok.Secret)
	return nil
}

func newTokenListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List API tokens (without secrets)",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			toks, err := c.ListTokens(cmd.Context())
			if err != nil {
				return apiFailed("list tokens", err)
			}
			if g.jsonOutput() {
				if toks == nil {
					toks = []v1.Token{}
				}
				return printJSON(g.stdout, toks)
			}
			t := newTable(g.stdout, "ID", "NAME", "ROLE", "CREATED")
			for _, tk := range toks {
				t.row(tk.ID, tk.Name, tk.Role, date(tk.CreatedAt))
			}
			return t.flush()
		},
	}
}

func newTokenDeleteCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID",
		Short: "Revoke an API token",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			if err := c.DeleteToken(cmd.Context(), args[0]); err != nil {
				return apiFailed("delete token", err)
			}
			if !g.jsonOutput() {
				fmt.Fprintf(g.stdout, "token %s deleted\n", args[0])
			}
			return nil
		},
	}
}
