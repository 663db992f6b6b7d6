package edgeclient

import (
	"encoding/json"
	"errors"
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
// marks the truck offline. The will cannot change once connected, so it
// carries no version: readers keep the last version the truck reported.
func (a *Agent) fleetOptions() *paho.ClientOptions {
	will, _ := json.Marshal(status.Status{Schema: status.Schema, Truck: a.cfg.Truck, Model: a.cfg.Model, Online: false, Phase: "offline"})
	o := paho.NewClientOptions()
	if a.tls != nil {
		o.SetTLSConfig(a.tls)
	}
	return o.
		AddBroker(a.cfg.Fleet.Broker).
		SetClientID("linkedge-truck-"+a.cfg.Truck).
		SetUsername(a.cfg.Fleet.Username).SetPassword(a.cfg.Fleet.Password).
		SetCleanSession(false).
		SetStore(mqttstore.New()). // see the package: paho's MemoryStore races on resume
		SetKeepAlive(a.cfg.Fleet.KeepAlive).
		SetPingTimeout(10*time.Second).
		SetConnectTimeout(10*time.Second).
		SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(a.cfg.Fleet.MaxReconnectInterval).
		SetBinaryWill(topics.TruckStatus(a.cfg.Truck), will, topics.StatusQoS, topics.StatusRetain).
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

func (a *Agent) onConnect(c paho.Client) {
	a.setOnline(true, nil)
	subs := map[string]byte{
		topics.ModelRelease(a.cfg.Model): topics.ReleaseQoS,
		topics.TruckDesired(a.cfg.Truck): topics.DesiredQoS,
	}
	t := c.SubscribeMultiple(subs, a.onFleetMessage)
	go func() {
		if t.WaitTimeout(30*time.Second) && t.Error() != nil {
			a.log.Error("subscribe to releases failed", "err", t.Error())
		}
	}()
	a.publishStatus()
	if a.booted.CompareAndSwap(false, true) {
		a.publishEvent(status.Event{Kind: status.EventBooted, Version: a.Status().Version, Detail: "agent started"})
	}
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
	pin := m.Topic() == topics.TruckDesired(a.cfg.Truck)
	if pin && len(m.Payload()) == 0 {
		a.mu.Lock()
		had := a.pinRel != nil
		a.pinRel, a.pinDoc = nil, nil
		a.mu.Unlock()
		if err := a.store.SetDocument(update.PinDocument, nil); err != nil {
			a.log.Error("cannot forget the pin on disk", "err", err)
		}
		if !had {
			return
		}
		a.log.Info("per-truck pin cleared")
		a.kick()
		return
	}
	r, err := a.verifier.Verify(m.Payload())
	if err == nil && r.Model != a.cfg.Model {
		err = errors.New("release is for model " + r.Model + ", this truck runs " + a.cfg.Model)
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
		doc := update.ReleaseDocument
		if pin {
			doc = update.PinDocument
		}
		if err := a.store.SetDocument(doc, m.Payload()); err != nil {
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
	a.fleetState = fs
	if pin {
		a.pinRel, a.pinDoc = r, m.Payload()
	} else {
		a.fleetRel, a.fleetDoc = r, m.Payload()
	}
	a.st.Serial = max(a.st.Serial, r.Serial)
	a.mu.Unlock()
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

// publishStatus sends the retained status when the fleet link is up. While
// offline there is nothing to send it to; the first status after a
// reconnect replaces the will.
func (a *Agent) publishStatus() {
	if a.fleet == nil || !a.fleet.IsConnectionOpen() {
		return
	}
	st := a.Status()
	st.LastSeen = time.Now().UTC()
	data, _ := json.Marshal(st)
	a.fleet.Publish(topics.TruckStatus(a.cfg.Truck), topics.StatusQoS, topics.StatusRetain, data)
}

func (a *Agent) publishEvent(e status.Event) {
	if a.fleet == nil || !a.fleet.IsConnectionOpen() {
		return
	}
	e.Schema, e.Truck, e.Time = status.Schema, a.cfg.Truck, time.Now().UTC()
	if e.Model == "" {
		e.Model = a.cfg.Model
	}
	data, _ := json.Marshal(e)
	a.fleet.Publish(topics.TruckEvents(a.cfg.Truck), topics.EventsQoS, false, data)
}
