package edgeclient

import (
	"context"
	"encoding/json"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkedge/linkedge/inference/server"
	"github.com/linkedge/linkedge/internal/topics"
)

// forwardMetrics count what the forwarder does.
type forwardMetrics struct {
	sent    prometheus.Counter
	dropped prometheus.CounterFunc
	queued  prometheus.GaugeFunc
}

func (a *Agent) registerForwardMetrics() {
	a.fwd.sent = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "linkedge_agent_forwarded_total",
		Help: "Predictions the fleet broker acknowledged on linkedge/v1/trucks/{truck}/predictions/{model}.",
	})
	a.fwd.queued = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "linkedge_agent_forward_queued",
		Help: "Predictions waiting on disk to be forwarded (the link is down, or slower than they come).",
	}, func() float64 {
		if a.outbox == nil {
			return 0
		}
		return float64(a.outbox.Len())
	})
	a.fwd.dropped = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "linkedge_agent_forward_dropped_total",
		Help: "Predictions dropped, oldest first, because the forward queue was full (forward.max_queued).",
	}, func() float64 {
		if a.outbox == nil {
			return 0
		}
		return float64(a.outbox.Dropped())
	})
	a.reg.MustRegister(a.fwd.sent, a.fwd.queued, a.fwd.dropped)
}

// forward queues one prediction for the fleet. The bridge calls it (through
// onPrediction) before it publishes the answer on the local bus, so a
// prediction an application may act on is on disk first. A failure to write
// the queue costs that prediction for the fleet, never the local answer.
func (a *Agent) forward(p server.PredictionMessage) {
	data, err := json.Marshal(p)
	if err == nil {
		err = a.outbox.Push(data)
	}
	if err != nil {
		a.log.Warn("could not queue a prediction for the fleet; it stays local", "id", p.ID, "err", err)
	}
}

// forwarder sends the queued predictions in order, each at QoS 1, and
// removes one from the queue only once the broker acknowledged it on the
// connection it was sent on. While the link is down it waits; the queue on
// disk keeps what comes meanwhile.
//
// A completed paho token is not, by itself, such an acknowledgement. With
// the fleet's persistent session (clean session false), paho v1.5.1 keeps
// a publish's token pending when the connection drops; on reconnect,
// client.resume gives each publish in its store a new token and claimID
// completes the old one, with no error, before the copy it resends has even
// been written, let alone acknowledged. Acking on that would take the
// prediction off the disk while it exists only in paho's memory, and an
// ignition-off before the broker's PUBACK would lose it.
//
// So a token counts only if the connection it was published on is still
// up when the token completes: a.offline, taken with a.online before the
// publish, is that connection's marker, closed when it drops. If it dropped,
// the prediction stays at the head of the queue and goes out again on the
// next connection, beside paho's own resend: the cloud may see it twice
// (at least once, keyed by its id), never zero times.
//
// The marker is closed by the connection-lost handler, which paho starts in
// a goroutine next to the one that reconnects; a token is completed by
// resume only after that reconnect dialled and had its CONNACK. paho does
// not promise the handler runs first, but one that takes a lock and closes
// a channel has, in practice, long run by then. A hook that paho calls in
// line before each attempt (SetReconnectingHandler) would make it a
// guarantee; it belongs in fleetOptions.
func (a *Agent) forwarder(ctx context.Context) {
	defer a.wg.Done()
	topic := topics.TruckPredictions(a.cfg.Truck, a.cfg.Model)
	wait := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-a.outbox.Notify():
		case <-time.After(d):
		}
		return true
	}
	retry := time.Second
	for ctx.Err() == nil {
		msg, head, ok := a.outbox.Peek()
		if !ok {
			if !wait(time.Minute) {
				return
			}
			continue
		}
		a.mu.Lock()
		online, conn := a.online, a.offline
		a.mu.Unlock()
		if !online {
			// The connect handler does not signal here; checking twice a
			// second costs nothing and starts within half a second.
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		tok := a.fleet.Publish(topic, topics.PredictionsQoS, topics.PredictionsRetain, msg)
		acked, dropped := false, false
		select {
		case <-ctx.Done():
			return
		case <-tok.Done():
			dropped = isClosed(conn)
			acked = tok.Error() == nil && !dropped
		case <-conn:
			dropped = true
		case <-time.After(30 * time.Second):
		}
		if dropped {
			// Sent again once the link is back; the wait for it above
			// paces the retries.
			continue
		}
		if !acked {
			// paho keeps the message in its session and may still
			// deliver it: the queue sends it again anyway, so the cloud
			// sees it at least once.
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
			retry = min(2*retry, 30*time.Second)
			continue
		}
		retry = time.Second
		a.fwd.sent.Inc()
		if err := a.outbox.Ack(head); err != nil {
			a.log.Warn("forward queue", "err", err)
		}
	}
}

// isClosed reports whether ch is closed; ch is only ever closed, never sent
// on.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
