package server

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkedge/linkedge/inference"
)

type metrics struct {
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	batchRows    prometheus.Histogram
	batchSeconds prometheus.Histogram
	rows         prometheus.Counter
	errors       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, slot *inference.Slot) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkedge_inference_requests_total",
			Help: "HTTP inference requests by endpoint and status code.",
		}, []string{"endpoint", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "linkedge_inference_request_duration_seconds",
			Help:    "HTTP inference request latency, from handler entry to the answer written.",
			Buckets: []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1},
		}, []string{"endpoint"}),
		batchRows: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "linkedge_inference_batch_rows",
			Help:    "Rows per ONNX Runtime call; above 1 when the micro-batcher gathers concurrent requests.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 1024},
		}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "linkedge_inference_batch_duration_seconds",
			Help:    "Time of one ONNX Runtime call.",
			Buckets: []float64{10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 10e-3, 100e-3},
		}),
		rows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "linkedge_inference_rows_total",
			Help: "Rows scored by the model.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkedge_inference_errors_total",
			Help: "Failed predictions by cause (model: the runtime call failed).",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.requests, m.duration, m.batchRows, m.batchSeconds, m.rows, m.errors, &modelInfo{slot: slot})
	return m
}

// modelInfo reports the serving model as linkedge_model_info{model,version,sha256} 1,
// read at scrape time so a swap shows without bookkeeping.
type modelInfo struct {
	slot *inference.Slot
}

var modelInfoDesc = prometheus.NewDesc("linkedge_model_info",
	"The model being served (value 1), with its name, version and ONNX sha256.",
	[]string{"model", "version", "sha256"}, nil)

func (c *modelInfo) Describe(ch chan<- *prometheus.Desc) { ch <- modelInfoDesc }

func (c *modelInfo) Collect(ch chan<- prometheus.Metric) {
	b := c.slot.Current()
	if b == nil {
		return
	}
	m := b.Meta()
	ch <- prometheus.MustNewConstMetric(modelInfoDesc, prometheus.GaugeValue, 1, m.Name, strconv.FormatInt(m.Version, 10), b.Digest())
}
