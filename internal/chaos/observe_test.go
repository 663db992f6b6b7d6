//go:build linux

package chaos

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/status"
	"github.com/linkedge/linkedge/internal/topics"
)

// observer watches the fleet broker as an operator would: the retained
// truck status, the truck events and the signed releases. It connects to
// the broker directly, not through the truck's faulty link, with a
// persistent session so that events published while it reconnects after a
// broker restart are queued for it.
type observer struct {
	client   paho.Client
	verifier *release.Verifier

	mu       sync.Mutex
	status   *status.Status // latest status seen (retained or live)
	statusAt time.Time
	events   []status.Event
	releases map[int64]release.Artifact // version → artifact of a verified release
	bad      []string                   // documents that did not parse or verify
}

func newObserver(brokerAddr, clientID string, pub ed25519.PublicKey) (*observer, error) {
	o := &observer{verifier: &release.Verifier{Keys: []ed25519.PublicKey{pub}}, releases: map[int64]release.Artifact{}}
	opts := paho.NewClientOptions().AddBroker("tcp://" + brokerAddr).SetClientID(clientID).
		SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(200 * time.Millisecond).SetMaxReconnectInterval(500 * time.Millisecond).
		SetKeepAlive(5 * time.Second).SetConnectTimeout(3 * time.Second)
	// Order matters (paho's default, said out loud): the latest status must
	// be the last one published, not the last handler to finish.
	opts.SetOrderMatters(true)
	opts.SetOnConnectHandler(func(c paho.Client) {
		// Resubscribe on every connect: a broker restarted from its store
		// keeps the session, but subscribing again costs nothing and covers
		// a store that lost it.
		c.SubscribeMultiple(map[string]byte{
			topics.AllTruckStatus():             1,
			topics.TruckEvents(topics.Wildcard): 1,
			topics.AllModelReleases():           1,
		}, o.onMessage)
	})
	o.client = paho.NewClient(opts)
	tok := o.client.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		o.client.Disconnect(0)
		return nil, fmt.Errorf("observer: connect to %s: timed out", brokerAddr)
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("observer: connect to %s: %w", brokerAddr, err)
	}
	return o, nil
}

func (o *observer) onMessage(_ paho.Client, m paho.Message) {
	o.mu.Lock()
	defer o.mu.Unlock()
	t := m.Topic()
	switch {
	case isStatus(t):
		if len(m.Payload()) == 0 {
			return
		}
		s, err := status.Parse(m.Payload())
		if err != nil {
			o.bad = append(o.bad, fmt.Sprintf("status on %s: %v", t, err))
			return
		}
		o.status, o.statusAt = s, time.Now()
	case isEvents(t):
		e, err := status.ParseEvent(m.Payload())
		if err != nil {
			o.bad = append(o.bad, fmt.Sprintf("event on %s: %v", t, err))
			return
		}
		o.events = append(o.events, *e)
	default:
		if len(m.Payload()) == 0 {
			return
		}
		// Verified without the clock: the point is which bytes the
		// publisher signed for which version.
		r, err := o.verifier.VerifyAtRest(m.Payload())
		if err != nil {
			o.bad = append(o.bad, fmt.Sprintf("release on %s: %v", t, err))
			return
		}
		o.releases[r.Stable.Version] = r.Stable.Artifact
		if r.Canary != nil {
			o.releases[r.Canary.Version] = r.Canary.Artifact
		}
	}
}

func isStatus(topic string) bool { _, ok := topics.ParseTruckStatus(topic); return ok }
func isEvents(topic string) bool { _, ok := topics.ParseTruckEvents(topic); return ok }

func (o *observer) lastStatus() (*status.Status, time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.status == nil {
		return nil, time.Time{}
	}
	s := *o.status
	return &s, o.statusAt
}

func (o *observer) allEvents() []status.Event {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]status.Event(nil), o.events...)
}

func (o *observer) release(version int64) (release.Artifact, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	a, ok := o.releases[version]
	return a, ok
}

func (o *observer) close() { o.client.Disconnect(100) }

// retainedStatus subscribes afresh, as a new operator tool would, and
// returns the retained status of truck the broker holds now.
func retainedStatus(brokerAddr, truck string) (*status.Status, error) {
	got := make(chan []byte, 1)
	opts := paho.NewClientOptions().AddBroker("tcp://" + brokerAddr).
		SetClientID(fmt.Sprintf("chaos-retained-%d", time.Now().UnixNano())).SetCleanSession(true).
		SetConnectTimeout(3 * time.Second).SetAutoReconnect(false)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5 * time.Second) {
		return nil, errors.New("connect for the retained status: timed out")
	} else if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("connect for the retained status: %w", err)
	}
	defer c.Disconnect(100)
	tok := c.Subscribe(topics.TruckStatus(truck), 1, func(_ paho.Client, m paho.Message) {
		if m.Retained() {
			select {
			case got <- append([]byte(nil), m.Payload()...):
			default:
			}
		}
	})
	if !tok.WaitTimeout(5 * time.Second) {
		return nil, errors.New("subscribe for the retained status: timed out")
	} else if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("subscribe for the retained status: %w", err)
	}
	select {
	case b := <-got:
		return status.Parse(b)
	case <-time.After(5 * time.Second):
		return nil, fmt.Errorf("no retained status on %s within 5s", topics.TruckStatus(truck))
	}
}
