package publisher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/linkedge/linkedge/internal/mqttstore"
	"github.com/linkedge/linkedge/internal/status"
	"github.com/linkedge/linkedge/internal/topics"
)

// Connection timings. The reconnect cap keeps a truck-facing broker's
// restart from delaying announcements by more than a few seconds.
const (
	connectTimeout       = 5 * time.Second
	connectRetryInterval = time.Second
	maxReconnectInterval = 10 * time.Second
	disconnectQuiesce    = 250 // milliseconds paho may spend sending DISCONNECT
)

// mqttOptions are the options both connection kinds share. The protocol is
// pinned to MQTT 3.1.1 so a refused connection is not retried as 3.1.
func mqttOptions(cfg *Config, clientID string) *paho.ClientOptions {
	o := paho.NewClientOptions()
	if tc, _ := cfg.TLS.Build(); tc != nil { // checked by Validate
		o.SetTLSConfig(tc)
	}
	return o.AddBroker(cfg.Broker).SetClientID(clientID).SetProtocolVersion(4).
		SetUsername(cfg.Username).SetPassword(cfg.Password).
		SetKeepAlive(30 * time.Second).SetConnectTimeout(connectTimeout).
		SetWriteTimeout(cfg.PublishTimeout)
}

// waitAck waits for a QoS 1 publish token: nil only once the PUBACK came.
func waitAck(ctx context.Context, tok paho.Token, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		return nil
	case <-t.C:
		return fmt.Errorf("%w within %s", ErrNoAck, timeout)
	case <-ctx.Done():
		return fmt.Errorf("waiting for the broker's acknowledgement: %w", ctx.Err())
	}
}

// session is the publisher service's MQTT connection. One goroutine, run,
// owns the client: it dials until connected, logging each new failure (paho's
// own retry loop would hide them, a wrong password included), then leaves
// reconnects to paho. The session is persistent (clean session off), so a
// publish interrupted by a brief drop is resent and still acknowledged.
//
// A publish that is not acknowledged in time is abandoned, and so is the
// client: paho would otherwise resend the stale document from its store
// after a later reconnect, possibly after a newer one, and the broker would
// retain the older. run then dials a fresh client, and the next poll signs
// a fresh document.
type session struct {
	cfg     *Config
	log     *slog.Logger
	metrics *metrics
	onUp    func() // called on every (re)connect, from paho's goroutine
	// onFailure is called, from paho's goroutine, when a failure event
	// waits to be persisted (see pending).
	onFailure func()
	// onGrant, if set, receives the trucks' download grant requests, from
	// paho's goroutine (it must not block); nil subscribes to none.
	onGrant func(topic string, data []byte)

	everUp  atomic.Bool      // connected at least once
	discard chan paho.Client // Send asks run to drop this client

	mu     sync.Mutex
	client paho.Client // nil while dialing

	// The release documents the broker retains, as seen through a
	// subscription made on every connect: a broker that restarted without
	// persistence has lost them, and the publisher announces them again.
	retMu      sync.Mutex
	retained   map[string]int64 // model → serial of the retained document
	echoed     map[string]int64 // model → highest serial the current subscription saw
	watchSince time.Time        // when the current subscription was made; zero while down

	// What the trucks report, for staged rollouts: each truck's last
	// status, and the failures its events announced. Kept across
	// reconnects: a report stays true until the truck sends a newer one.
	stMu     sync.Mutex
	trucks   map[string]truckReport
	failures map[modelVersion]map[string]string // → truck → error
	// trucksSince is when the status subscription of the current
	// connection was acknowledged; zero while down.
	trucksSince time.Time
	// pending are the failure events not yet in the state file. Their
	// messages are acknowledged only once they are (the session acks by
	// hand): the broker keeps an unacknowledged event for this persistent
	// session and sends it again after a reconnect, so a publisher that
	// stops or dies in between still counts it. persisted is what the
	// state file held at the last write, so that a repeated event is
	// acknowledged at once.
	pending   []pendingFailure
	persisted map[modelVersion]map[string]bool
}

// pendingFailure is a failure event waiting to be persisted.
type pendingFailure struct {
	mv     modelVersion
	truck  string
	detail string
	msg    paho.Message
}

// maxPendingFailures bounds the failure events held in memory while the
// state file cannot be written; the ones past it are left unacknowledged,
// and the broker sends them again after the next reconnect.
const maxPendingFailures = 10000

// truckReport is what a staged rollout needs from a truck's status.
type truckReport struct {
	model     string
	version   int64
	desired   int64
	phase     string
	lastError string
}

type modelVersion struct {
	model   string
	version int64
}

// watchTrucks subscribes to every truck's retained status and to their
// events. The status is the truck's present; the events (QoS 1, queued by
// the broker for this persistent session while the publisher is away)
// make sure a failure is heard even if the truck went offline right after
// it, when its last will replaces the status that told of it.
func (s *session) watchTrucks(c paho.Client) {
	s.stMu.Lock()
	s.trucksSince = time.Time{}
	s.stMu.Unlock()
	// The handlers are routes added before the connection (see dial):
	// queued events arrive right after CONNACK, before this runs.
	c.Subscribe(topics.TruckEvents(topics.Wildcard), topics.EventsQoS, nil)
	if s.onGrant != nil {
		c.Subscribe(topics.AllTruckGrantRequests(), topics.GrantQoS, nil)
	}
	tok := c.Subscribe(topics.AllTruckStatus(), topics.StatusQoS, nil)
	go func() {
		if tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
			s.stMu.Lock()
			s.trucksSince = time.Now()
			s.stMu.Unlock()
		}
	}()
}

// routeTrucks adds the handlers of the trucks' statuses and events to a
// client before it connects. paho starts the connect handler, which
// subscribes, after its reader: a message the broker queued for this
// persistent session and sent straight after CONNACK would otherwise find
// no route, and paho would drop it without acknowledging it.
func (s *session) routeTrucks(c paho.Client) {
	c.AddRoute(topics.AllTruckStatus(), func(_ paho.Client, m paho.Message) { s.onStatus(m) })
	c.AddRoute(topics.TruckEvents(topics.Wildcard), func(_ paho.Client, m paho.Message) { s.onEvent(m) })
	if s.onGrant != nil {
		c.AddRoute(topics.AllTruckGrantRequests(), func(_ paho.Client, m paho.Message) {
			m.Ack() // a lost request costs the truck one retry
			s.onGrant(m.Topic(), m.Payload())
		})
	}
}

func (s *session) onStatus(m paho.Message) {
	defer m.Ack() // the session acks by hand; a status needs no more than its handling
	truck, ok := topics.ParseTruckStatus(m.Topic())
	if !ok {
		return
	}
	st, err := status.Parse(m.Payload())
	s.stMu.Lock()
	defer s.stMu.Unlock()
	if s.trucks == nil {
		s.trucks = map[string]truckReport{}
	}
	switch {
	case err != nil || st.Truck != truck:
		delete(s.trucks, truck) // cleared, or not a status we can read
	case !st.Online && st.Version == 0:
		// The last will of an agent older than the presence topic
		// carries no version: the truck still runs what it last
		// reported. (Newer agents' wills go to the presence topic,
		// which the publisher does not need: it shows no online.)
	default:
		s.trucks[truck] = truckReport{model: st.Model, version: st.Version, desired: st.Desired, phase: st.Phase, lastError: st.LastError}
	}
}

// onEvent records a truck's failure event. Every other event is
// acknowledged at once; a failure only once it is in the state file (see
// pending), unless it is there already.
func (s *session) onEvent(m paho.Message) {
	ack := true
	defer func() {
		if ack {
			m.Ack()
		}
	}()
	truck, ok := topics.ParseTruckEvents(m.Topic())
	if !ok {
		return
	}
	ev, err := status.ParseEvent(m.Payload())
	if err != nil || ev.Truck != truck || ev.Model == "" || ev.Version < 1 {
		return
	}
	if ev.Kind != status.EventUpdateFailed && ev.Kind != status.EventRolledBack {
		return
	}
	s.stMu.Lock()
	defer s.stMu.Unlock()
	if s.failures == nil {
		s.failures = map[modelVersion]map[string]string{}
	}
	k := modelVersion{ev.Model, ev.Version}
	if s.failures[k] == nil {
		s.failures[k] = map[string]string{}
	}
	s.failures[k][truck] = ev.Detail
	if s.persisted[k][truck] {
		return
	}
	ack = false
	if len(s.pending) >= maxPendingFailures {
		return
	}
	s.pending = append(s.pending, pendingFailure{mv: k, truck: truck, detail: ev.Detail, msg: m})
	if s.onFailure != nil {
		s.onFailure()
	}
}

// pendingFailures returns the failure events waiting to be persisted.
func (s *session) pendingFailures() []pendingFailure {
	s.stMu.Lock()
	defer s.stMu.Unlock()
	return slices.Clone(s.pending)
}

// failuresPersisted records that the first n pending failures are handled
// (in the state file, or of no rollout there) and what the file now holds,
// then acknowledges their events.
func (s *session) failuresPersisted(n int, held map[modelVersion]map[string]bool) {
	s.stMu.Lock()
	done := s.pending[:n:n]
	s.pending = slices.Clone(s.pending[n:])
	s.persisted = held
	s.stMu.Unlock()
	// Off the caller's goroutine: an ack waits for paho's writer, which
	// waits for the network.
	go func() {
		for _, f := range done {
			f.msg.Ack()
		}
	}()
}

// forgetSettled drops the failures heard for versions no rollout can
// involve any more: those at or below the announced stable version, and
// those below the version of the model's rollout. A canary is always newer
// than both, so this bounds the memory without changing a decision. It also
// takes st as what the state file holds (see persisted).
func (s *session) forgetSettled(st *State) {
	held := heldFailures(st)
	s.stMu.Lock()
	defer s.stMu.Unlock()
	s.persisted = held
	for k := range s.failures {
		ms := st.Models[k.model]
		switch {
		case ms == nil:
		case ms.Announced != nil && k.version <= ms.Announced.Version,
			ms.Rollout != nil && k.version < ms.Rollout.Version:
			delete(s.failures, k)
		}
	}
}

// CanaryHealth implements [HealthView] from the trucks' reports.
func (s *session) CanaryHealth(model string, version int64) CanaryHealth {
	s.stMu.Lock()
	defer s.stMu.Unlock()
	h := CanaryHealth{Failed: map[string]string{}, Desired: map[string]int64{}, Settled: !s.trucksSince.IsZero() && time.Since(s.trucksSince) >= retainedGrace}
	for truck, detail := range s.failures[modelVersion{model, version}] {
		h.Failed[truck] = detail
	}
	for truck, r := range s.trucks {
		if r.model == model {
			h.Desired[truck] = r.desired
		}
		switch {
		case r.model != model:
		case r.version == version && (r.phase == phaseCommitted || r.phase == phaseIdle):
			// Idle: an agent restarted since it committed reports its
			// version with no update going on.
			h.Committed = append(h.Committed, truck)
			delete(h.Failed, truck) // it failed once, then made it (a retry)
		case r.desired == version && (r.phase == phaseFailed || r.phase == phaseRolledBack):
			h.Failed[truck] = r.lastError
		}
	}
	return h
}

// The agent's update phases a rollout acts on (edgeclient/update).
const (
	phaseCommitted  = "committed"
	phaseIdle       = "idle"
	phaseFailed     = "failed"
	phaseRolledBack = "rolled_back"
)

// retainedGrace is how long after subscribing the retained documents are
// taken to have all arrived.
const retainedGrace = 2 * time.Second

// watchRetained subscribes to every model's release topic and records the
// serial of what the broker retains.
func (s *session) watchRetained(c paho.Client) {
	s.retMu.Lock()
	s.retained, s.echoed, s.watchSince = map[string]int64{}, map[string]int64{}, time.Time{}
	s.retMu.Unlock()
	tok := c.Subscribe(topics.AllModelReleases(), topics.ReleaseQoS, func(_ paho.Client, m paho.Message) {
		defer m.Ack()
		model, ok := topics.ParseModelRelease(m.Topic())
		if !ok {
			return
		}
		var doc struct {
			Serial int64 `json:"serial"`
		}
		s.retMu.Lock()
		defer s.retMu.Unlock()
		if len(m.Payload()) == 0 || json.Unmarshal(m.Payload(), &doc) != nil {
			delete(s.retained, model)
			return
		}
		s.retained[model] = doc.Serial
		s.echoed[model] = max(s.echoed[model], doc.Serial)
	})
	go func() {
		if tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
			s.retMu.Lock()
			s.watchSince = time.Now()
			s.retMu.Unlock()
		}
	}()
}

// retainedSerial returns the serial the broker retains for model, the
// highest serial the subscription behind the view has seen, when that
// subscription was acknowledged, and whether the view is settled enough to
// act on (subscribed for a while: the retained messages follow the SUBACK
// on the wire).
func (s *session) retainedSerial(model string) (serial, echoed int64, since time.Time, settled bool) {
	s.retMu.Lock()
	defer s.retMu.Unlock()
	if s.watchSince.IsZero() || time.Since(s.watchSince) < retainedGrace {
		return 0, 0, time.Time{}, false
	}
	return s.retained[model], s.echoed[model], s.watchSince, true
}

// rewatch subscribes to the release topics again, so that the broker sends
// what it retains now: a view taken after an announcement, instead of
// waiting for the announcement's own echo.
func (s *session) rewatch() {
	s.mu.Lock()
	c := s.client
	s.mu.Unlock()
	if c != nil && c.IsConnectionOpen() {
		s.watchRetained(c)
	}
}

func newSession(cfg *Config, log *slog.Logger, m *metrics, onUp, onFailure func()) *session {
	return &session{cfg: cfg, log: log, metrics: m, onUp: onUp, onFailure: onFailure, discard: make(chan paho.Client, 1)}
}

// waitingForFirstConnect reports whether the session has never been
// connected: announcing is pointless then, and failing at it is not news.
func (s *session) waitingForFirstConnect() bool { return !s.everUp.Load() }

// run connects and keeps a client until ctx is done, then disconnects.
func (s *session) run(ctx context.Context) {
	for {
		c := s.dial(ctx)
		if c == nil {
			return
		}
		s.setClient(c)
		for keep := true; keep; {
			select {
			case <-ctx.Done():
				s.drop(c)
				return
			case old := <-s.discard:
				if keep = old != c; !keep {
					s.drop(c)
					s.log.Warn("abandoned an unacknowledged publish; reconnecting with a fresh client", "broker", s.cfg.Broker)
				}
			}
		}
	}
}

// dial connects a new client, retrying with backoff until ctx is done
// (then it returns nil).
func (s *session) dial(ctx context.Context) paho.Client {
	wait, lastErr := connectRetryInterval, ""
	for {
		// Acks by hand: a failure event is acknowledged only once it is
		// in the state file (see pending).
		c := paho.NewClient(mqttOptions(s.cfg, s.cfg.ClientID).
			SetCleanSession(false).SetStore(mqttstore.New()).SetAutoReconnect(true).SetConnectRetry(false).
			SetAutoAckDisabled(true).
			SetMaxReconnectInterval(maxReconnectInterval).
			SetOnConnectHandler(func(c paho.Client) {
				s.log.Info("connected to broker", "broker", s.cfg.Broker, "client_id", s.cfg.ClientID)
				s.everUp.Store(true)
				s.metrics.setConnected(true)
				s.watchRetained(c)
				s.watchTrucks(c)
				if s.onUp != nil {
					s.onUp()
				}
			}).
			SetConnectionLostHandler(func(_ paho.Client, err error) {
				s.retMu.Lock()
				s.watchSince = time.Time{}
				s.retMu.Unlock()
				s.stMu.Lock()
				s.trucksSince = time.Time{}
				s.stMu.Unlock()
				s.log.Warn("broker connection lost; reconnecting", "broker", s.cfg.Broker, "err", err)
				s.metrics.setConnected(false)
			}))
		s.routeTrucks(c)
		err := connect(ctx, c)
		if err == nil {
			return c
		}
		if ctx.Err() != nil {
			return nil
		}
		if msg := err.Error(); msg != lastErr {
			lastErr = msg
			s.log.Warn("cannot connect to the broker; retrying", "broker", s.cfg.Broker, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, maxReconnectInterval)
	}
}

func (s *session) setClient(c paho.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.client = c
}

func (s *session) drop(c paho.Client) {
	s.setClient(nil)
	c.Disconnect(disconnectQuiesce)
	s.metrics.setConnected(false)
}

// Send implements [Sender]. It refuses at once with [ErrNotConnected]
// while the connection is down rather than let paho queue the document.
func (s *session) Send(ctx context.Context, topic string, payload []byte) error {
	s.mu.Lock()
	c := s.client
	s.mu.Unlock()
	if c == nil || !c.IsConnectionOpen() {
		return fmt.Errorf("%w (%s); will retry once connected", ErrNotConnected, s.cfg.Broker)
	}
	err := waitAck(ctx, c.Publish(topic, topics.ReleaseQoS, topics.ReleaseRetain, payload), s.cfg.PublishTimeout)
	if err != nil {
		select {
		case s.discard <- c:
		default: // a request is pending already
		}
	}
	return err
}

// SendGrant publishes a download grant (QoS 1, not retained) and waits for
// the acknowledgement. Unlike [session.Send] it keeps the client when none
// comes: a grant sent twice is harmless, and the truck asks again anyway.
func (s *session) SendGrant(ctx context.Context, topic string, doc []byte) error {
	s.mu.Lock()
	c := s.client
	s.mu.Unlock()
	if c == nil || !c.IsConnectionOpen() {
		return fmt.Errorf("%w (%s)", ErrNotConnected, s.cfg.Broker)
	}
	return waitAck(ctx, c.Publish(topic, topics.GrantQoS, topics.GrantRetain, doc), s.cfg.PublishTimeout)
}

// connect makes one connection attempt, bounded by the client's connect
// timeout. If ctx ends first it returns ctx's error at once, without
// waiting for the attempt (a broker that accepts and never answers would
// hold a Close for the whole connect timeout); the attempt is then
// disconnected in the background as soon as it ends, so a late success
// never lingers as a second client with the same id. A refusal that
// retrying cannot fix wraps [ErrBrokerRefused].
func connect(ctx context.Context, c paho.Client) error {
	tok := c.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		go func() {
			<-tok.Done()
			c.Disconnect(0)
		}()
		return ctx.Err()
	}
	err := tok.Error()
	if err == nil && ctx.Err() != nil {
		c.Disconnect(0)
		err = ctx.Err()
	}
	if ct, ok := tok.(*paho.ConnectToken); ok && err != nil {
		switch ct.ReturnCode() {
		case packets.ErrRefusedBadUsernameOrPassword, packets.ErrRefusedNotAuthorised:
			return fmt.Errorf("%w: %v; check the username and password", ErrBrokerRefused, err)
		case packets.ErrRefusedIDRejected, packets.ErrRefusedBadProtocolVersion:
			return fmt.Errorf("%w: %v", ErrBrokerRefused, err)
		}
	}
	return err
}

// oneShot is the connection of [PublishOnce]: a clean session under its own
// client id (so it never takes over the service's session), no automatic
// reconnect, closed after one publish.
type oneShot struct {
	client  paho.Client
	timeout time.Duration
}

// dialOnce connects, retrying every second until ctx is done
// ([ErrBrokerUnreachable], with the last connection error) or the broker
// refuses the credentials ([ErrBrokerRefused], at once).
func dialOnce(ctx context.Context, cfg *Config, clientID string) (*oneShot, error) {
	for attempt := 1; ; attempt++ {
		timeout := connectTimeout
		if dl, ok := ctx.Deadline(); ok {
			timeout = min(timeout, max(time.Until(dl), 100*time.Millisecond))
		}
		c := paho.NewClient(mqttOptions(cfg, clientID).SetConnectTimeout(timeout).
			SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false))
		err := connect(ctx, c)
		switch {
		case err == nil:
			return &oneShot{client: c, timeout: cfg.PublishTimeout}, nil
		case errors.Is(err, ErrBrokerRefused):
			return nil, fmt.Errorf("%s: %w", cfg.Broker, err)
		case ctx.Err() != nil:
			return nil, fmt.Errorf("%w: %s, %d attempt(s), last error: %v", ErrBrokerUnreachable, cfg.Broker, attempt, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %s, %d attempt(s), last error: %v", ErrBrokerUnreachable, cfg.Broker, attempt, err)
		case <-time.After(connectRetryInterval):
		}
	}
}

// Send implements [Sender].
func (o *oneShot) Send(ctx context.Context, topic string, payload []byte) error {
	if !o.client.IsConnectionOpen() {
		return fmt.Errorf("%w: connection dropped before publishing", ErrNotConnected)
	}
	return waitAck(ctx, o.client.Publish(topic, topics.ReleaseQoS, topics.ReleaseRetain, payload), o.timeout)
}

func (o *oneShot) close() { o.client.Disconnect(disconnectQuiesce) }
