package cli

import "github.com/spf13/cobra"

// override sets *dst to v if the flag name was given on cmd's command line.
// Every command that also reads a config file uses it, so a flag given
// beats the file and a flag left out keeps the file's value.
func override[T any](cmd *cobra.Command, name string, dst *T, v T) {
	if cmd.Flags().Changed(name) {
		*dst = v
	}
}
