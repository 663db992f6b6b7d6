package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/bundle"
)

// InferenceConfig configures `linkedge bench inference`.
type InferenceConfig struct {
	// Model is the bundle to serve.
	Model string
	// Binary is the linkedge executable that serves (default: this one).
	Binary string
	// Concurrency of the closed-loop HTTP runs. Default 32.
	Concurrency int
	// Duration of each measured run, after Warmup. Defaults 10 s and 2 s.
	Duration time.Duration
	Warmup   time.Duration
	// Rate of the open-loop latency run. Default 1,000 req/s.
	Rate float64
	// Progress receives one line per step; nil discards.
	Progress io.Writer
}

// Row is one line of the report table.
type Row struct {
	Name    string
	RPS     float64
	P50     time.Duration
	P99     time.Duration
	CPU     float64 // server CPU in cores (1.0 = one core busy), 0 if unknown
	GenCPU  float64 // load generator CPU in cores, 0 if unknown
	Errors  int64
	Comment string
}

// Report is the outcome of the inference suite.
type Report struct {
	Rows     []Row
	Bare     float64 // in-process single-row predictions/s, no batching
	Batched  float64 // in-process predictions/s through the batcher
	Features int
	Model    string
	MQTT     MQTTResult
	// Floor is the req/s of the floor server and Served that of `linkedge
	// serve` with batching on, both from Rows.
	Floor, Served float64
}

// RunInference runs the suite: bare in-process rate, the batcher in-process,
// then the HTTP server (batched and unbatched) closed-loop at Concurrency,
// and open-loop at Rate.
func RunInference(ctx context.Context, cfg InferenceConfig) (*Report, error) {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 32
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 10 * time.Second
	}
	if cfg.Warmup <= 0 {
		cfg.Warmup = 2 * time.Second
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 1000
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if cfg.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cfg.Binary = exe
	}
	b, err := bundle.Open(cfg.Model)
	if err != nil {
		return nil, err
	}
	if err := inference.Init(ctx, ""); err != nil {
		return nil, err
	}
	m, err := inference.Load(ctx, b, inference.Options{})
	if err != nil {
		return nil, err
	}
	rep := &Report{Features: m.NumFeatures(), Model: fmt.Sprintf("%s v%d", m.Name(), m.Version())}
	row := sampleRow(m)

	fmt.Fprintf(cfg.Progress, "in-process, single-row calls on %d goroutines for %s ...\n", runtime.GOMAXPROCS(0), cfg.Duration)
	// Each goroutine reuses its own output slice, as the batcher's workers do.
	outs := sync.Pool{New: func() any { return make([]float32, 1) }}
	rep.Bare = rate(ctx, runtime.GOMAXPROCS(0), cfg.Duration, func() error {
		out := outs.Get().([]float32)
		defer outs.Put(out)
		return m.Scores(row, out)
	})
	fmt.Fprintf(cfg.Progress, "  %.0f predictions/s\n", rep.Bare)

	eng := inference.NewEngine(m, inference.BatchConfig{}, nil)
	fmt.Fprintf(cfg.Progress, "in-process through the micro-batcher, %d goroutines ...\n", cfg.Concurrency)
	rep.Batched = rate(ctx, cfg.Concurrency, cfg.Duration, func() error {
		_, err := eng.PredictOne(context.Background(), row)
		return err
	})
	eng.Close()
	fmt.Fprintf(cfg.Progress, "  %.0f predictions/s\n", rep.Batched)

	body := []byte(csvRow(row) + "\n")
	serve := []string{"serve", "--log-level", "warn", "--model", cfg.Model}
	runs := []struct {
		name string
		args []string
		load LoadConfig
		note string
	}{
		{"HTTP floor: net/http answering without a model", []string{"bench", "http-floor"}, LoadConfig{Concurrency: cfg.Concurrency}, "closed loop; the same answer, no parsing, no model, no metrics"},
		{"HTTP /invocations, batching on", serve, LoadConfig{Concurrency: cfg.Concurrency}, fmt.Sprintf("closed loop, %d keep-alive connections", cfg.Concurrency)},
		{"HTTP /invocations, batching off", append(serve[:len(serve):len(serve)], "--no-batch"), LoadConfig{Concurrency: cfg.Concurrency}, fmt.Sprintf("closed loop, %d keep-alive connections", cfg.Concurrency)},
		{"HTTP /invocations, fixed rate", serve, LoadConfig{Concurrency: cfg.Concurrency, Rate: cfg.Rate}, fmt.Sprintf("open loop at %.0f req/s", cfg.Rate)},
	}
	for _, r := range runs {
		fmt.Fprintf(cfg.Progress, "%s (%s) ...\n", r.name, r.note)
		r.load.Duration, r.load.Warmup = cfg.Duration, cfg.Warmup
		res, err := runAgainstServer(ctx, cfg.Binary, r.args, body, r.load)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.name, err)
		}
		res.Name, res.Comment = r.name, r.note
		fmt.Fprintf(cfg.Progress, "  %.0f req/s, p50 %s, p99 %s, server CPU %.2f cores, errors %d\n", res.RPS, res.P50, res.P99, res.CPU, res.Errors)
		rep.Rows = append(rep.Rows, res)
	}
	rep.Floor, rep.Served = rep.Rows[0].RPS, rep.Rows[1].RPS
	fmt.Fprintf(cfg.Progress, "MQTT readings → predictions through an embedded broker ...\n")
	reading := []byte(`{"id":"bench","features":` + jsonRow(row) + `}`)
	mq, err := runMQTT(ctx, cfg.Binary, cfg.Model, reading, 256, cfg.Duration, cfg.Warmup)
	if err != nil {
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	rep.MQTT = mq
	fmt.Fprintf(cfg.Progress, "  %.0f predictions/s, server CPU %.2f cores\n", mq.Rate(), mq.CPU)
	return rep, nil
}

func sampleRow(m *inference.Model) []float32 {
	if g := m.Meta().Golden; len(g) > 0 {
		return g[0].Features
	}
	return make([]float32, m.NumFeatures())
}

func jsonRow(row []float32) string {
	return "[" + strings.ReplaceAll(csvRow(row), "na", "null") + "]"
}

func csvRow(row []float32) string {
	var sb strings.Builder
	for i, v := range row {
		if i > 0 {
			sb.WriteByte(',')
		}
		if v != v {
			sb.WriteString("na")
			continue
		}
		fmt.Fprintf(&sb, "%g", v)
	}
	return sb.String()
}

// rate runs call on workers goroutines for d and returns successful calls
// per second.
func rate(ctx context.Context, workers int, d time.Duration, call func() error) float64 {
	var n atomic.Int64
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if call() == nil {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds()
}

// runAgainstServer starts bin with args and --http ADDR as a child process
// (`linkedge serve`, or the floor server), loads it and stops it. The
// server's CPU use comes from /proc.
func runAgainstServer(ctx context.Context, bin string, args []string, body []byte, load LoadConfig) (Row, error) {
	addr, err := freeAddr()
	if err != nil {
		return Row{}, err
	}
	args = append(args[:len(args):len(args)], "--http", addr)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return Row{}, fmt.Errorf("start server: %w", err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}()
	if err := waitReady(ctx, "http://"+addr+"/ping", 60*time.Second); err != nil {
		return Row{}, err
	}
	req := Request{URL: "http://" + addr + "/invocations", ContentType: "text/csv", Body: body}
	// Warm up unmeasured, then sample CPU over the measured part only.
	warm := load
	warm.Duration, warm.Warmup = load.Warmup, 0
	if _, err := RunHTTP(ctx, req, warm); err != nil {
		return Row{}, err
	}
	cpu0, _ := CPUTime(cmd.Process.Pid)
	gen0, _ := CPUTime(os.Getpid())
	t0 := time.Now()
	load.Warmup = 0
	res, err := RunHTTP(ctx, req, load)
	if err != nil {
		return Row{}, err
	}
	wall := time.Since(t0).Seconds()
	cpu1, _ := CPUTime(cmd.Process.Pid)
	gen1, _ := CPUTime(os.Getpid())
	return Row{RPS: res.RPS(), P50: res.Latencies.Quantile(0.50), P99: res.Latencies.Quantile(0.99),
		CPU: (cpu1 - cpu0).Seconds() / wall, GenCPU: (gen1 - gen0).Seconds() / wall, Errors: res.Errors + res.Non2xx}, nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitReady(ctx context.Context, url string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("server at %s not ready after %s", url, limit)
}

// Markdown renders the report as the table docs/benchmarks.md holds.
func (r *Report) Markdown() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "Model: %s (%d features). Bare in-process single-row rate: **%.0f predictions/s**; through the micro-batcher in-process: **%.0f predictions/s**.\n\n", r.Model, r.Features, r.Bare, r.Batched)
	sb.WriteString("| run | req/s | p50 | p99 | server CPU (cores) | load generator CPU (cores) | errors | how |\n|---|---:|---:|---:|---:|---:|---:|---|\n")
	for _, x := range r.Rows {
		fmt.Fprintf(&sb, "| %s | %.0f | %s | %s | %.2f | %.2f | %d | %s |\n", x.Name, x.RPS, fmtDur(x.P50), fmtDur(x.P99), x.CPU, x.GenCPU, x.Errors, x.Comment)
	}
	if r.Bare > 0 && r.Floor > 0 {
		fmt.Fprintf(&sb, "\nRatios in this run: served (batching on) / bare in-process = **%.3f**; HTTP floor / bare in-process = **%.3f**; served / HTTP floor = **%.3f**.\n",
			r.Served/r.Bare, r.Floor/r.Bare, r.Served/r.Floor)
	}
	fmt.Fprintf(&sb, "\nMQTT (embedded broker, QoS 0, at most 256 readings unanswered): **%.0f predictions/s**, server CPU %.2f cores.\n", r.MQTT.Rate(), r.MQTT.CPU)
	return sb.String()
}

func fmtDur(d time.Duration) string {
	return fmt.Sprintf("%.3f ms", float64(d.Microseconds())/1000)
}
