package cli

import (
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/linkedge/linkedge/internal/demo"
)

func newDemoCmd() *cobra.Command {
	var cfg demo.Config
	var verbose bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a whole fleet on this machine: approve v1, update the online trucks to v2, catch up an offline one",
		Long: `Demo starts, on this machine and from the real parts: the fleet MQTT broker, a local model
registry with its publisher, and trucks, each with its agent, its own local MQTT bus, sensors
replaying APS-shaped rows and an application querying the HTTP endpoint. Then:

  1. v1 of the APS failure model is approved: every truck downloads, verifies and serves it;
  2. the last truck loses its link and v2 is approved: the online trucks switch while serving,
     without a failed request; the offline truck keeps predicting on v1;
  3. the offline truck reconnects and catches up.

With --containers, on a machine with a Docker Engine, v2 runs in a serving container: the demo
builds the image from this binary (as "linkedge toolkit image" does), adds v2 to the registry
with that image pinned by digest, and the trucks, whose agents run with the container runtime,
swap from v1 in process to v2 in a container, still without a failed request.

It prints what happens as it happens (read from the fleet broker, as an operator would see it)
and a summary table, and exits 0 only if every step held. It needs no network: every server
listens on 127.0.0.1. The ONNX Runtime library is fetched once (npm) if it is not cached.`,
		Example: `  go run . demo
  linkedge demo --link-rate 20000          # a slow link, to watch downloads progress
  linkedge demo --console --link-rate 50000   # watch it in the fleet console (a browser)
  linkedge demo --containers               # v2 in a serving container (needs a Docker Engine)
  linkedge demo --broker tcp://127.0.0.1:1883   # use an external fleet broker (e.g. mosquitto)
  linkedge demo --cloud-only --dir /tmp/fleet   # the cloud side alone; attach "linkedge agent" processes`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Out = cmd.OutOrStdout()
			if !cfg.Console {
				cfg.ConsoleWait = 0
			}
			if verbose {
				cfg.Log = slog.Default()
			}
			return demo.Run(cmd.Context(), cfg)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&cfg.Trucks, "trucks", 3, "trucks in the fleet (the last one goes offline)")
	fl.StringVar(&cfg.Broker, "broker", "", "external fleet broker URL (default: an embedded one)")
	fl.StringVar(&cfg.Dir, "dir", "", "keep all state in this folder (default: a temporary one, removed)")
	fl.IntVar(&cfg.LinkRate, "link-rate", 0, "limit each truck's link to this many bytes/s")
	fl.DurationVar(&cfg.Probation, "probation", 2*time.Second, "how long a new version serves before it is committed")
	fl.BoolVar(&verbose, "verbose", false, "show every part's logs")
	fl.BoolVar(&cfg.Containers, "containers", false, "run v2 in a serving container on the local Docker Engine: an in-process to container swap")
	fl.BoolVar(&cfg.Console, "console", false, "serve the fleet console on the demo fleet, print its URL and a login, and keep it up after the story until Ctrl-C")
	fl.StringVar(&cfg.ConsoleListen, "console-listen", "127.0.0.1:9890", "address of the console with --console")
	fl.DurationVar(&cfg.ConsoleWait, "console-wait", 15*time.Second, "with --console, pause this long before the first approval, to open the page")
	fl.BoolVar(&cfg.CloudOnly, "cloud-only", false, "run only the broker, registry and publisher, for real agents to attach to (until Ctrl-C)")
	return cmd
}
