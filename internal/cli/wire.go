package cli

import "github.com/spf13/cobra"

// addLaterCommands adds the fleet commands (broker, keys, publisher, agent,
// demo) to root.
func addLaterCommands(root *cobra.Command) {
	root.AddCommand(newKeysCmd(), newBrokerCmd(), newAgentCmd(), newPublisherCmd(), newPublishCmd(), newRegistryCmd(), newDemoCmd(), newFleetCmd(), newPinCmd(), newRolloutCmd(), newConsoleCmd())
}

// addToolkitTrainCommands adds the APS demo model commands under toolkit.
func addToolkitTrainCommands(toolkit *cobra.Command) {
	toolkit.AddCommand(newToolkitTrainCmd(), newToolkitGenCmd())
}
