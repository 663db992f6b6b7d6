package edgeclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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
	if err == nil && len(data) > maxForwardBytes {
		// Sent, it would be refused by the broker (and cut the link, on
		// AWS IoT Core) on every try, holding up the queue behind it.
		err = fmt.Errorf("prediction of %d bytes is over the %d-byte forwarding limit", len(data), maxForwardBytes)
	}
	if err == nil {
		err = a.outbox.Push(data)
	}
	if err != nil {
		a.log.Warn("could not queue a prediction for the fleet; it stays local", "id", p.ID, "err", err)
	}
}

// forwarder sends the queued predictions in order, in batches of up to
// Forward.MaxBatch that wait at most Forward.BatchDelay to fill, each at
// QoS 1, and removes a batch from the queue only once the broker
// acknowledged it on the connection it was sent on. While the link is down it waits; the queue on
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
// The marker is closed by the reconnecting handler, which paho calls in
// line before each reconnect attempt (fleetOptions), so before resume can
// complete an old token.
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
		if a.outbox.Len() == 0 {
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
		// Let a batch fill, for at most BatchDelay: one message of many
		// predictions costs one MQTT header, one PUBACK and a few TCP
		// segments instead of one of each per prediction.
		deadline := time.Now().Add(a.cfg.Forward.BatchDelay)
		for a.outbox.Len() < a.cfg.Forward.MaxBatch && time.Until(deadline) > 0 {
			if !wait(time.Until(deadline)) {
				return
			}
		}
		batch, head := a.outbox.PeekN(a.cfg.Forward.MaxBatch)
		batch = batch[:fitBatch(batch, maxForwardBytes)]
		tok := a.fleet.Publish(topic, topics.PredictionsQoS, topics.PredictionsRetain, joinBatch(batch))
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
		a.fwd.sent.Add(float64(len(batch)))
		if err := a.outbox.AckN(head, len(batch)); err != nil {
			a.log.Warn("forward queue", "err", err)
		}
	}
}

// maxForwardBytes bounds one forwarded message: well under the 128 KB
// payload limit of AWS IoT Core, the smallest of the brokers LinkEdge runs
// on, with room for the topic. A batch of 100 ordinary predictions is
// about 30 KB.
const maxForwardBytes = 96 << 10

// fitBatch returns how many of the first messages of batch fit, joined,
// in limit bytes: at least one.
func fitBatch(batch [][]byte, limit int) int {
	size := 2 // the brackets
	for i, m := range batch {
		if size += len(m) + min(i, 1); size > limit && i > 0 {
			return i
		}
	}
	return len(batch)
}

// joinBatch makes the message of a batch: a JSON array of the predictions,
// each as the local bus carried it.
func joinBatch(batch [][]byte) []byte {
	return append(append([]byte{'['}, bytes.Join(batch, []byte{','})...), ']')
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
