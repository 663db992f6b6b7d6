package edgeclient

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// linkCounters count what the agent sends and receives on the fleet link,
// so that an operator can see where a truck's bytes go (and tests can check
// that nothing is sent twice).
type linkCounters struct {
	documents  atomic.Int64 // release and pin documents received
	statuses   atomic.Int64 // status messages sent
	presences  atomic.Int64 // presence messages sent
	subscribes atomic.Int64 // SUBSCRIBE requests sent
}

func (a *Agent) registerLinkMetrics() {
	counter := func(name, help string, v *atomic.Int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v.Load()) })
	}
	a.reg.MustRegister(
		counter("linkedge_agent_fleet_documents_received_total", "Release and pin documents received from the fleet broker, retained copies included.", &a.link.documents),
		counter("linkedge_agent_status_published_total", "Status messages sent to the fleet broker.", &a.link.statuses),
		counter("linkedge_agent_presence_published_total", "Presence messages (online on each connect, offline on shutdown) sent to the fleet broker.", &a.link.presences),
		counter("linkedge_agent_fleet_subscribes_total", "SUBSCRIBE requests sent to the fleet broker (none on a reconnect to a session the broker kept).", &a.link.subscribes),
	)
	// The dialer counts TLS handshakes whenever the agent dials itself.
	for _, h := range []struct {
		resumed string
		v       *atomic.Int64
	}{{"false", &a.dialer.fullHandshakes}, {"true", &a.dialer.resumed}} {
		a.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "linkedge_agent_fleet_tls_handshakes_total",
			Help:        "TLS handshakes with the fleet broker, by whether they resumed a session from a ticket (a resumed one costs a few hundred bytes, a full one several KB).",
			ConstLabels: prometheus.Labels{"resumed": h.resumed}}, func() float64 { return float64(h.v.Load()) }))
	}
}
