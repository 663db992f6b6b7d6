package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
)

// Profile names a managed broker whose limits this broker enforces on top
// of its own, so that LinkEdge's parts are run (and tested) against what
// that service accepts before a fleet moves to it.
type Profile string

const (
	// ProfileNone enforces no service's limits: the default.
	ProfileNone Profile = ""
	// ProfileAWSIoTCore enforces AWS IoT Core's message-broker limits; see
	// docs/aws-iot-core.md.
	ProfileAWSIoTCore Profile = "aws-iot-core"
)

// AWS IoT Core's published message-broker limits (AWS General Reference,
// "AWS IoT Core endpoints and quotas"), as ProfileAWSIoTCore enforces them.
const (
	// IoTCoreMaxFilters is the most topic filters one SUBSCRIBE may carry.
	IoTCoreMaxFilters = 8
	// IoTCoreMaxSlashes is the most '/' in a topic name or filter.
	IoTCoreMaxSlashes = 7
	// IoTCoreMaxTopicBytes is the longest topic name or filter.
	IoTCoreMaxTopicBytes = 256
	// IoTCoreMaxPayload is the largest message payload.
	IoTCoreMaxPayload = 128 << 10
	// IoTCoreMaxClientID is the longest client id.
	IoTCoreMaxClientID = 128
	// IoTCoreMinKeepAlive and IoTCoreMaxKeepAlive bound the keep-alive, in
	// seconds. IoT Core does not refuse a value outside: it serves the
	// connection as if the nearest bound had been asked for, and 0 (none)
	// as the maximum.
	IoTCoreMinKeepAlive = 30
	IoTCoreMaxKeepAlive = 1200
	// IoTCoreMaxInflight is the most QoS 1 messages sent to one client and
	// not yet acknowledged; more wait in the session until PUBACKs come.
	IoTCoreMaxInflight = 100
	// IoTCoreSessionExpiry is IoT Core's default persistent-session expiry,
	// and IoTCoreMaxSessionExpiry the most a quota increase gives.
	IoTCoreSessionExpiry    = time.Hour
	IoTCoreMaxSessionExpiry = 7 * 24 * time.Hour
)

// valid reports whether p is a profile this broker knows.
func (p Profile) valid() bool { return p == ProfileNone || p == ProfileAWSIoTCore }

// defaultSessionExpiry is how long a disconnected persistent session is
// kept when Config.SessionExpiry is left out.
func (p Profile) defaultSessionExpiry(maxMessageExpiry time.Duration) time.Duration {
	if p == ProfileAWSIoTCore {
		return IoTCoreSessionExpiry
	}
	return maxMessageExpiry
}

// sessionExpiry is SessionExpiry, or its default when zero. The default is
// worked out on use rather than by setDefaults, so that it follows a
// profile or max_message_expiry set after the defaults were applied (by
// the YAML file, or a flag).
func (c *Config) sessionExpiry() time.Duration {
	if c.SessionExpiry == 0 {
		return c.Profile.defaultSessionExpiry(c.MaxMessageExpiry)
	}
	return c.SessionExpiry
}

// validateProfile reports mistakes in the profile and the settings it
// bounds; cc has its defaults applied.
func (cc *Config) validateProfile() []error {
	var errs []error
	exp := cc.sessionExpiry()
	if !cc.Profile.valid() {
		errs = append(errs, fmt.Errorf("profile %q: want %q or leave it out", cc.Profile, ProfileAWSIoTCore))
	}
	switch {
	case exp < time.Second:
		errs = append(errs, fmt.Errorf("session_expiry: %s is below the 1s minimum", exp))
	case exp > maxExpiry:
		errs = append(errs, fmt.Errorf("session_expiry: %s exceeds the %s maximum", exp, maxExpiry))
	case cc.Profile == ProfileAWSIoTCore && exp > IoTCoreMaxSessionExpiry:
		errs = append(errs, fmt.Errorf("session_expiry: %s is more than AWS IoT Core keeps a session (%s at most, 1h by default); lower it or leave the profile out", exp, IoTCoreMaxSessionExpiry))
	}
	return errs
}

// checkThingNames refuses truck usernames that cannot be AWS IoT thing
// names ([A-Za-z0-9:_-], 1-128): under the profile a truck's username is its
// thing name and its client id.
func checkThingNames(users map[string]User) error {
	for name, u := range users {
		if u.Role != RoleTruck {
			continue
		}
		if i := strings.IndexFunc(name, func(r rune) bool {
			return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '_' || r == '-' || r == ':')
		}); i >= 0 {
			return fmt.Errorf("%w: truck %q cannot be an AWS IoT thing name (it has %q; thing names use A-Z a-z 0-9 _ - :); rename the truck or leave the %s profile out",
				ErrInvalidUsersFile, name, name[i], ProfileAWSIoTCore)
		}
	}
	return nil
}

var _ mqtt.Hook = (*iotCoreHook)(nil)

// iotCoreHook enforces ProfileAWSIoTCore's limits on the clients' packets.
// The client-id rule (a truck connects under its thing name) is the auth
// hook's, which knows the users; the session expiry and QoS 1 ceiling are
// mochi's capabilities, set in New.
type iotCoreHook struct {
	mqtt.HookBase
	srv *mqtt.Server
	log *slog.Logger

	refused *prometheus.CounterVec // by limit

	// qos2 marks QoS 2 publishes from MQTT 3.1.1 clients, seen in
	// OnPacketRead (mochi lowers them to QoS 1 before OnPublish), for
	// OnPublish to drop unacknowledged.
	qos2 sync.Map // displacedKey -> struct{}

	mu sync.Mutex
	// released are the messages mochi took out of a client's in-flight
	// table as it sent them; see OnPacketSent.
	released map[*mqtt.Client][]packets.Packet
}

func newIoTCoreHook(srv *mqtt.Server, log *slog.Logger) *iotCoreHook {
	return &iotCoreHook{
		srv: srv, log: log, released: map[*mqtt.Client][]packets.Packet{},
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkedge_broker_profile_refused_total",
			Help: "Packets the aws-iot-core profile refused, by the limit they broke (filters, slashes, topic_bytes, payload, qos2, client_id).",
		}, []string{"limit"}),
	}
}

// ID implements mqtt.Hook.
func (h *iotCoreHook) ID() string { return "linkedge-aws-iot-core" }

// Provides implements mqtt.Hook.
func (h *iotCoreHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnPacketRead, mqtt.OnPublish,
		mqtt.OnPacketSent, mqtt.OnDisconnect:
		return true
	}
	return false
}

// OnConnect implements mqtt.Hook: the client id's length, the keep-alive
// as IoT Core serves it, and the in-flight quota.
func (h *iotCoreHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if len(cl.ID) > IoTCoreMaxClientID {
		h.count("client_id")
		h.log.Warn("mqtt connection refused", "reason", fmt.Sprintf("client id of %d bytes; AWS IoT Core takes at most %d", len(cl.ID), IoTCoreMaxClientID), "remote", cl.Net.Remote)
		_ = h.srv.SendConnack(cl, packets.ErrClientIdentifierNotValid, false, nil)
		return packets.ErrClientIdentifierNotValid
	}
	ka := pk.Connect.Keepalive
	switch {
	case ka == 0 || ka > IoTCoreMaxKeepAlive:
		ka = IoTCoreMaxKeepAlive
	case ka < IoTCoreMinKeepAlive:
		ka = IoTCoreMinKeepAlive
	}
	if ka != pk.Connect.Keepalive {
		cl.State.Keepalive = ka
		// An MQTT 5 client learns the value from the CONNACK's Server
		// Keep Alive; a 3.1.1 client keeps pinging at its own pace, which
		// is fine below the bound and its own problem above it.
		cl.State.ServerKeepalive = cl.Properties.ProtocolVersion == 5
	}
	cl.State.Inflight.ResetSendQuota(h.quota(cl))
	return nil
}

// quota is the in-flight limit for cl: IoT Core's, or an MQTT 5 client's
// own receive maximum if lower.
func (h *iotCoreHook) quota(cl *mqtt.Client) int32 {
	if rm := cl.Properties.Props.ReceiveMaximum; rm > 0 && rm < IoTCoreMaxInflight {
		return int32(rm)
	}
	return IoTCoreMaxInflight
}

// OnSessionEstablish implements mqtt.Hook. A client that reconnects at
// once can take its session over before its old connection's goroutine
// has let go (OnDisconnect): what OnPacketSent noted for the old one is
// put back now, before mochi copies its in-flight table to the new one.
func (h *iotCoreHook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	if old, ok := h.srv.Clients.Get(cl.ID); ok && old != cl {
		h.restore(old)
	}
}

// OnSessionEstablished implements mqtt.Hook. Resuming a session that held
// messages replaces the client's in-flight table with a copy whose quota
// mochi resets to none (MQTT 3.1.1) and then resends every message in it,
// so the quota is set again here, less what is now out unacknowledged.
func (h *iotCoreHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	cl.State.Inflight.ResetSendQuota(h.quota(cl))
	for _, m := range cl.State.Inflight.GetAll(false) {
		if m.FixedHeader.Type == packets.Publish && m.Expiry >= 0 {
			cl.State.Inflight.DecreaseSendQuota()
		}
	}
}

// OnPacketRead implements mqtt.Hook: the limits on what a client sends.
// A packet that breaks one closes the connection (an MQTT 5 client gets a
// DISCONNECT saying why first), except a QoS 2 publish from an MQTT 3.1.1
// client, which IoT Core neither delivers nor acknowledges.
func (h *iotCoreHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	h.restore(cl)
	switch pk.FixedHeader.Type {
	case packets.Publish:
		if err := checkTopic(pk.TopicName); err != nil {
			return pk, h.reject(cl, err.limit, packets.ErrTopicNameInvalid, "publish to %q: %s", truncTopic(pk.TopicName), err.msg)
		}
		if n := len(pk.Payload); n > IoTCoreMaxPayload {
			return pk, h.reject(cl, "payload", packets.ErrPacketTooLarge, "publish to %q: payload of %d bytes; AWS IoT Core takes at most %d", truncTopic(pk.TopicName), n, IoTCoreMaxPayload)
		}
		if pk.FixedHeader.Qos == 2 {
			if cl.Properties.ProtocolVersion == 5 {
				return pk, h.reject(cl, "qos2", packets.ErrQosNotSupported, "publish to %q at QoS 2; AWS IoT Core supports QoS 0 and 1", truncTopic(pk.TopicName))
			}
			h.count("qos2")
			h.log.Warn("mqtt publish dropped unacknowledged", "reason", "QoS 2; AWS IoT Core supports QoS 0 and 1", "client", cl.ID, "topic", truncTopic(pk.TopicName))
			h.qos2.Store(displacedKey{cl, pk.PacketID}, struct{}{})
		}
	case packets.Subscribe:
		if n := len(pk.Filters); n > IoTCoreMaxFilters {
			return pk, h.reject(cl, "filters", packets.ErrQuotaExceeded, "subscribe with %d topic filters; AWS IoT Core takes at most %d per SUBSCRIBE: send several", n, IoTCoreMaxFilters)
		}
		for _, f := range pk.Filters {
			if err := checkTopic(f.Filter); err != nil {
				return pk, h.reject(cl, err.limit, packets.ErrTopicFilterInvalid, "subscribe to %q: %s", truncTopic(f.Filter), err.msg)
			}
			if f.Qos == 2 {
				// IoT Core sends no SUBACK at all; closing surfaces the
				// mistake at once instead of leaving the client waiting.
				return pk, h.reject(cl, "qos2", packets.ErrQosNotSupported, "subscribe to %q at QoS 2; AWS IoT Core supports QoS 0 and 1", truncTopic(f.Filter))
			}
		}
	}
	return pk, nil
}

// OnPublish implements mqtt.Hook: drops the QoS 2 publishes OnPacketRead
// marked, unacknowledged.
func (h *iotCoreHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if _, ok := h.qos2.LoadAndDelete(displacedKey{cl, pk.PacketID}); ok {
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// OnPacketSent implements mqtt.Hook. mochi (v2.7.9) parks a QoS 1 message
// that finds a client's send quota spent in the client's in-flight table,
// marked by Expiry -1, and sends one after each packet the client sends
// while quota is left. But as it sends a parked message it deletes it from
// the table without telling the storage: that message would never be
// resent if the client dropped before acknowledging it, its PUBACK would
// find nothing and give no quota back (so every release shrinks the quota
// for good), and its stored record would outlive it. Resuming a session
// sends parked messages too and leaves them parked, to be sent again.
//
// So a parked message seen going out is noted here and put back in the
// table, as an ordinary in-flight message, before the client's next packet
// is handled (OnPacketRead) or its connection is let go (OnDisconnect):
// mochi deletes it right after this call returns.
func (h *iotCoreHook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Qos == 0 || pk.Expiry >= 0 {
		return
	}
	h.mu.Lock()
	h.released[cl] = append(h.released[cl], pk)
	h.mu.Unlock()
}

// OnDisconnect implements mqtt.Hook; see OnPacketSent.
func (h *iotCoreHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.restore(cl)
	h.qos2.Range(func(k, _ any) bool {
		if k.(displacedKey).cl == cl {
			h.qos2.Delete(k)
		}
		return true
	})
}

// restore puts the messages OnPacketSent noted for cl back in its
// in-flight table.
func (h *iotCoreHook) restore(cl *mqtt.Client) {
	h.mu.Lock()
	list := h.released[cl]
	delete(h.released, cl)
	h.mu.Unlock()
	for _, m := range list {
		m.Expiry = m.Created + h.srv.Options.Capabilities.MaximumMessageExpiryInterval
		cur, ok := cl.State.Inflight.Get(m.PacketID)
		if ok && (cur.FixedHeader.Type != packets.Publish || cur.Created != m.Created || cur.TopicName != m.TopicName) {
			continue // the id went to another message meanwhile
		}
		if cl.State.Inflight.Set(m) {
			atomic.AddInt64(&h.srv.Info.Inflight, 1)
		}
	}
}

// topicError says which limit a topic broke.
type topicError struct{ limit, msg string }

// checkTopic applies IoT Core's limits on a topic name or filter.
func checkTopic(topic string) *topicError {
	if n := len(topic); n > IoTCoreMaxTopicBytes {
		return &topicError{"topic_bytes", fmt.Sprintf("%d bytes; AWS IoT Core takes at most %d", n, IoTCoreMaxTopicBytes)}
	}
	if n := strings.Count(topic, "/"); n > IoTCoreMaxSlashes {
		return &topicError{"slashes", fmt.Sprintf("%d slashes; AWS IoT Core takes at most %d (8 levels)", n, IoTCoreMaxSlashes)}
	}
	return nil
}

// reject logs and counts a broken limit and closes the client's connection
// (after a DISCONNECT naming code, for an MQTT 5 client). The error makes
// mochi stop reading from the client.
func (h *iotCoreHook) reject(cl *mqtt.Client, limit string, code packets.Code, format string, args ...any) error {
	h.count(limit)
	reason := fmt.Sprintf(format, args...)
	h.log.Warn("mqtt client disconnected by the aws-iot-core profile", "reason", reason, "client", cl.ID,
		"username", string(cl.Properties.Username), "remote", cl.Net.Remote)
	if cl.Properties.ProtocolVersion == 5 {
		_ = h.srv.DisconnectClient(cl, code)
	}
	return fmt.Errorf("%s: %w", reason, errors.Join(packets.ErrRejectPacket, code))
}

func (h *iotCoreHook) count(limit string) { h.refused.WithLabelValues(limit).Inc() }

// truncTopic shortens a client's topic for a log line.
func truncTopic(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
