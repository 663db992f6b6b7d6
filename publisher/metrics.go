package publisher

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the publisher's Prometheus metrics. A nil *metrics records
// nothing, so an [Announcer] built by hand needs none.
type metrics struct {
	announcements *prometheus.CounterVec
	errors        *prometheus.CounterVec
	lastAnnounce  *prometheus.GaugeVec
	version       *prometheus.GaugeVec
	canary        *prometheus.GaugeVec
	halted        *prometheus.CounterVec
	held          *prometheus.GaugeVec
	connected     prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		announcements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkedge_publisher_announcements_total",
			Help: "Release documents the broker acknowledged, by model.",
		}, []string{"model"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkedge_publisher_errors_total",
			Help: "Failed steps, by stage: registry, state, url, sign, publish.",
		}, []string{"stage"}),
		lastAnnounce: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "linkedge_publisher_last_announce_timestamp_seconds",
			Help: "Unix time of the last acknowledged announcement, by model.",
		}, []string{"model"}),
		version: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "linkedge_publisher_announced_version",
			Help: "Model version in the last acknowledged announcement, by model.",
		}, []string{"model"}),
		canary: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "linkedge_publisher_canary_version",
			Help: "Canary version in the last acknowledged announcement, by model; 0 when none.",
		}, []string{"model"}),
		halted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkedge_publisher_rollouts_halted_total",
			Help: "Staged rollouts halted because canary trucks failed the new version, by model.",
		}, []string{"model"}),
		held: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "linkedge_publisher_rollout_held",
			Help: "1 while an operator halt holds the model's staged rollout (linkedge rollout halt), by model.",
		}, []string{"model"}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "linkedge_publisher_broker_connected",
			Help: "1 while the publisher's MQTT connection is up.",
		}),
	}
	for _, c := range []prometheus.Collector{m.announcements, m.errors, m.lastAnnounce, m.version, m.canary, m.halted, m.held, m.connected} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("publisher: register metrics: %w", err)
		}
	}
	// Show every stage from the start, so a rate() over errors has a
	// baseline before the first failure.
	for _, s := range []string{stageRegistry, stageState, stageURL, stageSign, stagePublish} {
		m.errors.WithLabelValues(s)
	}
	return m, nil
}

// Stages of errors_total.
const (
	stageRegistry = "registry"
	stageState    = "state"
	stageURL      = "url"
	stageSign     = "sign"
	stagePublish  = "publish"
)

func (m *metrics) announced(model string, version, canary int64, unix float64) {
	if m == nil {
		return
	}
	m.announcements.WithLabelValues(model).Inc()
	m.lastAnnounce.WithLabelValues(model).Set(unix)
	m.version.WithLabelValues(model).Set(float64(version))
	m.canary.WithLabelValues(model).Set(float64(canary))
}

func (m *metrics) rolloutHalted(model string) {
	if m != nil {
		m.halted.WithLabelValues(model).Inc()
	}
}

func (m *metrics) setHeld(model string, held bool) {
	if m != nil {
		v := 0.0
		if held {
			v = 1
		}
		m.held.WithLabelValues(model).Set(v)
	}
}

func (m *metrics) failed(stage string) {
	if m != nil {
		m.errors.WithLabelValues(stage).Inc()
	}
}

func (m *metrics) setConnected(up bool) {
	if m == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	m.connected.Set(v)
}
