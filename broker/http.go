package broker

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// healthStatus is the JSON body of GET /healthz.
type healthStatus struct {
	Status           string  `json:"status"` // "ok" or "unavailable"
	MQTTAddr         string  `json:"mqtt_addr"`
	UptimeSeconds    float64 `json:"uptime_seconds"`
	ClientsConnected int64   `json:"clients_connected"`
	Sessions         int     `json:"sessions"`
	Version          string  `json:"mochi_version"`
}

// newHTTPServer builds the health and metrics server. It is plain net/http on
// its own listener so that it keeps working whatever the MQTT side does, and
// so that several brokers in one process each get their own.
func (b *Broker) newHTTPServer() *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", b.serveHealth)
	mux.Handle("GET /metrics", promhttp.HandlerFor(b.reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
	}))
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(b.log.Handler(), slog.LevelWarn),
	}
}

// serveHealth answers 200 {"status":"ok",...} while the broker accepts MQTT
// connections and 503 {"status":"unavailable",...} otherwise (while closing).
func (b *Broker) serveHealth(w http.ResponseWriter, _ *http.Request) {
	st := healthStatus{
		Status:           "ok",
		MQTTAddr:         b.Addr(),
		UptimeSeconds:    b.uptime().Round(time.Second).Seconds(),
		ClientsConnected: b.srv.Info.Clone().ClientsConnected,
		Sessions:         b.sessions(),
		Version:          mqtt.Version,
	}
	code := http.StatusOK
	if !b.Ready() {
		st.Status, code = "unavailable", http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(st)
}
