// Package fleetview keeps an operator's view of the fleet current from the
// fleet broker: the trucks' retained statuses, the models' retained release
// documents and, optionally, the trucks' events. `linkedge fleet` prints it
// and `linkedge console` serves it; both read it through this one package, so
// the terminal and the web page can never disagree about what a truck said.
package fleetview

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/linkedge/linkedge/internal/status"
	"github.com/linkedge/linkedge/internal/tlsconfig"
	"github.com/linkedge/linkedge/internal/topics"
)

// Config says where the view reads from. Zero values take the defaults.
type Config struct {
	// Broker is the fleet broker URL. Required.
	Broker string
	// Username and Password of an account that may read linkedge/v1/#
	// (the broker's operator role).
	Username, Password string
	// TLS settings for an ssl:// broker.
	TLS tlsconfig.Client
	// ClientID prefix; a random suffix keeps two views apart. Default
	// "linkedge-fleet".
	ClientID string
	// Events also subscribes to the trucks' events and keeps the last
	// EventsPerTruck of each truck. Events are not retained: the view holds
	// only those sent while it runs.
	Events bool
	// EventsPerTruck bounds the events kept per truck. Default 20.
	EventsPerTruck int
	// OnForwarded, if set, subscribes to the predictions the trucks
	// forward (linkedge/v1/trucks/{truck}/predictions/{model}: by default
	// each truck forwards its alerts only) and is called with each batch:
	// the truck and model of its topic, and when each prediction was made
	// by the truck's clock (zero when its time does not parse). It is
	// called on the MQTT client's goroutine, so it must not block. The
	// view keeps none of them.
	OnForwarded func(truck, model string, made []time.Time)
	// OnChange, if set, is called (without the view's lock held, on the MQTT
	// client's goroutine, so it must not block) after a truck's status or
	// events or a model's release changed; truck or model is empty.
	OnChange func(truck, model string)
	// OnConnectionLost and OnCurrent, if set, are called when the
	// connection drops (the view goes stale) and when, after a reconnect,
	// the subscription is back (the view is current again; staleSince says
	// since when it was not).
	OnConnectionLost func(err error)
	OnCurrent        func(staleSince time.Time)
	// ConnectTimeout bounds the first connection and subscription. Default 10s.
	ConnectTimeout time.Duration
	// Logger for dropped documents. Default: discarded.
	Logger *slog.Logger
}

// DefaultEventsPerTruck is Config.EventsPerTruck's default.
const DefaultEventsPerTruck = 20

// maxEventsPerTruck bounds Config.EventsPerTruck: a view of 10,000 trucks
// keeps at most this many events of 16 KB each per truck in memory.
const maxEventsPerTruck = 200

func (c *Config) setDefaults() {
	if c.ClientID == "" {
		c.ClientID = "linkedge-fleet"
	}
	if c.EventsPerTruck <= 0 {
		c.EventsPerTruck = DefaultEventsPerTruck
	}
	if c.EventsPerTruck > maxEventsPerTruck {
		c.EventsPerTruck = maxEventsPerTruck
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// ErrConnect wraps a failure to reach the broker or subscribe at Open.
var ErrConnect = errors.New("fleetview: cannot read the fleet from the broker")

// Release is what the view shows of a model's retained release document.
// The signature is not checked here: this is a view for people, and the
// trucks verify every document before they act on it.
type Release struct {
	Model  string `json:"model"`
	Serial int64  `json:"serial"`
	Stable struct {
		Version int64 `json:"version"`
	} `json:"stable"`
	Canary *struct {
		Version int64    `json:"version"`
		Percent int      `json:"percent"`
		Groups  []string `json:"groups"`
	} `json:"canary"`
}

// Snapshot is a copy of the view at one moment.
type Snapshot struct {
	Trucks   map[string]status.Status
	Releases map[string]Release
	// StaleSince is when the connection dropped; zero while the view is
	// current.
	StaleSince time.Time
}

// View is a live view of the fleet. Close it.
type View struct {
	cfg Config
	c   paho.Client

	mu     sync.Mutex
	trucks map[string]status.Status
	// presence is each truck's presence message read (true: online);
	// the Online shown combines it with the status (status.Online).
	presence   map[string]bool
	releases   map[string]Release
	events     map[string][]status.Event
	staleSince time.Time

	closeOnce sync.Once
}

// Open connects to the broker, subscribes and returns once the broker
// acknowledged the subscription (the retained documents then arrive over
// the next moments), or fails with ErrConnect. It reconnects by itself
// until Close.
func Open(ctx context.Context, cfg Config) (*View, error) {
	cfg.setDefaults()
	if cfg.Broker == "" {
		return nil, fmt.Errorf("%w: no broker URL", ErrConnect)
	}
	tlsCfg, err := cfg.TLS.Build()
	if err != nil {
		return nil, err
	}
	if err := cfg.TLS.CheckScheme(cfg.Broker); err != nil {
		return nil, err
	}
	v := &View{cfg: cfg, trucks: map[string]status.Status{}, presence: map[string]bool{}, releases: map[string]Release{}, events: map[string][]status.Event{}}
	// Subscribed on every connect: the session is a clean one, so after a
	// broker restart (or any reconnect) nothing arrives until it
	// subscribes again, and the retained documents it then gets bring the
	// view up to date.
	subscribed := make(chan error, 1)
	subscribe := func(c paho.Client) {
		subs := map[string]byte{topics.AllTruckStatus(): 1, topics.AllTruckPresence(): 1, topics.AllModelReleases(): 1}
		if cfg.Events {
			subs[topics.TruckEvents(topics.Wildcard)] = 1
		}
		if cfg.OnForwarded != nil {
			subs[topics.TruckPredictions(topics.Wildcard, topics.Wildcard)] = topics.PredictionsQoS
		}
		t := c.SubscribeMultiple(subs, nil)
		go func() {
			var err error
			if !t.WaitTimeout(cfg.ConnectTimeout) {
				err = fmt.Errorf("no answer from the broker in %s", cfg.ConnectTimeout)
			} else {
				err = t.Error()
			}
			if err == nil {
				v.mu.Lock()
				was := v.staleSince
				v.staleSince = time.Time{}
				v.mu.Unlock()
				if !was.IsZero() && cfg.OnCurrent != nil {
					cfg.OnCurrent(was)
				}
			}
			select {
			case subscribed <- err:
			default:
			}
		}()
	}
	o := paho.NewClientOptions()
	if tlsCfg != nil {
		o.SetTLSConfig(tlsCfg)
	}
	v.c = paho.NewClient(o.AddBroker(cfg.Broker).SetClientID(fmt.Sprintf("%s-%d", cfg.ClientID, time.Now().UnixNano()%1e6)).
		SetUsername(cfg.Username).SetPassword(cfg.Password).SetAutoReconnect(true).SetMaxReconnectInterval(5 * time.Second).
		SetOnConnectHandler(subscribe).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			v.mu.Lock()
			v.staleSince = time.Now()
			v.mu.Unlock()
			if cfg.OnConnectionLost != nil {
				cfg.OnConnectionLost(err)
			}
		}))
	v.c.AddRoute(topics.AllTruckStatus(), v.onStatus)
	v.c.AddRoute(topics.AllTruckPresence(), v.onPresence)
	v.c.AddRoute(topics.AllModelReleases(), v.onRelease)
	if cfg.Events {
		v.c.AddRoute(topics.TruckEvents(topics.Wildcard), v.onEvent)
	}
	if cfg.OnForwarded != nil {
		v.c.AddRoute(topics.TruckPredictions(topics.Wildcard, topics.Wildcard), v.onForwarded)
	}
	if t := v.c.Connect(); !t.WaitTimeout(cfg.ConnectTimeout) || t.Error() != nil {
		v.c.Disconnect(0)
		return nil, fmt.Errorf("%w: connect to %s: %v", ErrConnect, cfg.Broker, t.Error())
	}
	select {
	case err := <-subscribed:
		if err != nil {
			v.Close()
			return nil, fmt.Errorf("%w: subscribe: %w", ErrConnect, err)
		}
	case <-ctx.Done():
		v.Close()
		return nil, ctx.Err()
	}
	return v, nil
}

// Close disconnects. It is safe to call more than once.
func (v *View) Close() error {
	v.closeOnce.Do(func() { v.c.Disconnect(100) })
	return nil
}

func (v *View) onStatus(_ paho.Client, m paho.Message) {
	// The topic says which truck; a truck's own login can write only its
	// topics, while the document's "truck" member is whatever it wrote
	// (security review A7).
	truck, ok := topics.ParseTruckStatus(m.Topic())
	s, err := status.Parse(m.Payload())
	if !ok || err != nil {
		v.cfg.Logger.Debug("dropped a status", "topic", m.Topic(), "err", err)
		return
	}
	s.Truck = truck
	v.mu.Lock()
	if prev, ok := v.trucks[s.Truck]; ok && !s.Online && s.Version == 0 {
		// The last will of an agent older than the presence topic
		// carries no version: keep the last one reported.
		s.Version, s.Desired, s.LastSeen = prev.Version, prev.Desired, prev.LastSeen
	}
	v.trucks[s.Truck] = *s
	v.mu.Unlock()
	v.changed(truck, "")
}

func (v *View) onPresence(_ paho.Client, m paho.Message) {
	truck, ok := topics.ParseTruckPresence(m.Topic())
	if !ok {
		return
	}
	online, err := status.ParsePresence(m.Payload())
	v.mu.Lock()
	if err != nil {
		// Cleared, or unreadable: the status alone says.
		delete(v.presence, truck)
		if len(m.Payload()) > 0 {
			v.cfg.Logger.Debug("dropped a presence", "topic", m.Topic(), "err", err)
		}
	} else {
		v.presence[truck] = online
	}
	v.mu.Unlock()
	v.changed(truck, "")
}

// shown is truck's status as the view shows it: online only if its
// presence (when one was read) and its status both say so. Under v.mu.
func (v *View) shown(truck string, s status.Status) status.Status {
	online, known := v.presence[truck]
	s.Online = status.Online(s, online, known)
	return s
}

func (v *View) onRelease(_ paho.Client, m paho.Message) {
	model, ok := topics.ParseModelRelease(m.Topic())
	if !ok {
		return
	}
	var a Release
	v.mu.Lock()
	if json.Unmarshal(m.Payload(), &a) != nil || a.Model != model {
		// An empty retained message clears the topic; anything else
		// unreadable is shown as no release rather than a stale one.
		delete(v.releases, model)
	} else {
		v.releases[model] = a
	}
	v.mu.Unlock()
	v.changed("", model)
}

func (v *View) onEvent(_ paho.Client, m paho.Message) {
	truck, ok := topics.ParseTruckEvents(m.Topic())
	e, err := status.ParseEvent(m.Payload())
	if !ok || err != nil {
		v.cfg.Logger.Debug("dropped an event", "topic", m.Topic(), "err", err)
		return
	}
	e.Truck = truck
	v.mu.Lock()
	evs := append(v.events[truck], *e)
	if n := len(evs) - v.cfg.EventsPerTruck; n > 0 {
		evs = append(evs[:0:0], evs[n:]...)
	}
	v.events[truck] = evs
	v.mu.Unlock()
	v.changed(truck, "")
}

// maxForwardedBatch bounds a forwarded batch the view reads, as
// inference/server.MaxForwardedBatch does (not imported: it would bring
// the ONNX Runtime into every reader of the fleet).
const maxForwardedBatch = 1 << 20

func (v *View) onForwarded(_ paho.Client, m paho.Message) {
	truck, model, ok := topics.ParseTruckPredictions(m.Topic())
	if !ok || len(m.Payload()) > maxForwardedBatch {
		v.cfg.Logger.Debug("dropped a forwarded batch", "topic", m.Topic(), "bytes", len(m.Payload()))
		return
	}
	// Only the times are read: the rest of each prediction is the
	// cloud's business, not the view's.
	var batch []struct {
		Time string `json:"time"`
	}
	if err := json.Unmarshal(m.Payload(), &batch); err != nil {
		v.cfg.Logger.Debug("dropped a forwarded batch", "topic", m.Topic(), "err", err)
		return
	}
	made := make([]time.Time, len(batch))
	for i, p := range batch {
		made[i], _ = time.Parse(time.RFC3339Nano, p.Time)
	}
	v.cfg.OnForwarded(truck, model, made)
}

func (v *View) changed(truck, model string) {
	if v.cfg.OnChange != nil {
		v.cfg.OnChange(truck, model)
	}
}

// Snapshot returns a copy of the whole view.
func (v *View) Snapshot() Snapshot {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := Snapshot{Trucks: make(map[string]status.Status, len(v.trucks)), Releases: make(map[string]Release, len(v.releases)), StaleSince: v.staleSince}
	for k, t := range v.trucks {
		s.Trucks[k] = v.shown(k, t)
	}
	for k, r := range v.releases {
		s.Releases[k] = r
	}
	return s
}

// Releases returns a copy of the models' releases alone, which costs
// nothing per truck, unlike Snapshot.
func (v *View) Releases() map[string]Release {
	v.mu.Lock()
	defer v.mu.Unlock()
	return maps.Clone(v.releases)
}

// Truck returns one truck's status and its events, oldest first.
func (v *View) Truck(id string) (status.Status, []status.Event, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	s, ok := v.trucks[id]
	return v.shown(id, s), append([]status.Event(nil), v.events[id]...), ok
}

// StaleSince is when the connection dropped; zero while the view is current.
func (v *View) StaleSince() time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.staleSince
}
