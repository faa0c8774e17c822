package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	v1 "github.com/flotilla/flotilla/api/v1"
	"github.com/flotilla/flotilla/client"
	"github.com/flotilla/flotilla/internal/fleet/unitfile"
)

func newUnitCmd(g *globals) *cobra.Command {
	return parentCmd("unit", "Schedule systemd units across machines (fleetctl's successor)",
		newUnitSubmitCmd(g),
		newUnitStateCmd(g, "load", v1.UnitLoaded, "Submit if needed, then place units on machines without starting them"),
		newUnitStateCmd(g, "start", v1.UnitLaunched, "Submit if needed, then place and start units"),
		newUnitStateCmd(g, "stop", v1.UnitLoaded, "Stop units, leaving them placed (loaded)"),
		newUnitStateCmd(g, "unload", v1.UnitInactive, "Stop units and take them off their machines (they stay submitted)"),
		newUnitDestroyCmd(g), newUnitListCmd(g), newUnitListFilesCmd(g), newUnitStatusCmd(g), newUnitCatCmd(g))
}

// unitRef is a command-line argument: a unit name, or a local unit file
// whose base name is the unit's name.
type unitRef struct {
	name string
	path string // "" for a bare name
}

// Kinds of unit arguments a command takes.
const (
	namesOnly  = iota // a path stands for its base name, as in fleetctl
	namesFiles        // an existing file (or a path) is submitted
	filesOnly
)

// parseUnitArgs tells files from names. Names are validated here so that
// a typo is a usage error before any request is sent.
func parseUnitArgs(args []string, kind int) ([]unitRef, error) {
	if len(args) == 0 {
		return nil, usagef("name at least one unit")
	}
	var refs []unitRef
	for _, a := range args {
		ref := unitRef{name: filepath.Base(a)}
		if kind != namesOnly {
			if fi, err := os.Stat(a); err == nil && fi.Mode().IsRegular() || strings.Contains(a, "/") {
				ref.path = a
			}
		}
		if kind == filesOnly && ref.path == "" {
			return nil, usagef("%s: no such file (submit takes unit files)", a)
		}
		if _, err := unitfile.ParseName(ref.name); err != nil {
			return nil, usageError{err}
		}
		refs = append(refs, ref)
	}
	return refs, nil
}

// submitRef submits a file argument. For a bare instance name it submits
// the template from the working directory when there is one, as fleetctl
// did, so that `start web@{1..3}.service` works beside web@.service.
func submitRef(ctx context.Context, c *client.Client, ref unitRef, replace bool) error {
	path := ref.path
	if path == "" {
		n, _ := unitfile.ParseName(ref.name)
		if !n.IsInstance() {
			return nil
		}
		if fi, err := os.Stat(n.Template()); err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		path = n.Template()
		ref.name = n.Template()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read unit file: %w", err)
	}
	if _, err := c.SubmitUnit(ctx, ref.name, string(b), replace); err != nil {
		if ref.path == "" && client.IsConflict(err) {
			return nil // the template on the server differs; it is the one that counts
		}
		return apiFailed("submit "+ref.name, err)
	}
	return nil
}

func newUnitSubmitCmd(g *globals) *cobra.Command {
	var replace bool
	cmd := &cobra.Command{
		Use:   "submit FILE...",
		Short: "Store unit files in the cluster (desired state inactive); the file's base name is the unit's name",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			refs, err := parseUnitArgs(args, filesOnly)
			if err != nil {
				return err
			}
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			var out []v1.Unit
			for _, ref := range refs {
				b, err := os.ReadFile(ref.path)
				if err != nil {
					return fmt.Errorf("read unit file: %w", err)
				}
				u, err := c.SubmitUnit(cmd.Context(), ref.name, string(b), replace)
				if err != nil {
					if client.IsConflict(err) {
						return fmt.Errorf("submit %s: %w (use --replace to overwrite it)", ref.name, err)
					}
					return apiFailed("submit "+ref.name, err)
				}
				for _, w := range u.Warnings {
					fmt.Fprintf(g.stderr, "warning: %s: %s\n", u.Name, w)
				}
				out = append(out, u)
			}
			if g.jsonOutput() {
				return printJSON(g.stdout, v1.UnitList{Units: out})
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&replace, "replace", false, "replace a submitted unit with a different body (machines restart it)")
	return cmd
}

func newUnitStateCmd(g *globals, use, desired, short string) *cobra.Command {
	var noBlock, replace bool
	var timeout time.Duration
	submits := use == "load" || use == "start"
	cmd := &cobra.Command{
		Use:   use + " UNIT|FILE...",
		Short: short,
		Long: short + `.

Units are named as submitted ("web.service"); an instance of a submitted
template ("web@3.service" with "web@.service" submitted) is created on first
use, so 'flotilla unit start web@{1..3}.service' starts three. load and start
also take unit files, which they submit first.

By default the command waits until every unit reached the state (global
units are not waited for); --no-block returns at once.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			kind := namesOnly
			if submits {
				kind = namesFiles
			}
			refs, err := parseUnitArgs(args, kind)
			if err != nil {
				return err
			}
			if timeout <= 0 {
				return usagef("--block-timeout %s: want a positive duration", timeout)
			}
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var names []string
			for _, ref := range refs {
				if submits {
					if err := submitRef(ctx, c, ref, replace); err != nil {
						return err
					}
				}
				if _, err := c.SetUnitState(ctx, ref.name, desired); err != nil {
					return apiFailed(use+" "+ref.name, err)
				}
				names = append(names, ref.name)
			}
			if noBlock {
				return reportTriggered(ctx, g, c, use, names)
			}
			return waitUnits(ctx, g, c, use, desired, names, timeout)
		},
	}
	cmd.Flags().BoolVar(&noBlock, "no-block", false, "return once the desired state is set, without waiting")
	cmd.Flags().DurationVar(&timeout, "block-timeout", time.Minute, "give up waiting after this long")
	if submits {
		cmd.Flags().BoolVar(&replace, "replace", false, "replace submitted units whose file differs")
	}
	return cmd
}

func reportTriggered(ctx context.Context, g *globals, c *client.Client, use string, names []string) error {
	if g.jsonOutput() {
		l, err := unitsNamed(ctx, c, names)
		if err != nil {
			return err
		}
		return printJSON(g.stdout, l)
	}
	for _, n := range names {
		fmt.Fprintf(g.stdout, "Triggered unit %s %s\n", n, use)
	}
	return nil
}

// unitsNamed returns the listed units, in the order of names.
func unitsNamed(ctx context.Context, c *client.Client, names []string) (v1.UnitList, error) {
	l, err := c.ListUnits(ctx)
	if err != nil {
		return v1.UnitList{}, apiFailed("list units", err)
	}
	by := map[string]v1.Unit{}
	for _, u := range l.Units {
		by[u.Name] = u
	}
	out := v1.UnitList{Units: []v1.Unit{}}
	for _, n := range names {
		if u, ok := by[n]; ok {
			out.Units = append(out.Units, u)
		}
	}
	return out, nil
}

// waitUnits polls the unit list (one request per round, not one per
// unit) until every named unit's current state is desired. Global units
// are announced but not waited for: they have no single target.
func waitUnits(ctx context.Context, g *globals, c *client.Client, use, desired string, names []string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pending := map[string]bool{}
	for _, n := range names {
		pending[n] = true
	}
	machines := map[string]v1.Machine{}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var last v1.UnitList
	for {
		l, err := unitsNamed(ctx, c, names)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return err
		}
		last = l
		for _, u := range l.Units {
			if !pending[u.Name] || u.CurrentState != desired && !u.Global {
				continue
			}
			delete(pending, u.Name)
			if g.jsonOutput() {
				continue
			}
			switch {
			case u.Global:
				fmt.Fprintf(g.stdout, "Triggered global unit %s %s\n", u.Name, use)
			case desired == v1.UnitInactive || len(u.Machines) == 0:
				fmt.Fprintf(g.stdout, "Unit %s %s\n", u.Name, desired)
			default:
				if len(machines) == 0 {
					if ml, err := c.ListMachines(ctx); err == nil {
						for _, m := range ml.Machines {
							machines[m.ID] = m
						}
					}
				}
				m := machines[u.Machines[0]]
				fmt.Fprintf(g.stdout, "Unit %s %s on %s\n", u.Name, desired, machineLegend(u.Machines[0], m.Address, false))
			}
		}
		if len(pending) == 0 {
			if g.jsonOutput() {
				return printJSON(g.stdout, last)
			}
			return nil
		}
		if !sleepTick(ctx, tick) {
			break
		}
	}
	var why []string
	for _, u := range last.Units {
		if !pending[u.Name] {
			continue
		}
		w := fmt.Sprintf("%s is %s", u.Name, u.CurrentState)
		if u.Unschedulable != "" {
			w += " (unschedulable: " + u.Unschedulable + ")"
		}
		why = append(why, w)
	}
	sort.Strings(why)
	return fmt.Errorf("%s: not %s within %s: %s", use, desired, timeout, strings.Join(why, "; "))
}

// sleepTick waits for the next tick; false when ctx ended first.
func sleepTick(ctx context.Context, t *time.Ticker) bool {
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// legendTable is newTable whose header row --no-legend leaves out, for
// scripts that parse fleetctl-style output.
func legendTable(g *globals, noLegend bool, headers ...string) *table {
	if !noLegend {
		return newTable(g.stdout, headers...)
	}
	return &table{tw: tabwriter.NewWriter(g.stdout, 0, 0, 3, ' ', 0)}
}

// machineLegend is fleet's "113f16a7.../172.17.8.103": a short id unless
// full, and the address when known.
func machineLegend(id, addr string, full bool) string {
	if !full && len(id) > 8 {
		id = id[:8] + "..."
	}
	if addr != "" {
		return id + "/" + addr
	}
	return id
}

func newUnitDestroyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "destroy UNIT...",
		Short: "Delete units from the cluster; their machines stop them",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			refs, err := parseUnitArgs(args, namesOnly)
			if err != nil {
				return err
			}
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			var failed []error
			for _, ref := range refs {
				if err := c.DestroyUnit(cmd.Context(), ref.name); err != nil {
					failed = append(failed, apiFailed("destroy "+ref.name, err))
					continue
				}
				if !g.jsonOutput() {
					fmt.Fprintf(g.stdout, "Destroyed %s\n", ref.name)
				}
			}
			return errors.Join(failed...)
		},
	}
}

func newUnitListCmd(g *globals) *cobra.Command {
	var full, noLegend bool
	var machine string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"list-units"},
		Short:   "List the units machines run, as their agents report them (UNIT MACHINE ACTIVE SUB)",
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			sl, err := c.ListUnitStates(cmd.Context(), "", machine)
			if err != nil {
				return apiFailed("list units", err)
			}
			if g.jsonOutput() {
				return printJSON(g.stdout, sl)
			}
			addrs, err := machineAddrs(cmd.Context(), c)
			if err != nil {
				return err
			}
			t := legendTable(g, noLegend, "UNIT", "MACHINE", "LOAD", "ACTIVE", "SUB")
			for _, s := range sl.States {
				t.row(s.Unit, machineLegend(s.Machine, addrs[s.Machine], full), s.Load, s.Active, s.Sub)
			}
			return t.flush()
		},
	}
	cmd.Flags().BoolVarP(&full, "full", "l", false, "show full machine ids")
	cmd.Flags().BoolVar(&noLegend, "no-legend", false, "leave out the header row")
	cmd.Flags().StringVar(&machine, "machine", "", "only units on this machine (full id)")
	return cmd
}

func machineAddrs(ctx context.Context, c *client.Client) (map[string]string, error) {
	ml, err := c.ListMachines(ctx)
	if err != nil {
		return nil, apiFailed("list machines", err)
	}
	out := map[string]string{}
	for _, m := range ml.Machines {
		out[m.ID] = m.Address
	}
	return out, nil
}

func newUnitListFilesCmd(g *globals) *cobra.Command {
	var full, noLegend bool
	cmd := &cobra.Command{
		Use:     "list-files",
		Aliases: []string{"list-unit-files"},
		Short:   "List submitted units with desired and current state and target machine (UNIT HASH DSTATE STATE TARGET)",
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			l, err := c.ListUnits(cmd.Context())
			if err != nil {
				return apiFailed("list unit files", err)
			}
			if g.jsonOutput() {
				return printJSON(g.stdout, l)
			}
			addrs, err := machineAddrs(cmd.Context(), c)
			if err != nil {
				return err
			}
			t := legendTable(g, noLegend, "UNIT", "HASH", "DSTATE", "STATE", "TARGET")
			for _, u := range l.Units {
				hash := u.Hash
				if !full && len(hash) > 7 {
					hash = hash[:7]
				}
				t.row(u.Name, hash, u.DesiredState, u.CurrentState, unitTarget(u, addrs, full))
			}
			return t.flush()
		},
	}
	cmd.Flags().BoolVarP(&full, "full", "l", false, "show full hashes and machine ids")
	cmd.Flags().BoolVar(&noLegend, "no-legend", false, "leave out the header row")
	return cmd
}

// unitTarget is list-files' TARGET cell: "global", the machine, or why the
// unit has none.
func unitTarget(u v1.Unit, addrs map[string]string, full bool) string {
	switch {
	case u.Template:
		return "template"
	case u.Global:
		return "global"
	case u.Unschedulable != "":
		return "unschedulable"
	case len(u.Machines) == 0:
		return "-"
	}
	var ms []string
	for _, m := range u.Machines {
		ms = append(ms, machineLegend(m, addrs[m], full))
	}
	return strings.Join(ms, ",")
}

func newUnitStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status UNIT...",
		Short: "Show where units are placed, what their machines report, and why a unit cannot be placed",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			refs, err := parseUnitArgs(args, namesOnly)
			if err != nil {
				return err
			}
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			var us []v1.Unit
			for _, ref := range refs {
				u, err := c.GetUnit(cmd.Context(), ref.name)
				if err != nil {
					return apiFailed("status "+ref.name, err)
				}
				us = append(us, u)
			}
			if g.jsonOutput() {
				return printJSON(g.stdout, v1.UnitList{Units: us})
			}
			addrs, err := machineAddrs(cmd.Context(), c)
			if err != nil {
				return err
			}
			for i, u := range us {
				if i > 0 {
					fmt.Fprintln(g.stdout)
				}
				printUnitStatus(g, u, addrs)
			}
			return nil
		},
	}
}

func printUnitStatus(g *globals, u v1.Unit, addrs map[string]string) {
	f := newFields(g.stdout)
	f.add("Unit", u.Name)
	f.add("Hash", u.Hash)
	f.add("Desired state", u.DesiredState)
	f.add("Current state", u.CurrentState)
	f.add("Target", unitTarget(u, addrs, true))
	if u.Unschedulable != "" {
		f.add("Unschedulable", u.Unschedulable)
	}
	f.add("Submitted", timestamp(u.SubmittedAt))
	_ = f.flush()
	if len(u.States) == 0 {
		return
	}
	fmt.Fprintln(g.stdout)
	t := newTable(g.stdout, "MACHINE", "LOAD", "ACTIVE", "SUB", "STARTS", "REPORTED", "MESSAGE")
	for _, s := range u.States {
		t.row(machineLegend(s.Machine, addrs[s.Machine], true), s.Load, s.Active, s.Sub, fmt.Sprint(s.Starts), ago(s.At), s.Message)
	}
	_ = t.flush()
}

func newUnitCatCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "cat UNIT",
		Short: "Print a unit file as submitted",
		Args:  exactArgs("UNIT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := unitfile.ParseName(args[0]); err != nil {
				return usageError{err}
			}
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			if g.jsonOutput() {
				u, err := c.GetUnit(cmd.Context(), args[0])
				if err != nil {
					return apiFailed("cat "+args[0], err)
				}
				return printJSON(g.stdout, u)
			}
			body, err := c.UnitFile(cmd.Context(), args[0])
			if err != nil {
				return apiFailed("cat "+args[0], err)
			}
			fmt.Fprint(g.stdout, body)
			if body != "" && !strings.HasSuffix(body, "\n") {
				fmt.Fprintln(g.stdout)
			}
			return nil
		},
	}
}
