package cli

import "github.com/spf13/cobra"

// clientCommands returns the operator commands that talk to a server's
// REST API (app, package, channel, group, instance, activity, …).
func clientCommands(g *globals) []*cobra.Command {
	return []*cobra.Command{
		newAppCmd(g),
		newPackageCmd(g),
		newChannelCmd(g),
		newGroupCmd(g),
		newInstanceCmd(g),
		newActivityCmd(g),
		newTokenCmd(g),
		newErrorCodeCmd(g),
		newLockCmd(g),
	}
}
