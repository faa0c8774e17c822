package cli

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	v1 "github.com/flotilla/flotilla/api/v1"
)

func newLockCmd(g *globals) *cobra.Command {
	return parentCmd("lock", "Reboot coordination: who may reboot, and who is rebooting (locksmithctl's successor)",
		newLockStatusCmd(g), newLockSetMaxCmd(g), newLockConfigCmd(g), newLockLockCmd(g), newLockUnlockCmd(g))
}

func newLockStatusCmd(g *globals) *cobra.Command {
	var group string
	cmd := &cobra.Command{
		Use:   "status [--group G]",
		Short: "Show a reboot group's slots, holders (with overdue ones) and waiters; all groups without --group",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			var groups []v1.LockGroup
			if group != "" {
				lg, err := c.GetLock(cmd.Context(), group)
				if err != nil {
					return apiFailed("lock status", err)
				}
				groups = []v1.LockGroup{lg}
			} else {
				l, err := c.ListLocks(cmd.Context())
				if err != nil {
					return apiFailed("lock status", err)
				}
				groups = l.Groups
			}
			if g.jsonOutput() {
				if group != "" {
					return printJSON(g.stdout, groups[0])
				}
				return printJSON(g.stdout, v1.LockGroupList{Groups: groups})
			}
			for i, lg := range groups {
				if i > 0 {
					fmt.Fprintln(g.stdout)
				}
				printLockGroup(g, lg, len(groups) > 1)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&group, "group", "", "reboot group (default: all groups)")
	return cmd
}

// printLockGroup keeps locksmithctl's first lines ("Available: N",
// "Max: N") so scripts that parsed them keep working.
func printLockGroup(g *globals, lg v1.LockGroup, named bool) {
	if named {
		fmt.Fprintf(g.stdout, "Group: %s\n", lg.Group)
	}
	fmt.Fprintf(g.stdout, "Available: %d\nMax: %d\n", lg.Available, lg.Max)
	fmt.Fprintf(g.stdout, "Hold deadline: %s (auto-release %s)\n", lg.HoldDeadline, onOff(lg.AutoRelease))
	if len(lg.Holders) > 0 {
		fmt.Fprintln(g.stdout)
		t := newTable(g.stdout, "MACHINE ID", "PHASE", "SINCE", "BOOT ID", "TOKEN", "OVERDUE")
		for _, h := range lg.Holders {
			overdue := "-"
			if h.Overdue {
				overdue = "OVERDUE"
			}
			t.row(h.ID, h.Phase, ago(h.AcquiredAt), orDash(h.BootID), strconv.FormatInt(h.Token, 10), overdue)
		}
		t.flush()
	}
	if len(lg.Waiters) > 0 {
		fmt.Fprintln(g.stdout)
		t := newTable(g.stdout, "WAITING", "POSITION", "SINCE")
		for _, w := range lg.Waiters {
			t.row(w.ID, strconv.Itoa(w.Position), ago(w.Since))
		}
		t.flush()
	}
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newLockSetMaxCmd(g *globals) *cobra.Command {
	var group string
	cmd := &cobra.Command{
		Use:   "set-max N [--group G]",
		Short: "Set how many machines of a group may reboot at once (takes effect at once)",
		Args:  exactArgs("N"),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 0 {
				return usagef("N %q: want a number ≥ 0", args[0])
			}
			return patchLock(cmd.Context(), g, group, v1.LockGroupPatch{Max: &n}, func(old, cur v1.LockGroup) {
				fmt.Fprintf(g.stdout, "Old-Max: %d\nMax: %d\n", old.Max, cur.Max)
			})
		},
	}
	cmd.Flags().StringVar(&group, "group", "default", "reboot group")
	return cmd
}

func newLockConfigCmd(g *globals) *cobra.Command {
	var group, deadline string
	var autoRelease bool
	cmd := &cobra.Command{
		Use:   "config [--group G] [--hold-deadline D] [--auto-release=true|false]",
		Short: "Set when a holder counts as overdue, and whether overdue holders are released automatically",
		Long: `A machine keeps its reboot slot through its reboot and gives it back only
after it booted and passed its health gate. One that has not done so after
--hold-deadline is reported overdue (status, metric, activity); by default its
slot stays held, so a bad update does not spread. --auto-release=true releases
overdue slots instead.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var p v1.LockGroupPatch
			if cmd.Flags().Changed("hold-deadline") {
				if _, err := time.ParseDuration(deadline); err != nil {
					return usagef("--hold-deadline %q: want a duration such as 30m", deadline)
				}
				p.HoldDeadline = &deadline
			}
			if cmd.Flags().Changed("auto-release") {
				p.AutoRelease = &autoRelease
			}
			if p.HoldDeadline == nil && p.AutoRelease == nil {
				return usagef("nothing to change: give --hold-deadline or --auto-release")
			}
			return patchLock(cmd.Context(), g, group, p, func(_, cur v1.LockGroup) { printLockGroup(g, cur, true) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&group, "group", "default", "reboot group")
	f.StringVar(&deadline, "hold-deadline", "", "holders older than this are overdue, e.g. 30m")
	f.BoolVar(&autoRelease, "auto-release", false, "release overdue holders automatically")
	return cmd
}

func patchLock(ctx context.Context, g *globals, group string, p v1.LockGroupPatch, show func(old, cur v1.LockGroup)) error {
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	old, err := c.GetLock(ctx, group)
	if err != nil {
		return apiFailed("lock", err)
	}
	cur, err := c.PatchLock(ctx, group, p)
	if err != nil {
		return apiFailed("lock", err)
	}
	if g.jsonOutput() {
		return printJSON(g.stdout, cur)
	}
	show(old, cur)
	return nil
}

func newLockLockCmd(g *globals) *cobra.Command {
	var group string
	cmd := &cobra.Command{
		Use:   "lock ID [--group G]",
		Short: "Take a reboot slot for a machine (it then holds it like after a grant)",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			lg, err := c.LockSlot(cmd.Context(), group, args[0])
			if err != nil {
				return apiFailed("lock", err)
			}
			if g.jsonOutput() {
				return printJSON(g.stdout, lg)
			}
			fmt.Fprintf(g.stdout, "%s holds a slot in group %s (%d available)\n", args[0], lg.Group, lg.Available)
			return nil
		},
	}
	cmd.Flags().StringVar(&group, "group", "default", "reboot group")
	return cmd
}

func newLockUnlockCmd(g *globals) *cobra.Command {
	var group string
	cmd := &cobra.Command{
		Use:   "unlock ID [--group G]",
		Short: "Release a machine's reboot slot (admin; for a machine that will not come back)",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			if err := c.UnlockSlot(cmd.Context(), group, args[0]); err != nil {
				return apiFailed("unlock", err)
			}
			fmt.Fprintf(g.stdout, "released the slot of %s in group %s\n", args[0], group)
			return nil
		},
	}
	cmd.Flags().StringVar(&group, "group", "default", "reboot group")
	return cmd
}
