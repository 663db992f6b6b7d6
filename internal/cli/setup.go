package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/ortlib"
)

func newSetupCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "setup",
		Short: "Fetch and check the ONNX Runtime library (once per machine)",
		Long: `Setup finds the ONNX Runtime shared library ($ONNXRUNTIME_LIB, then the cache under
$LINKEDGE_CACHE or the user cache dir) and, when it is missing, fetches it with
"npm pack onnxruntime-node@` + ortlib.Version + `" and caches it. Then it starts the runtime
once to prove the library loads. Every command that needs the runtime does the same on
its own; run this ahead of time on machines that will later be offline.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := ortlib.Ensure(cmd.Context(), nil)
			if err != nil {
				return err
			}
			if err := inference.Init(cmd.Context(), p); err != nil {
				return err
			}
			_, ver := inference.RuntimeInfo()
			fmt.Fprintf(cmd.OutOrStdout(), "onnx runtime %s ready at %s\n", ver, p)
			return nil
		},
	}
}
