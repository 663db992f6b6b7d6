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

// forward queues one prediction for the fleet. A failure to write the queue
// costs that prediction, never the local answer, which went out already.
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
// removes one from the queue only once the broker acknowledged it. While
// the link is down it waits; the queue on disk keeps what comes meanwhile.
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
		online := a.online
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
		acked := false
		select {
		case <-ctx.Done():
			return
		case <-tok.Done():
			acked = tok.Error() == nil
		case <-time.After(30 * time.Second):
		}
		if !acked {
			// paho keeps the message of a dropped connection in its
			// session and may still deliver it: the queue sends it again
			// anyway, so the cloud sees it at least once.
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
