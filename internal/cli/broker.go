package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/linkedge/linkedge/broker"
)

// brokerFlags holds the `linkedge broker` flags; each one that is set
// overrides the same field of the --config file.
type brokerFlags struct {
	config    string
	listen    string
	data      string
	http      string
	users     string
	tlsCert   string
	tlsKey    string
	tlsCA     string
	tlsBind   bool
	maxExpiry time.Duration
	profile   string
}

func newBrokerCmd() *cobra.Command {
	var f brokerFlags
	cmd := &cobra.Command{
		Use:   "broker",
		Short: "Run the fleet MQTT broker (persistent sessions, long expiry, auth/ACL, metrics)",
		Long: `Broker runs the MQTT broker (MQTT 3.1.1 and 5) that connects the cloud publisher
to the fleet. It is built for trucks that are offline for weeks:

  - messages, retained messages and the sessions of disconnected trucks are kept
    for --max-expiry (default 90 days);
  - with --data, retained messages, persistent sessions (clean-session=false),
    their subscriptions and their queued QoS 1/2 messages survive a restart;
  - with --users, clients must log in, and each user's role limits its topics:
      publisher  publishes linkedge/v1/models/#, linkedge/v1/trucks/+/desired and
                 linkedge/v1/trucks/+/grant, reads all
      truck      publishes its status, events, predictions/+ and grant-request under
                 linkedge/v1/trucks/{id}/, reads linkedge/v1/models/# and its desired and
                 grant topics (username = truck id, client id linkedge-truck-{id})
      operator   reads linkedge/v1/#
    Without --users anyone may connect, and a warning is logged unless the broker
    only listens on loopback.

  GET /healthz   200 {"status":"ok",...} while serving, 503 while shutting down
  GET /metrics   Prometheus metrics (linkedge_broker_*, go_*, process_*)

Flags override the optional --config YAML file, whose keys are listen, data_dir,
max_message_expiry, http_listen, tls_cert, tls_key, tls_client_ca, tls_bind_username, users_file,
close_timeout, max_packet_size, max_retained_per_user, truck_messages_per_second,
truck_message_burst, truck_bytes_per_second, truck_byte_burst, max_queued_bytes,
max_queued_bytes_per_truck, session_expiry and profile (unknown keys are errors). --profile aws-iot-core enforces AWS IoT Core's message-broker limits (8 filters
per SUBSCRIBE, 7 slashes per topic, 128 KB payloads, QoS 0/1, keep-alive 30-1200 s, 100
unacknowledged messages per client, sessions kept 1 h) and makes a truck's client id its
username, its thing name (docs/aws-iot-core.md). SIGINT or
SIGTERM disconnects clients, flushes storage and exits.`,
		Example: `  linkedge broker
  linkedge broker --listen 0.0.0.0:1883 --data /var/lib/linkedge/broker --users users.yaml
  linkedge broker --config broker.yaml --tls-cert server.pem --tls-key server-key.pem
  linkedge broker --http "" --max-expiry 720h
  linkedge broker --profile aws-iot-core --users users.yaml
  printf '%s' "$PASSWORD" | linkedge broker hash-password`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := brokerConfig(cmd, f)
			if err != nil {
				return err
			}
			return runBroker(cmd.Context(), cfg)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.config, "config", "", "YAML config file; flags given on the command line override it")
	fl.StringVar(&f.listen, "listen", broker.DefaultListen, "MQTT listen address; port 0 picks a free port")
	fl.StringVar(&f.data, "data", "", "directory for persistent storage (in memory only when empty)")
	fl.StringVar(&f.http, "http", broker.DefaultHTTPListen, `health and metrics listen address ("" disables)`)
	fl.StringVar(&f.users, "users", "", "users file: YAML with bcrypt password hashes and roles (anonymous when empty)")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate for MQTT over TLS (needs --tls-key)")
	fl.StringVar(&f.tlsKey, "tls-key", "", "PEM private key for MQTT over TLS (needs --tls-cert)")
	fl.StringVar(&f.tlsCA, "tls-client-ca", "", "PEM CA file: require client certificates signed by it (mutual TLS; needs --tls-cert)")
	fl.BoolVar(&f.tlsBind, "tls-bind-username", false, "with --tls-client-ca and --users: a client certificate logs in only as the user its common name (or a DNS name) names")
	fl.DurationVar(&f.maxExpiry, "max-expiry", broker.DefaultMaxMessageExpiry,
		"how long undelivered and retained messages and offline sessions are kept")
	fl.StringVar(&f.profile, "profile", "", `enforce a managed broker's limits: "aws-iot-core" (none when empty)`)
	cmd.AddCommand(newBrokerHashPasswordCmd())
	return cmd
}

// brokerConfig layers the command-line flags that were set over the config
// file (or the defaults when there is none).
func brokerConfig(cmd *cobra.Command, f brokerFlags) (broker.Config, error) {
	cfg := broker.DefaultConfig()
	if f.config != "" {
		var err error
		if cfg, err = broker.LoadConfig(f.config); err != nil {
			return broker.Config{}, err
		}
	}
	override(cmd, "listen", &cfg.Listen, f.listen)
	override(cmd, "data", &cfg.DataDir, f.data)
	override(cmd, "http", &cfg.HTTPListen, f.http)
	override(cmd, "users", &cfg.UsersFile, f.users)
	override(cmd, "tls-cert", &cfg.TLSCert, f.tlsCert)
	override(cmd, "tls-key", &cfg.TLSKey, f.tlsKey)
	override(cmd, "tls-client-ca", &cfg.TLSClientCA, f.tlsCA)
	override(cmd, "tls-bind-username", &cfg.TLSBindUsername, f.tlsBind)
	override(cmd, "max-expiry", &cfg.MaxMessageExpiry, f.maxExpiry)
	override(cmd, "profile", &cfg.Profile, broker.Profile(f.profile))
	cfg.Logger = slog.Default()
	return cfg, cfg.Validate()
}

// runBroker serves until ctx is cancelled, then shuts down gracefully.
func runBroker(ctx context.Context, cfg broker.Config) error {
	if ctx == nil {
		ctx = context.Background()
	}
	b, err := broker.New(cfg)
	if err != nil {
		return err
	}
	// A standalone broker is the only thing in its process, so the Go and
	// process metrics can go into its registry without clashing.
	b.Registry().MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if err := b.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	cfg.Logger.Info("shutting down mqtt broker")
	return b.Close()
}

func newBrokerHashPasswordCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "hash-password",
		Short: "Print the bcrypt hash of a password read from standard input, for a users file",
		Long: `Hash-password reads one password from standard input (up to the first newline),
and prints its bcrypt hash for the password_hash field of a broker users file:

  users:
    - username: truck-042
      password_hash: "$2a$10$..."
      role: truck

The password is read from standard input rather than an argument so that it
does not end up in shell history or the process list. Passwords longer than
72 bytes are refused, because bcrypt would silently ignore the rest.`,
		Example: `  printf '%s' "$TRUCK_PASSWORD" | linkedge broker hash-password
  linkedge broker hash-password < password.txt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pw, err := readBrokerPassword(cmd.InOrStdin())
			if err != nil {
				return err
			}
			hash, err := broker.HashPassword(pw)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), hash)
			return err
		},
	}
}

// readBrokerPassword returns the first line of r without its line ending.
func readBrokerPassword(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password: %w", err)
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("no password on standard input")
	}
	return line, nil
}
