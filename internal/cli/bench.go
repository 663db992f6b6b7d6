package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/linkedge/linkedge/internal/bench"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure inference and fleet performance, and what a truck's link carries",
		Long: `Bench runs the measurements behind docs/benchmarks.md on this machine. Every run of a
suite is measured side by side, so compare the ratios between its rows: absolute numbers
move with whatever else the machine is doing. "bench link" counts bytes, which do not.`,
	}
	cmd.AddCommand(newBenchInferenceCmd(), newBenchLinkCmd(), newBenchFleetCmd(), newBenchFleetMonitorCmd(), newBenchFleetTrucksCmd(), newBenchFloorCmd())
	return cmd
}

func newBenchInferenceCmd() *cobra.Command {
	var cfg bench.InferenceConfig
	cmd := &cobra.Command{
		Use:   "inference",
		Short: "Serving throughput and latency: in-process, HTTP batched and unbatched, fixed rate",
		Long: `Inference measures, for one model bundle:

  1. the bare in-process rate: single-row calls into ONNX Runtime on GOMAXPROCS goroutines;
  2. the in-process rate through the micro-batcher at --concurrency goroutines;
  3. the HTTP floor: a net/http server that gives the same answer without parsing the
     body or running a model, under the same load as the next step;
  4. "linkedge serve" as a child process under single-row POST /invocations (text/csv)
     over --concurrency keep-alive connections, with batching on and off;
  5. the same server open-loop at --rate requests/s, for tail latency.

The load generator runs in this process on the same machine. It prints a Markdown table.`,
		Example: `  linkedge bench inference --model inference/apsmodels/aps-failure-v2.tar.gz`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Progress = os.Stderr
			rep, err := bench.RunInference(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			host, _ := os.Hostname()
			fmt.Fprintf(cmd.OutOrStdout(), "\n%s, %s/%s, %d CPUs, %s, host %s\n\n%s", time.Now().UTC().Format("2006-01-02 15:04 MST"),
				runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), host, rep.Markdown())
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cfg.Model, "model", "inference/apsmodels/aps-failure-v2.tar.gz", "model bundle to serve")
	fl.IntVar(&cfg.Concurrency, "concurrency", 32, "connections of the closed-loop runs")
	fl.DurationVar(&cfg.Duration, "duration", 10*time.Second, "measured time of each run")
	fl.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "unmeasured time before each run")
	fl.Float64Var(&cfg.Rate, "rate", 1000, "requests/s of the open-loop run")
	return cmd
}

func newBenchLinkCmd() *cobra.Command {
	var cfg bench.LinkConfig
	var logs bool
	cmd := &cobra.Command{
		Use:   "link",
		Short: "Bytes on a truck's link: idle per month, per update, per reconnect, per 1,000 alerts",
		Long: `Link measures what one truck's cellular link carries, in IP bytes, with the agent, the fleet
broker and the publisher as they are configured by default.

It runs, in this process, a fleet broker (with a users file: the truck logs in with a
username and password), a local registry with its publisher, and one truck agent whose
MQTT connection and artifact downloads both pass through counting TCP proxies on
127.0.0.1 (internal/netsim). For each transport (plain TCP, then mutual TLS with a private
fleet CA and client certificates) it goes through:

  setup       v1 is approved and installed (not measured);
  update      v2 is approved: every byte on the MQTT connection until the truck has
              committed v2 and its link is quiet for 1 s, plus the download connection's
              whole life (the agent closes it when the download ends);
  idle        the truck connected with nothing to do, over two idle cycles in the
              steady state: with a status interval of an hour or less, two status
              intervals from just after a heartbeat; with a longer one (the cellular
              profile's 24 h), from just after an MQTT keepalive ping to just after the
              second that follows (about 20 minutes with the default 10 m keepalive).
              --idle sets a window of its own instead;
  reconnect   the MQTT connection is cut for 1 s, --reconnects times: the bytes from the
              link's return until the truck is connected again and quiet for 1 s
              (handshakes, CONNECT, presence; a kept session needs no SUBSCRIBE);
  alerts      readings of failing trucks on the truck's local bus until --alerts alerts
              were forwarded, one at a time.

A proxy sees byte streams, not packets, so the bytes on the wire are estimated: every
burst the proxy passes is ceil(n/1448) segments with 52 bytes of IPv4 + TCP headers
(timestamps on; 1500-byte MTU); pure ACKs as Linux sends them (every second segment
at once, a lone one 40 ms later unless data going the other way carries it);
60-byte SYNs; FINs and resets; and TCP keepalive probes, which a proxy cannot see, from
each side's keepalive time in every silence: none on the MQTT connection (the agent and
the broker turn them off; --tcp-keepalive-* model other settings), Go's default 15 s
from the artifact server. --tcpdump also captures the truck's side of the link on lo and reports the
real IP bytes next to the estimate (lo's 64 KiB segments re-cut to 1448-byte ones).

The update, reconnect and alert figures have the idle rate times their window
subtracted, so that a heartbeat that happened to fall in the window does not count.
The idle figure is the window's rate extrapolated to 30 days, plus what the window cannot
hold, computed from the measured sizes of the documents with the same packet model: the
heartbeats when they are rarer than the window, and the release the publisher signs again
every two thirds of its release_ttl (with the status report its new serial causes).

It prints Markdown: the headline table, the settings, and a breakdown per phase.
Progress goes to stderr. With the defaults it takes about 25 minutes per transport.`,
		Example: `  linkedge bench link
  linkedge bench link --tcpdump                    # also capture on lo (root, tcpdump installed)
  linkedge bench link --transport tcp --idle 30s   # a quick look
  linkedge bench link --profile wifi               # another link profile
  linkedge bench link --status-interval 10m --keep-alive 20m   # try other agent settings`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Progress = os.Stderr
			if logs {
				cfg.Logger = slog.Default()
			}
			rep, err := bench.RunLink(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			command := cmd.CommandPath()
			cmd.Flags().Visit(func(f *pflag.Flag) { command += " --" + f.Name + "=" + f.Value.String() })
			kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
			host, _ := os.Hostname()
			fmt.Fprintf(cmd.OutOrStdout(), "\n**Command:** `%s`  \n**Machine:** %s/%s, %d CPUs, kernel %s, %s, host %s  \n**Date:** %s; the run took %s.\n\n%s",
				command, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), strings.TrimSpace(string(kernel)), runtime.Version(), host,
				time.Now().UTC().Format("2006-01-02 15:04 MST"), rep.Elapsed.Round(time.Second), rep.Markdown())
			return nil
		},
	}
	fl := cmd.Flags()
	fl.DurationVar(&cfg.Idle, "idle", 0, "idle window to measure (0: two idle cycles, see above)")
	fl.IntVar(&cfg.Reconnects, "reconnects", 3, "link cuts to measure; the table shows the median")
	fl.IntVar(&cfg.Alerts, "alerts", 100, "alerts to forward; the table scales them to 1,000")
	fl.DurationVar(&cfg.AlertGap, "alert-gap", 100*time.Millisecond, "pause after each alert is acknowledged")
	fl.IntVar(&cfg.Burst, "burst", 1000, "alerts made at once and forwarded in batches (negative: none); the table scales them to 1,000")
	fl.StringSliceVar(&cfg.Transports, "transport", []string{bench.TransportTCP, bench.TransportMTLS}, "transports to run: tcp, mtls")
	fl.BoolVar(&cfg.Tcpdump, "tcpdump", false, "also capture the truck's side of the link with tcpdump on lo, and report the real IP bytes")
	fl.StringVar(&cfg.Profile, "profile", "", "agent link.profile: cellular (the agent's default), wifi or satellite")
	fl.DurationVar(&cfg.StatusInterval, "status-interval", 0, "agent status_interval (0: the agent's default)")
	fl.DurationVar(&cfg.KeepAlive, "keep-alive", 0, "agent fleet.keep_alive, the MQTT keepalive (0: the agent's default)")
	fl.DurationVar(&cfg.Probation, "probation", 0, "agent probation (0: the agent's default); only makes the update faster")
	fl.DurationVar(&cfg.TruckTCPKeepAlive, "tcp-keepalive-truck", 0, "TCP keepalive the estimate assumes on the truck's MQTT connection (0: none, as the agent sets; Go's default would be 15s)")
	fl.DurationVar(&cfg.CloudTCPKeepAlive, "tcp-keepalive-cloud", 0, "TCP keepalive on the broker's side of the MQTT connection (0: none, as the broker sets; Go's default would be 15s)")
	fl.StringVar(&cfg.Dir, "dir", "", "folder for the parts' state (default: a temporary folder, removed)")
	fl.BoolVar(&logs, "logs", false, "show the broker's, publisher's and agent's logs (at --log-level)")
	return cmd
}

func newBenchFleetCmd() *cobra.Command {
	var cfg bench.FleetConfig
	var noStaged bool
	cmd := &cobra.Command{
		Use:   "fleet",
		Short: "A fleet of simulated trucks against a real broker and publisher: update times, CPU, memory, drops",
		Long: `Fleet starts "linkedge broker" and "linkedge publisher" (a local registry) as child
processes and --trucks simulated trucks in this process. Each simulated truck is the real
agent's fleet side: its persistent MQTT session with a last will, release signature
checks, the resumable download with its sha256 check, its status and event reports; only
the model runtime is a no-op (no ONNX Runtime, no HTTP endpoint, no local bus).

Scenarios, in order:
  connect          every truck starts (--connect-rate a second) and reports online
  update           v1 approved: every truck downloads, verifies and reports it committed
  staged rollout   the publisher restarted with --canary-percent; v2 approved: the canary
                   commits, the publisher promotes after --canary-soak, every truck commits
  broker restart   the broker stopped (SIGTERM) and started on its data: every truck
                   reconnects and reports online again
  publisher kill   v3 approved; once the first canary truck committed, the publisher is
                   killed (SIGKILL) and started again; every truck must still commit v3

For each: the time from its start until each truck reached the goal, as a separate MQTT
client subscribed to every status saw it (p50, p99, max); broker, publisher and load CPU
and peak RSS (from /proc); messages the broker dropped (its inflight and write-buffer
drop counters); release documents the fleet saw (distinct serials: one per announcement,
so a re-announcement shows); artifact bytes the publisher's server sent.

It prints Markdown. Progress goes to stderr.`,
		Example: `  linkedge bench fleet --trucks 1000
  linkedge bench fleet --trucks 10000 --connect-rate 1000
  linkedge bench fleet --trucks 1000 --link-rate 250000   # 2 Mbit/s per truck: downloads overlap`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Progress = os.Stderr
			if noStaged {
				cfg.CanaryPercent = -1
			}
			rep, err := bench.RunFleet(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			command := cmd.CommandPath()
			cmd.Flags().Visit(func(f *pflag.Flag) { command += " --" + f.Name + "=" + f.Value.String() })
			kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
			fmt.Fprintf(cmd.OutOrStdout(), "\n**Command:** `%s`  \n**Machine:** %s/%s, %d CPUs, kernel %s, %s  \n**Date:** %s; the run took %s.\n\n%s",
				command, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), strings.TrimSpace(string(kernel)), runtime.Version(),
				time.Now().UTC().Format("2006-01-02 15:04 MST"), rep.Elapsed.Round(time.Second), rep.Markdown())
			return nil
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&cfg.Trucks, "trucks", 1000, "simulated trucks")
	fl.IntVar(&cfg.ConnectRate, "connect-rate", 500, "trucks started per second")
	fl.Int64Var(&cfg.LinkRate, "link-rate", 0, "download rate per truck, bytes/s (0: unlimited)")
	fl.IntVar(&cfg.CanaryPercent, "canary-percent", 5, "canary of the staged-rollout scenarios")
	fl.DurationVar(&cfg.CanarySoak, "canary-soak", 5*time.Second, "how long the canary runs before promotion")
	fl.BoolVar(&noStaged, "no-staged", false, "skip the staged-rollout and publisher-kill scenarios")
	fl.BoolVar(&cfg.NoRestarts, "no-restarts", false, "skip the broker restart and the publisher kill")
	fl.Int64Var(&cfg.BrokerMemoryLimit, "broker-memory-limit", 0, "the broker's GOMEMLIMIT in bytes (0: none), a soft limit the Go runtime collects harder to keep under")
	fl.DurationVar(&cfg.Settle, "settle", 0, "after connecting, keep the fleet idle this long and sample the broker's memory again (e.g. 3m: the Go runtime frees the connect storm's garbage within minutes)")
	fl.DurationVar(&cfg.Probation, "probation", time.Second, "the trucks' probation")
	fl.TextVar(&cfg.TruckLogLevel, "truck-log-level", slog.LevelWarn, "level of the trucks' log (trucks.log in --dir): debug, info, warn or error")
	fl.StringVar(&cfg.Dir, "dir", "", "folder for the parts' state and logs (default: a temporary folder, removed)")
	return cmd
}

// newBenchFleetMonitorCmd is the observer `bench fleet` runs as a child
// process; hidden, since its output is for the bench.
func newBenchFleetMonitorCmd() *cobra.Command {
	var broker, out string
	cmd := &cobra.Command{
		Use:    "fleet-monitor",
		Short:  "Print every truck status and release on a broker as JSON lines (the fleet bench's observer)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			w := cmd.OutOrStdout()
			if out != "" {
				f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
				if err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			return bench.RunFleetMonitor(cmd.Context(), broker, w)
		},
	}
	cmd.Flags().StringVar(&broker, "broker", "", "broker URL")
	cmd.Flags().StringVar(&out, "out", "", "write to this file instead of standard output")
	return cmd
}

// newBenchFleetTrucksCmd runs one load process of `bench fleet`; hidden,
// since only the bench starts it.
func newBenchFleetTrucksCmd() *cobra.Command {
	var cfg bench.FleetTrucksConfig
	cmd := &cobra.Command{
		Use:    "fleet-trucks",
		Short:  "Run a share of the fleet bench's simulated trucks until stopped (one load process of bench fleet)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return bench.RunFleetTrucks(cmd.Context(), cfg)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cfg.Broker, "broker", "", "broker URL")
	fl.IntVar(&cfg.First, "first", 0, "number of the first truck")
	fl.IntVar(&cfg.Count, "count", 0, "trucks to run")
	fl.IntVar(&cfg.Rate, "rate", 500, "trucks started a second")
	fl.StringVar(&cfg.Dir, "dir", "", "folder of the trucks' data folders")
	fl.StringVar(&cfg.KeyFile, "key", "", "the publisher's public key (PEM)")
	fl.DurationVar(&cfg.Probation, "probation", time.Second, "the trucks' probation")
	fl.StringVar(&cfg.LogFile, "log-file", "", "append the trucks' log to this file")
	fl.TextVar(&cfg.LogLevel, "truck-log-level", slog.LevelWarn, "level of the trucks' log")
	return cmd
}

// newBenchFloorCmd is the floor server `bench inference` runs as a child
// process; hidden, since it is only useful under that load.
func newBenchFloorCmd() *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:    "http-floor",
		Short:  "Serve the answer of POST /invocations without a model (the bench's HTTP floor)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			hs := &http.Server{Handler: bench.FloorHandler(), ReadHeaderTimeout: 10 * time.Second}
			go func() {
				<-cmd.Context().Done()
				hs.Close()
			}()
			if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "http", "127.0.0.1:8080", "address to listen on")
	return cmd
}
