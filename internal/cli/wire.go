package cli

import "github.com/spf13/cobra"

// addLaterCommands adds the fleet commands (broker, keys, publisher, agent,
// demo) to root.
func addLaterCommands(root *cobra.Command) {}

// addToolkitTrainCommands adds the APS demo model commands under toolkit.
func addToolkitTrainCommands(toolkit *cobra.Command) {}

func newBenchCmd() *cobra.Command {
	return &cobra.Command{Use: "bench", Short: "Measure inference and fleet performance"}
}
