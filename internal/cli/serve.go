package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/server"
	"github.com/linkedge/linkedge/internal/topics"
)

type serveFlags struct {
	model       string
	http        string
	mqtt        string
	topicPrefix string
	mqttQoS     int
	batch       inference.BatchConfig
	threads     int
	ortLib      string
	maxBody     int64
}

func newServeCmd() *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve one model over HTTP (SageMaker contract + Open Inference Protocol v2) and MQTT",
		Long: `Serve loads a model bundle (model.tar.gz, a folder with model.onnx and metadata.json,
or a bare .onnx file), checks it against its metadata and golden samples, and serves it:

  GET  /ping                      200 with an empty body once the model is loaded, 503 before
  POST /invocations               text/csv (one row per line, "na" = missing) or JSON
  GET  /v2/health/live|ready      Open Inference Protocol v2 health
  GET  /v2/models/{name}          model metadata; .../ready; POST .../infer
  GET  /metrics                   Prometheus metrics

This is the process an inference container runs (SageMaker starts containers with
"serve"; the default model path is /opt/ml/model). With --mqtt it also scores every
reading published on {prefix}/readings and publishes one prediction on {prefix}/predictions.
SIGTERM stops accepting and lets requests in flight finish.`,
		Example: `  linkedge serve --model inference/apsmodels/aps-failure-v1.tar.gz
  curl -s localhost:8080/ping -o /dev/null -w '%{http_code}\n'
  linkedge serve --model model.tar.gz --http 0.0.0.0:8080 --mqtt tcp://127.0.0.1:1883`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runServe(cmd.Context(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.model, "model", "/opt/ml/model", "model bundle: model.tar.gz, a bundle folder, or a .onnx file")
	fl.StringVar(&f.http, "http", envOr("LINKEDGE_HTTP", "127.0.0.1:8080"), "HTTP listen address (env LINKEDGE_HTTP)")
	fl.StringVar(&f.mqtt, "mqtt", "", "MQTT broker URL, e.g. tcp://127.0.0.1:1883 (off when empty)")
	fl.StringVar(&f.topicPrefix, "topic-prefix", "", "MQTT topic prefix (default linkedge/v1/local/{model})")
	fl.IntVar(&f.mqttQoS, "mqtt-qos", 0, "MQTT QoS for readings and predictions: 0 or 1")
	fl.IntVar(&f.batch.MaxBatch, "batch-max", 64, "most rows the micro-batcher puts in one runtime call")
	fl.DurationVar(&f.batch.MaxDelay, "batch-delay", 0, "how long a batch waits to fill (0: run with whatever is queued)")
	fl.IntVar(&f.batch.Workers, "workers", 2, "runtime calls that may run at once")
	fl.BoolVar(&f.batch.Disabled, "no-batch", false, "score every request on its own (for comparison)")
	fl.IntVar(&f.threads, "threads", 1, "ONNX Runtime intra-op threads per call")
	fl.StringVar(&f.ortLib, "ort-lib", "", "path to libonnxruntime.so (default: $ONNXRUNTIME_LIB, then the cache, then fetch)")
	fl.Int64Var(&f.maxBody, "max-body", 1<<20, "largest request body in bytes")
	return cmd
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func runServe(ctx context.Context, f serveFlags) error {
	log := slog.Default()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	slot := &inference.Slot{}
	srv := server.New(server.Config{Addr: f.http, MaxBodyBytes: f.maxBody, Logger: log}, slot, reg)
	// Listen before loading, so /ping answers 503 while the model loads, as
	// the SageMaker contract expects.
	if err := srv.Start(); err != nil {
		return err
	}
	defer slot.Close()
	defer srv.Shutdown(context.Background())
	log.Info("inference server listening", "addr", srv.Addr())

	if err := inference.Init(ctx, f.ortLib); err != nil {
		return err
	}
	start := time.Now()
	model, err := inference.LoadFile(ctx, f.model, inference.Options{IntraOpThreads: f.threads})
	if err != nil {
		return fmt.Errorf("load model: %w", err)
	}
	slot.Swap(inference.NewEngine(model, f.batch, srv.ObserveBatch), 0)
	log.Info("model loaded", "model", model.Name(), "version", model.Version(), "features", model.NumFeatures(),
		"golden", len(model.Meta().Golden), "took", time.Since(start).Round(time.Millisecond))

	if f.mqtt != "" {
		prefix := f.topicPrefix
		if prefix == "" {
			prefix = topics.Prefix + "/local/" + model.Name()
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		br, err := server.StartMQTT(cctx, server.MQTTConfig{
			Broker: f.mqtt, ReadingsTopic: prefix + "/readings", PredictionsTopic: prefix + "/predictions",
			ErrorsTopic: prefix + "/errors", QoS: byte(f.mqttQoS), Logger: log, Registerer: reg,
		}, slot)
		cancel()
		if err != nil {
			return err
		}
		defer br.Close()
		log.Info("mqtt bridge subscribed", "broker", f.mqtt, "readings", prefix+"/readings", "predictions", prefix+"/predictions")
	}
	<-ctx.Done()
	log.Info("shutting down; letting requests in flight finish")
	return nil
}
