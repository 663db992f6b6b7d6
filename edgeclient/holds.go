package edgeclient

import (
	"context"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/linkedge/linkedge/internal/topics"
)

// holdState is the machine's view of the safety hold.
func (a *Agent) holdState() (bool, string) {
	st := a.holds.State()
	return st.Held, st.Reason
}

// startHoldBus takes holds from the truck's local bus: a retained message on
// linkedge/v1/local/hold/{app} holds, an empty one releases. Its own client,
// so that the inference bridge's subscriptions stay its own.
func (a *Agent) startHoldBus(ctx context.Context, url string, login localLogin) error {
	o := paho.NewClientOptions().AddBroker(url).
		SetClientID("linkedge-agent-hold-" + a.cfg.Truck).
		SetUsername(login.username).SetPassword(login.password).
		SetCleanSession(true). // retained holds come again with every subscribe
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(10 * time.Second).
		SetOnConnectHandler(func(c paho.Client) {
			c.Subscribe(topics.LocalHoldFilter, topics.LocalHoldQoS, a.onHoldMessage)
		})
	c := paho.NewClient(o)
	t := c.Connect()
	select {
	case <-t.Done():
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
	}
	if t.Error() != nil {
		a.log.Warn("local bus: hold topic not subscribed yet; retrying in the background", "err", t.Error())
	}
	a.holdBus = c
	return nil
}

func (a *Agent) onHoldMessage(_ paho.Client, m paho.Message) {
	app, _ := strings.CutPrefix(m.Topic(), topics.LocalHold(""))
	h, err := a.holds.Message(app, m.Payload())
	switch {
	case err != nil:
		a.log.Warn("hold refused", "topic", m.Topic(), "err", err)
	case len(m.Payload()) == 0:
		a.log.Info("hold released", "app", app)
	default:
		a.log.Info("hold set", "app", app, "reason", h.Reason, "until", h.Until.Format(time.RFC3339))
	}
}

// holdWatcher reports the hold in the status and wakes the updater when it
// changes: an application sets or releases it, a hold expires, a
// maintenance window opens or closes.
func (a *Agent) holdWatcher(ctx context.Context) {
	defer a.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	last := "\x00"
	for {
		st := a.holds.State()
		if st.Reason != last {
			last = st.Reason
			a.mu.Lock()
			a.st.Hold = st.Reason
			a.mu.Unlock()
			a.publishStatus()
			a.kick()
		}
		wait := time.Hour
		if !st.Next.IsZero() {
			wait = max(time.Until(st.Next), time.Second)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-a.holds.Changed():
		case <-timer.C:
		}
	}
}
