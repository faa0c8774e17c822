package cli

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"
)

func newMachineCmd(g *globals) *cobra.Command {
	return parentCmd("machine", "Machines that run units (registered by 'flotilla agent --units')", newMachineListCmd(g))
}

func newMachineListCmd(g *globals) *cobra.Command {
	var full, noLegend, all bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"list-machines"},
		Short:   "List machines with address, metadata and state (alive, unknown, lost); lost ones only with --all",
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			ml, err := c.ListMachines(cmd.Context())
			if err != nil {
				return apiFailed("list machines", err)
			}
			if g.jsonOutput() {
				return printJSON(g.stdout, ml)
			}
			t := legendTable(g, noLegend, "MACHINE", "ADDRESS", "METADATA", "STATE", "UNITS")
			for _, m := range ml.Machines {
				if m.State == "lost" && !all {
					continue
				}
				id := m.ID
				if !full && len(id) > 8 {
					id = id[:8] + "..."
				}
				state := m.State
				if m.Draining {
					state += ",draining"
				}
				t.row(id, m.Address, metadataString(m.Metadata), state, fmt.Sprint(m.Units))
			}
			return t.flush()
		},
	}
	cmd.Flags().BoolVarP(&full, "full", "l", false, "show full machine ids")
	cmd.Flags().BoolVar(&noLegend, "no-legend", false, "leave out the header row")
	cmd.Flags().BoolVar(&all, "all", false, "include lost machines (gone longer than the grace period)")
	return cmd
}

// metadataString is fleet's "k=v,k2=v2", keys sorted.
func metadataString(md map[string]string) string {
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+md[k])
	}
	return strings.Join(parts, ",")
}
