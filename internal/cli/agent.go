package cli

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/linkedge/linkedge/edgeclient"
)

func newAgentCmd() *cobra.Command {
	var cfgPath string
	var over edgeclient.Config
	cmd := &cobra.Command{
		Use:   "agent --config truck.yaml",
		Short: "Run the truck agent: pull signed model releases when online, serve locally always",
		Long: `The agent keeps one model current on a truck. Whenever the fleet broker is reachable it
receives signed releases, downloads the bundle (resuming across disconnects and restarts),
verifies size, sha256 and golden samples, switches to it without failing a request, and
rolls back if the new version misbehaves during probation. It reports its status, retained,
on linkedge/v1/trucks/{truck}/status.

It serves the model locally whether online or not: HTTP on the stable port (SageMaker
contract and Open Inference Protocol v2, as "linkedge serve"), and MQTT on its embedded
local broker: readings on linkedge/v1/local/{model}/readings, predictions on .../predictions.

Flags override the config file. See docs/agent.md for every setting.`,
		Example: `  linkedge agent --config /etc/linkedge/truck.yaml
  linkedge agent --truck truck-7 --model aps-failure --fleet tcp://fleet:1883 \
      --trusted-key /etc/linkedge/publisher.pub --data /var/lib/linkedge`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var cfg edgeclient.Config
			if cfgPath != "" {
				var err error
				if cfg, err = edgeclient.LoadConfig(cfgPath); err != nil {
					return err
				}
			}
			override(cmd, "truck", &cfg.Truck, over.Truck)
			override(cmd, "model", &cfg.Model, over.Model)
			override(cmd, "fleet", &cfg.Fleet.Broker, over.Fleet.Broker)
			override(cmd, "trusted-key", &cfg.TrustedKeys, over.TrustedKeys)
			override(cmd, "data", &cfg.DataDir, over.DataDir)
			override(cmd, "http", &cfg.HTTP, over.HTTP)
			override(cmd, "local-broker", &cfg.LocalBroker.Listen, over.LocalBroker.Listen)
			override(cmd, "probation", &cfg.Probation, over.Probation)
			override(cmd, "tls-ca", &cfg.Fleet.TLS.CAFile, over.Fleet.TLS.CAFile)
			override(cmd, "tls-cert", &cfg.Fleet.TLS.CertFile, over.Fleet.TLS.CertFile)
			override(cmd, "tls-key", &cfg.Fleet.TLS.KeyFile, over.Fleet.TLS.KeyFile)
			cfg.Logger = slog.Default()
			a, err := edgeclient.New(cfg)
			if err != nil {
				return err
			}
			if err := a.Start(cmd.Context()); err != nil {
				return err
			}
			defer a.Close()
			slog.Info("agent running", "truck", cfg.Truck, "http", a.HTTPAddr(), "local_broker", a.LocalBrokerAddr())
			<-cmd.Context().Done()
			fmt.Fprintln(cmd.ErrOrStderr(), "agent stopping")
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cfgPath, "config", "", "agent config file (YAML, strictly decoded)")
	fl.StringVar(&over.Truck, "truck", "", "truck id")
	fl.StringVar(&over.Model, "model", "", "model to keep current")
	fl.StringVar(&over.Fleet.Broker, "fleet", "", "fleet broker URL, e.g. tcp://127.0.0.1:1883")
	fl.StringSliceVar(&over.TrustedKeys, "trusted-key", nil, "publisher public key file (repeatable)")
	fl.StringVar(&over.DataDir, "data", "", "state folder (default /var/lib/linkedge)")
	fl.StringVar(&over.HTTP, "http", "", "local inference address (default 127.0.0.1:8080)")
	fl.StringVar(&over.LocalBroker.Listen, "local-broker", "", `embedded local broker address (default 127.0.0.1:1883; "off" to disable)`)
	fl.DurationVar(&over.Probation, "probation", 0, "how long a new version serves before it is committed (default 10s)")
	fl.StringVar(&over.Fleet.TLS.CAFile, "tls-ca", "", "PEM CA file to trust for an ssl:// fleet broker and HTTPS downloads, besides the system roots (fleet.tls.ca_file)")
	fl.StringVar(&over.Fleet.TLS.CertFile, "tls-cert", "", "the truck's PEM client certificate, for a broker that requires mutual TLS (fleet.tls.cert_file)")
	fl.StringVar(&over.Fleet.TLS.KeyFile, "tls-key", "", "PEM key of --tls-cert (fleet.tls.key_file)")
	return cmd
}
