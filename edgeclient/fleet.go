package edgeclient

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net"
	"net/url"
	"reflect"
	"slices"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/linkedge/linkedge/edgeclient/update"
	"github.com/linkedge/linkedge/internal/mqttstore"
	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/status"
	"github.com/linkedge/linkedge/internal/topics"
)

// fleetOptions sets up the fleet connection: a persistent session (so QoS 1
// releases published while the truck was away are delivered when it is
// back), automatic reconnects with capped backoff, and a last will that
// marks the truck offline on its presence topic, so the broker never
// overwrites the retained status with it and a reconnect need not send the
// status again.
func (a *Agent) fleetOptions() *paho.ClientOptions {
	o := paho.NewClientOptions()
	if a.tls != nil {
		o.SetTLSConfig(a.tls)
	}
	a.fleetStore = mqttstore.New() // see the package: paho's MemoryStore races on resume
	if dialsItself(a.cfg.Fleet.Broker) {
		o.SetCustomOpenConnectionFn(func(uri *url.URL, o paho.ClientOptions) (net.Conn, error) {
			a.listsAtDial.Store(a.fleetStore.Lists())
			return a.dialer.open(uri, o)
		})
	}
	return o.
		AddBroker(a.cfg.Fleet.Broker).
		SetClientID(a.cfg.Fleet.ClientID).
		SetUsername(a.cfg.Fleet.Username).SetPassword(a.cfg.Fleet.Password).
		SetCleanSession(false).
		SetStore(a.fleetStore).
		SetKeepAlive(a.cfg.Fleet.KeepAlive).
		SetPingTimeout(10*time.Second).
		SetConnectTimeout(10*time.Second).
		SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(a.cfg.Fleet.MaxReconnectInterval).
		SetBinaryWill(topics.TruckPresence(a.cfg.Truck), a.will(), topics.PresenceQoS, topics.PresenceRetain).
		SetOrderMatters(true).
		SetOnConnectHandler(a.onConnect).
		SetConnectionLostHandler(func(_ paho.Client, err error) { a.setOnline(false, err) }).
		// paho calls this in line before each reconnect, so the link is
		// marked down before the resend of a persistent session completes
		// the old publish tokens: the forwarder never takes one of those
		// for a PUBACK (the connection-lost handler runs in a goroutine of
		// its own and may come later).
		SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) { a.setOnline(false, errors.New("reconnecting")) })
}

// will is the last will, on the presence topic: one word, since every
// CONNECT carries it.
func (a *Agent) will() []byte { return []byte(status.PresenceOffline) }

// publishPresence sets the retained presence; false if the link is down
// (or not yet through onConnect: see linkUp).
func (a *Agent) publishPresence(online bool) (paho.Token, bool) {
	if !a.linkUp() {
		return nil, false
	}
	p := status.PresenceOffline
	if online {
		p = status.PresenceOnline
	}
	a.link.presences.Add(1)
	return a.fleet.Publish(topics.TruckPresence(a.cfg.Truck), topics.PresenceQoS, topics.PresenceRetain, []byte(p)), true
}

// fleetSubscriptions are the agent's subscriptions on the fleet broker.
func (a *Agent) fleetSubscriptions() map[string]byte {
	return map[string]byte{
		topics.ModelRelease(a.cfg.Model): topics.ReleaseQoS,
		topics.TruckDesired(a.cfg.Truck): topics.DesiredQoS,
		topics.TruckGrant(a.cfg.Truck):   topics.GrantQoS,
	}
}

// linkUp reports whether the fleet link is up and onConnect has run: paho
// reports the connection open before it has resent its session store (see
// onConnect), and a QoS 1 message published in between goes out twice.
func (a *Agent) linkUp() bool {
	if a.fleet == nil || !a.fleet.IsConnectionOpen() {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.online
}

// publishFleet sends a QoS 1 message that is not retained on the fleet
// link; false if the link is down, or up but not yet through onConnect
// (see linkUp): a grant request sent in that window went out twice.
func (a *Agent) publishFleet(topic string, payload []byte) bool {
	if !a.linkUp() {
		return false
	}
	a.fleet.Publish(topic, 1, false, payload)
	return true
}

func (a *Agent) onConnect(c paho.Client) {
	// paho resends what its session store holds right after calling this
	// handler; a QoS 1 message published before it has read the store
	// (the presence below, a status, an event) would go out twice. When
	// paho dials, rather than the agent, there is no dial to mark: it may.
	if dialsItself(a.cfg.Fleet.Broker) && !a.fleetStore.WaitListed(a.listsAtDial.Load(), time.Second) {
		a.log.Debug("paho has not read its session store after 1s; publishing anyway")
	}
	a.setOnline(true, nil)
	// Replaces the will the broker may have published. The status is
	// statusLoop's: sent only if it changed meanwhile (or the broker may
	// have lost it), not on every reconnect.
	c.Publish(topics.TruckPresence(a.cfg.Truck), topics.PresenceQoS, topics.PresenceRetain, []byte(status.PresenceOnline))
	a.link.presences.Add(1)
	a.subscribe(c)
	select {
	case a.connected <- struct{}{}:
	default:
	}
	if a.booted.CompareAndSwap(false, true) {
		a.publishEvent(status.Event{Kind: status.EventBooted, Version: a.Status().Version, Detail: "agent started"})
	}
}

// subscribe subscribes to the releases unless the broker kept the session
// that holds the subscriptions already: re-subscribing would make it send
// every retained release again, on every reconnect. Whether it kept the
// session is the CONNACK's session-present flag; that the subscriptions
// were made on that session is in fleet.json, so it holds across agent
// restarts too.
func (a *Agent) subscribe(c paho.Client) {
	want := slices.Sorted(maps.Keys(a.fleetSubscriptions()))
	a.mu.Lock()
	done := slices.Equal(a.fleetState.Subscribed, want)
	a.mu.Unlock()
	if done && a.dialer.sessionPresent.Load() {
		a.log.Debug("fleet session kept by the broker; not subscribing again")
		return
	}
	a.link.subscribes.Add(1)
	t := c.SubscribeMultiple(a.fleetSubscriptions(), a.onFleetMessage)
	go func() {
		if !t.WaitTimeout(30 * time.Second) {
			a.log.Error("subscribe to releases: no answer from the broker in 30s")
			return
		}
		if t.Error() != nil {
			a.log.Error("subscribe to releases failed", "err", t.Error())
			return
		}
		for topic, code := range t.(*paho.SubscribeToken).Result() {
			if code >= 0x80 {
				a.log.Error("the broker refused a subscription", "topic", topic, "code", code)
				return
			}
		}
		a.mu.Lock()
		a.fleetState.Subscribed = want
		fs := a.fleetState
		a.mu.Unlock()
		if err := a.store.SetFleet(fs); err != nil {
			a.log.Warn("cannot record the subscriptions; the next connect subscribes again", "err", err)
		}
	}()
}

func (a *Agent) setOnline(on bool, cause error) {
	a.mu.Lock()
	changed := a.online != on
	a.online = on
	a.st.Online = on
	if changed {
		if on {
			a.offline = make(chan struct{})
		} else {
			close(a.offline)
		}
	}
	a.mu.Unlock()
	if !changed {
		return
	}
	if on {
		a.log.Info("fleet broker connected", "broker", a.cfg.Fleet.Broker)
		a.kick()
	} else {
		a.log.Warn("fleet broker connection lost; serving on, updates paused", "err", cause)
	}
}

// onFleetMessage handles a release or a pin. A document is trusted only
// after its signature verifies against a pinned key; anything refused is
// logged, reported in the status and as an event, and changes nothing.
func (a *Agent) onFleetMessage(_ paho.Client, m paho.Message) {
	a.link.documents.Add(1)
	if m.Topic() == topics.TruckGrant(a.cfg.Truck) {
		a.grants.deliver(m.Payload())
		return
	}
	pin := m.Topic() == topics.TruckDesired(a.cfg.Truck)
	if pin && len(m.Payload()) == 0 {
		// Anyone with write access to the topic could send one; only a
		// signed clearing pin clears a pin.
		a.mu.Lock()
		had := a.pinRel != nil
		a.mu.Unlock()
		if had {
			a.refuse(0, errors.New("an empty message on the pin topic clears nothing: clearing a pin takes a signed document (linkedge pin --clear)"))
		}
		return
	}
	r, err := a.verifier.Verify(m.Payload())
	if err == nil && r.Model != a.cfg.Model {
		err = errors.New("release is for model " + r.Model + ", this truck runs " + a.cfg.Model)
	}
	if err == nil {
		err = r.CheckAudience(a.cfg.Truck, pin)
	}
	if err != nil {
		a.refuse(0, err)
		return
	}
	// Model releases and per-truck pins are two streams, each with its own
	// serial: a pin must not make the fleet's (older) release look stale.
	a.mu.Lock()
	fs := a.fleetState
	a.mu.Unlock()
	last := fs.LastSerial
	if pin {
		last = fs.LastPinSerial
	}
	if r.Serial < last {
		a.mu.Lock()
		current := a.fleetRel
		if pin {
			current = a.pinRel
		}
		a.mu.Unlock()
		if r.SameTargets(current) {
			// An equivalent document signed a moment earlier, delivered
			// after the one accepted: two publishers running at once for
			// availability. Not a rollback, nothing to report.
			a.log.Debug("an older release with the same targets; ignoring it", "serial", r.Serial, "accepted", last)
			return
		}
		a.refuse(r.Serial, release.CheckNewer(r, last))
		return
	}
	newer := r.Serial > last
	if newer {
		if pin {
			fs.LastPinSerial = r.Serial
		} else {
			fs.LastSerial = r.Serial
		}
		doc, payload := update.ReleaseDocument, m.Payload()
		if pin {
			doc = update.PinDocument
			if r.Clear {
				payload = nil // the pin file goes; the serial stays
			}
		}
		if err := a.store.SetDocument(doc, payload); err != nil {
			a.log.Error("cannot record the release; ignoring it until it can", "err", err)
			return
		}
		if err := a.store.SetFleet(fs); err != nil {
			a.log.Error("cannot record the release serial; ignoring the release until it can", "err", err)
			return
		}
	}
	// The same serial is the broker re-sending the retained copy on a
	// reconnect or after a restart: nothing new, but after a restart it is
	// how the agent learns its targets again.
	a.mu.Lock()
	fs.Subscribed = a.fleetState.Subscribed // recorded meanwhile by subscribe
	a.fleetState = fs
	had := a.pinRel != nil
	switch {
	case pin && r.Clear:
		a.pinRel, a.pinDoc = nil, nil
	case pin:
		a.pinRel, a.pinDoc = r, m.Payload()
	default:
		a.fleetRel, a.fleetDoc = r, m.Payload()
	}
	a.st.Serial = max(a.st.Serial, r.Serial)
	a.mu.Unlock()
	if pin && r.Clear {
		if newer && had {
			a.log.Info("per-truck pin cleared", "serial", r.Serial)
			a.kick()
		}
		return
	}
	if newer {
		t, canary := r.TargetFor(a.cfg.Truck, a.cfg.Groups)
		a.log.Info("release accepted", "serial", r.Serial, "version", t.Version, "canary", canary, "pin", pin)
		a.supersede(t.Artifact.SHA256)
	}
	a.kick()
}

func (a *Agent) refuse(serial int64, err error) {
	a.log.Warn("release refused; nothing changes", "serial", serial, "reason", err)
	a.setError("release refused: " + err.Error())
	a.publishEvent(status.Event{Kind: status.EventReleaseRefused, Serial: serial, Detail: err.Error()})
	a.publishStatus()
}

// publishStatus asks for the retained status to go out; statusLoop sends
// it, coalescing what changes within a second into one message.
func (a *Agent) publishStatus() {
	select {
	case a.statusDirty <- struct{}{}:
	default:
	}
}

// sendStatus sends the retained status now, when the fleet link is up, and
// reports whether it went out. While offline there is nothing to send it
// to; what changed meanwhile goes out after the reconnect.
func (a *Agent) sendStatus() bool {
	if !a.linkUp() {
		return false
	}
	st := a.Status()
	st.LastSeen = time.Now().UTC()
	data, _ := json.Marshal(st)
	a.fleet.Publish(topics.TruckStatus(a.cfg.Truck), topics.StatusQoS, topics.StatusRetain, data)
	a.link.statuses.Add(1)
	return true
}

// statusKey is what makes a status worth sending: everything but the
// time and the prediction counters, which change with every reading and
// ride along with the next change or heartbeat, and the groups, which come
// from the configuration and never change while the agent runs.
func statusKey(st status.Status) status.Status {
	st.LastSeen, st.Predictions, st.Alerts, st.Groups = time.Time{}, 0, 0, nil
	return st
}

// statusLoop sends the status when it changed (at most once a second: the
// phases of an update that follow each other within a second go out as
// one), and every StatusInterval whatever happened (the heartbeat), and
// never when nothing changed in between. A reconnect sends it only if it
// changed while the link was down, or if the broker did not keep the
// session: a broker that lost the session may have lost its retained
// messages too (a restart without persistence), and the status must be
// there for readers. The will is on the presence topic and leaves the
// retained status alone.
func (a *Agent) statusLoop(ctx context.Context) {
	defer a.wg.Done()
	const gap = time.Second
	heartbeat := time.NewTicker(a.cfg.StatusInterval)
	defer heartbeat.Stop()
	var last status.Status
	var lastAt time.Time
	sent := false
	send := func(force bool) {
		key := statusKey(a.Status())
		if !force && sent && reflect.DeepEqual(key, last) {
			return
		}
		if a.sendStatus() {
			last, lastAt, sent = key, time.Now(), true
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.connected:
			send(!a.dialer.sessionPresent.Load())
		case <-heartbeat.C:
			send(true)
		case <-a.statusDirty:
			if wait := gap - time.Since(lastAt); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
			send(false)
		}
	}
}

func (a *Agent) publishEvent(e status.Event) {
	if !a.linkUp() {
		return
	}
	e.Schema, e.Truck, e.Time = status.Schema, a.cfg.Truck, time.Now().UTC()
	if e.Model == "" {
		e.Model = a.cfg.Model
	}
	data, _ := json.Marshal(e)
	a.fleet.Publish(topics.TruckEvents(a.cfg.Truck), topics.EventsQoS, false, data)
}
