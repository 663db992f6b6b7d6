package broker

import (
	"log/slog"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

var _ mqtt.Hook = (*dropReporter)(nil)

// dropReporter names the clients that lose messages because they read too
// slowly: mochi drops a message when a client's queue of writes
// (MaximumClientWritesPending) is full, and counts it only in a total
// (linkedge_broker_messages_dropped_total). A client that falls behind
// (the publisher, under a fleet's status reports) is logged at most once
// per dropReportEvery, with how many it lost meanwhile.
type dropReporter struct {
	mqtt.HookBase
	log *slog.Logger

	mu      sync.Mutex
	pending map[string]int       // client id → drops not yet reported
	last    map[string]time.Time // client id → last report
}

const dropReportEvery = 10 * time.Second

func newDropReporter(log *slog.Logger) *dropReporter {
	return &dropReporter{log: log, pending: map[string]int{}, last: map[string]time.Time{}}
}

// ID implements mqtt.Hook.
func (d *dropReporter) ID() string { return "linkedge-drop-reporter" }

// Provides implements mqtt.Hook.
func (d *dropReporter) Provides(b byte) bool { return b == mqtt.OnPublishDropped }

// OnPublishDropped implements mqtt.Hook.
func (d *dropReporter) OnPublishDropped(cl *mqtt.Client, pk packets.Packet) {
	d.mu.Lock()
	d.pending[cl.ID]++
	now := time.Now()
	if now.Sub(d.last[cl.ID]) < dropReportEvery {
		d.mu.Unlock()
		return
	}
	n := d.pending[cl.ID]
	d.pending[cl.ID], d.last[cl.ID] = 0, now
	if len(d.last) > 10000 {
		// Forget old entries rather than grow with every client ever seen.
		for id, t := range d.last {
			if now.Sub(t) > time.Minute {
				delete(d.last, id)
				delete(d.pending, id)
			}
		}
	}
	d.mu.Unlock()
	d.log.Warn("dropped messages for a client that reads too slowly: its queue of writes is full",
		"client", cl.ID, "dropped", n, "last_topic", pk.TopicName)
}
