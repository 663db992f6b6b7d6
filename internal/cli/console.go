package cli

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/linkedge/linkedge/internal/console"
	"github.com/linkedge/linkedge/internal/fleetview"
)

func newConsoleCmd() *cobra.Command {
	var (
		f                   publisherFlags
		listen, users       string
		audit               string
		httpsCert, httpsKey string
		pageSize            int
	)
	cmd := &cobra.Command{
		Use:   "console",
		Short: "Serve the fleet console: a live web page of every truck and release, with the operator's actions",
		Long: `Console serves a web page that shows the fleet as "linkedge fleet" reads it from the
broker (the same code): each model's release, and every truck's version, update phase,
download progress, alerts, last error and when it was last seen, live (server-sent
events), paged and filtered by model, version, phase, online and name. An offline truck
keeps its last known state, marked offline with how long ago. A truck's page adds the
events the console heard; a model's page the staged rollout and who halted it, a chart
of trucks per version over time, and the registry.

Who may log in is in --users: a YAML file like the broker's (username, password_hash
from "linkedge broker hash-password", role), with the roles viewer (looks) and operator
(also acts). An operator can approve and reject versions in the local registry (with
--registry, as "linkedge registry" does) and pin or unpin a truck (with --registry and
--key, as "linkedge pin" does; the MQTT account then needs the publisher role), and halt
or resume a staged rollout (with --registry or --state, as "linkedge rollout" does). Every
action is confirmed on a page of its own and appended to --audit-log (JSON lines: who,
what, when, result) before and after it runs.

It listens on 127.0.0.1 unless --listen says otherwise, and warns when it listens beyond
loopback without --https-cert. See docs/console.md.`,
		Example: `  linkedge console --broker tcp://127.0.0.1:1883 --users console-users.yaml
  linkedge console --config /etc/linkedge/publisher.yaml --users /etc/linkedge/console-users.yaml \
      --audit-log /var/log/linkedge/console-audit.jsonl
  linkedge console --config publisher.yaml --users users.yaml --listen 0.0.0.0:9890 \
      --https-cert console.pem --https-key console-key.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			pcfg, err := f.publisherConfig(cmd)
			if err != nil {
				return err
			}
			if pcfg.Broker == "" {
				pcfg.Broker = "tcp://127.0.0.1:1883"
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			cfg := console.Config{
				Listen: listen, TLSCert: httpsCert, TLSKey: httpsKey, UsersFile: users, AuditLog: audit, PageSize: pageSize,
				Fleet:  fleetview.Config{Broker: pcfg.Broker, Username: pcfg.Username, Password: pcfg.Password, TLS: pcfg.TLS},
				Logger: pcfg.Logger, Metrics: reg,
			}
			if pcfg.RegistryDir != "" || pcfg.KeyFile != "" || pcfg.StateFile != "" {
				cfg.Actions = &pcfg
			}
			s, err := console.New(cfg)
			if err != nil {
				return err
			}
			defer s.Close()
			if err := s.Start(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "fleet console: %s\n", s.URL())
			<-cmd.Context().Done()
			return nil
		},
	}
	f.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&listen, "listen", console.DefaultListen, "address to serve on; beyond loopback, give it --https-cert")
	fl.StringVar(&users, "users", "", "users file: username, bcrypt password_hash, role viewer or operator (required)")
	fl.StringVar(&audit, "audit-log", "console-audit.jsonl", "file every action is appended to (JSON lines)")
	fl.StringVar(&httpsCert, "https-cert", "", "PEM certificate to serve HTTPS with")
	fl.StringVar(&httpsKey, "https-key", "", "PEM key of --https-cert")
	fl.IntVar(&pageSize, "page-size", console.DefaultPageSize, fmt.Sprintf("trucks per page (at most %d)", console.MaxPageSize))
	_ = cmd.MarkFlagRequired("users")
	return cmd
}
