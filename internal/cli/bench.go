package cli

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"github.com/linkedge/linkedge/internal/bench"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure inference and fleet performance",
		Long: `Bench runs the measurements behind docs/benchmarks.md on this machine. Every run of a
suite is measured side by side, so compare the ratios between its rows: absolute numbers
move with whatever else the machine is doing.`,
	}
	cmd.AddCommand(newBenchInferenceCmd(), newBenchFloorCmd())
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
