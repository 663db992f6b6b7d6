package broker

import (
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/system"
	"github.com/prometheus/client_golang/prometheus"
)

type sysInfo = system.Info

const metricPrefix = "linkedge_broker_"

// metricDesc describes one metric read from the broker's state at scrape time.
type metricDesc struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(c *collector) float64
}

// collector exposes a Broker's state (mostly mochi's system.Info counters)
// at scrape time, so there is nothing to update on the message path and no
// state shared between brokers.
type collector struct {
	b       *Broker
	metrics []metricDesc
	info    *prometheus.Desc
	denied  *prometheus.Desc
}

var _ prometheus.Collector = (*collector)(nil)

func newCollector(b *Broker) *collector {
	c := &collector{
		b:      b,
		info:   prometheus.NewDesc(metricPrefix+"info", "Broker build information; always 1.", []string{"mochi_version"}, nil),
		denied: prometheus.NewDesc(metricPrefix+"acl_denied_total", "Publishes, subscriptions and deliveries refused by the ACL.", []string{"access"}, nil),
	}
	info := func(f func(i *sysInfo) int64) func(c *collector) float64 {
		return func(c *collector) float64 { return float64(f(c.b.srv.Info.Clone())) }
	}
	add := func(name, help string, kind prometheus.ValueType, v func(c *collector) float64) {
		c.metrics = append(c.metrics, metricDesc{prometheus.NewDesc(metricPrefix+name, help, nil, nil), kind, v})
	}
	gauge, counter := prometheus.GaugeValue, prometheus.CounterValue
	add("up", "1 while the broker is started and accepting connections.", gauge, func(c *collector) float64 { return boolFloat(c.b.Ready()) })
	add("uptime_seconds", "Seconds since the broker started.", gauge, func(c *collector) float64 { return c.b.uptime().Seconds() })
	add("clients_connected", "Clients currently connected.", gauge, info(func(i *sysInfo) int64 { return i.ClientsConnected }))
	add("clients_maximum", "Most clients connected at once since start.", gauge, info(func(i *sysInfo) int64 { return i.ClientsMaximum }))
	add("sessions", "Known sessions, connected or kept for a disconnected persistent client.", gauge, func(c *collector) float64 { return float64(c.b.sessions()) })
	add("subscriptions", "Active subscriptions of network clients.", gauge, info(func(i *sysInfo) int64 { return i.Subscriptions }))
	add("retained_messages", "Retained messages, excluding $SYS topics.", gauge, func(c *collector) float64 { return float64(c.b.retained()) })
	add("inflight_messages", "QoS 1/2 messages queued or awaiting acknowledgement.", gauge, info(func(i *sysInfo) int64 { return i.Inflight }))
	add("inflight_dropped_total", "QoS 1/2 messages dropped because a client's queue was full.", counter, info(func(i *sysInfo) int64 { return i.InflightDropped }))
	add("messages_received_total", "PUBLISH packets received, including in-process publishes.", counter, info(func(i *sysInfo) int64 { return i.MessagesReceived }))
	add("messages_sent_total", "PUBLISH packets sent to clients.", counter, info(func(i *sysInfo) int64 { return i.MessagesSent }))
	add("messages_dropped_total", "Messages dropped because a client's write buffer was full.", counter, info(func(i *sysInfo) int64 { return i.MessagesDropped }))
	add("packets_received_total", "MQTT packets received.", counter, info(func(i *sysInfo) int64 { return i.PacketsReceived }))
	add("packets_sent_total", "MQTT packets sent.", counter, info(func(i *sysInfo) int64 { return i.PacketsSent }))
	add("bytes_received_total", "Bytes received from MQTT clients.", counter, info(func(i *sysInfo) int64 { return i.BytesReceived }))
	add("bytes_sent_total", "Bytes sent to MQTT clients.", counter, info(func(i *sysInfo) int64 { return i.BytesSent }))
	add("auth_failures_total", "Connections refused: bad credentials, a session owned by another user, or a truck's client id taken by someone else.", counter, func(c *collector) float64 { return float64(c.b.auth.authFailures.Load()) })
	add("logins_throttled_total", "Logins refused without a password check: too many failed logins from the address (and username) in the last minute.", counter, func(c *collector) float64 { return float64(c.b.auth.throttled.Load()) })
	add("backpressure_waits_total", "QoS 1 publishes held back while a subscriber of every truck's topics (the publisher, an operator's tool) caught up, instead of its copy being dropped.", counter, func(c *collector) float64 { return float64(c.b.backpressure.waits.Load()) })
	add("backpressure_stalls_total", "Times a subscriber of every truck's topics held the mark of unacknowledged messages and acknowledged nothing for 15 s: publishers stopped waiting for it, and its copies may be dropped.", counter, func(c *collector) float64 { return float64(c.b.backpressure.stalls.Load()) })
	add("backpressure_wait_seconds_total", "Time publishes spent held back for subscribers catching up.", counter, func(c *collector) float64 { return float64(c.b.backpressure.waited.Load()) / 1e9 })
	add("truck_throttled_total", "Truck publishes held back by the truck budget (truck_messages_per_second, truck_bytes_per_second) until it covered them.", counter, func(c *collector) float64 {
		if c.b.budget == nil {
			return 0
		}
		return float64(c.b.budget.throttled.Load())
	})
	add("truck_throttled_seconds_total", "Seconds truck publishes were held back by the truck budget, all trucks together.", counter, func(c *collector) float64 {
		if c.b.budget == nil {
			return 0
		}
		return time.Duration(c.b.budget.waited.Load()).Seconds()
	})
	add("session_queue_dropped_total", "Messages not queued for a subscriber whose queue was full: max_queued_bytes, or max_queued_bytes_per_truck for the truck the topic names.", counter, func(c *collector) float64 {
		if c.b.queues == nil {
			return 0
		}
		return float64(c.b.queues.dropped.Load())
	})
	add("session_queued_bytes", "Bytes (payload and topic) of the QoS 1/2 messages queued for all sessions, unacknowledged or waiting for their client.", gauge, func(c *collector) float64 {
		if c.b.queues == nil {
			return 0
		}
		return float64(c.b.queues.queuedBytes())
	})
	add("retained_over_quota_total", "Retained messages not delivered to a new subscription because the subscriber already held the maximum of unacknowledged messages.", counter, func(c *collector) float64 { return float64(c.b.sess.retainedOverQuota.Load()) })
	add("retain_dropped_total", "Retained publishes delivered without the retain flag: trucks' off their own status topic, sensors' on a truck's local bus, and any user's over max_retained_per_user.", counter, func(c *collector) float64 { return float64(c.b.auth.retainDropped.Load()) })
	return c
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.info
	ch <- c.denied
	for _, m := range c.metrics {
		ch <- m.desc
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.info, prometheus.GaugeValue, 1, mqtt.Version)
	for i, access := range []string{"read", "write"} {
		ch <- prometheus.MustNewConstMetric(c.denied, prometheus.CounterValue, float64(c.b.auth.aclDenied[i].Load()), access)
	}
	for _, m := range c.metrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(c))
	}
}

func boolFloat(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

// uptime is the time since Start succeeded, 0 before.
func (b *Broker) uptime() time.Duration {
	started := b.startedAt.Load()
	if started == 0 {
		return 0
	}
	return time.Since(time.Unix(0, started))
}

// sessions counts the server's clients without mochi's inline client.
func (b *Broker) sessions() int {
	n := b.srv.Clients.Len()
	if _, ok := b.srv.Clients.Get(mqtt.InlineClientId); ok {
		n--
	}
	return n
}

// retained counts retained messages without mochi's own $SYS topics, which
// would otherwise hide the application's count behind ~20 constant entries.
func (b *Broker) retained() int {
	n := 0
	for topic := range b.srv.Topics.Retained.GetAll() {
		if !strings.HasPrefix(topic, "$") {
			n++
		}
	}
	return n
}
