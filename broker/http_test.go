package broker

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

var httpClient = &http.Client{Timeout: waitFor}

// scrape fetches /metrics and returns the value of every unlabelled sample.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := httpClient.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = v
		}
	}
	return out
}

func TestHealthz(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.HTTPListen = "127.0.0.1:0" })
	resp, err := httpClient.Get("http://" + b.HTTPAddr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status = %s", resp.Status)
	}
	var body healthStatus
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if body.Status != "ok" || body.MQTTAddr != b.Addr() {
		t.Errorf("body = %+v", body)
	}

	post, err := httpClient.Post("http://"+b.HTTPAddr()+"/healthz", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if post.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST status = %s, want 405", post.Status)
	}

	addr := b.HTTPAddr()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := httpClient.Get("http://" + addr + "/healthz"); err == nil {
		t.Error("health endpoint still answering after Close")
	}
}

func TestHTTPDisabledByDefault(t *testing.T) {
	b := startBroker(t, nil)
	if b.HTTPAddr() != "" {
		t.Errorf("HTTPAddr = %q with HTTPListen unset", b.HTTPAddr())
	}
}

func TestMetrics(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.HTTPListen = "127.0.0.1:0" })
	before := scrape(t, b.HTTPAddr())
	for _, name := range []string{
		"linkedge_broker_up",
		"linkedge_broker_uptime_seconds",
		"linkedge_broker_clients_connected",
		"linkedge_broker_clients_maximum",
		"linkedge_broker_sessions",
		"linkedge_broker_subscriptions",
		"linkedge_broker_retained_messages",
		"linkedge_broker_inflight_messages",
		"linkedge_broker_inflight_dropped_total",
		"linkedge_broker_messages_received_total",
		"linkedge_broker_messages_sent_total",
		"linkedge_broker_messages_dropped_total",
		"linkedge_broker_packets_received_total",
		"linkedge_broker_packets_sent_total",
		"linkedge_broker_bytes_received_total",
		"linkedge_broker_bytes_sent_total",
		"linkedge_broker_auth_failures_total",
	} {
		if _, ok := before[name]; !ok {
			t.Errorf("metric %s missing", name)
		}
	}
	if before["linkedge_broker_up"] != 1 {
		t.Errorf("up = %v, want 1", before["linkedge_broker_up"])
	}

	// The retained message goes to a topic nobody subscribes to, so the
	// sent count cannot depend on whether mochi's retained scan for the
	// new subscription (which runs just after SUBACK) sees it.
	in := newInbox()
	sub := connect(t, clientOpts(b.Addr()))
	subscribe(t, sub, "linkedge/v1/trucks/#", 1, in)
	pub := connect(t, clientOpts(b.Addr()))
	publish(t, pub, "linkedge/v1/models/m", 1, true, "v1")
	publish(t, pub, "linkedge/v1/trucks/t1/state", 1, false, "ok")
	in.next(t)

	// mochi counts a message as sent after writing it, just after the
	// subscriber may already have it; poll briefly.
	var after map[string]float64
	deadline := time.Now().Add(waitFor)
	for {
		after = scrape(t, b.HTTPAddr())
		if after["linkedge_broker_messages_sent_total"] > before["linkedge_broker_messages_sent_total"] || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for name, want := range map[string]float64{
		"linkedge_broker_clients_connected":       2,
		"linkedge_broker_sessions":                2,
		"linkedge_broker_subscriptions":           1,
		"linkedge_broker_retained_messages":       1,
		"linkedge_broker_messages_received_total": 2,
		"linkedge_broker_messages_sent_total":     1,
	} {
		if after[name] != want {
			t.Errorf("%s = %v, want %v", name, after[name], want)
		}
	}
	for _, name := range []string{"linkedge_broker_bytes_received_total", "linkedge_broker_bytes_sent_total", "linkedge_broker_packets_received_total"} {
		if after[name] <= before[name] {
			t.Errorf("%s did not grow: %v -> %v", name, before[name], after[name])
		}
	}
}
