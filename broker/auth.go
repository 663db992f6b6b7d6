package broker

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"
)

var _ mqtt.Hook = (*authHook)(nil)

// authHook authenticates connections against the users file and enforces the
// role ACL (aclAllows). With no users it admits everyone, because mochi
// refuses every connection unless some hook approves it.
type authHook struct {
	mqtt.HookBase

	users map[string]User // nil: anonymous access; read-only after New
	// bindCert requires the client certificate's name to be the username.
	bindCert bool
	// thingNames (the aws-iot-core profile) makes a truck's client id its
	// username, its AWS IoT thing name, instead of linkedge-truck-{username}.
	thingNames bool
	// limits refuses logins from addresses that keep failing.
	limits *loginLimiter
	// queues, if set, is asked before each delivery whether the
	// subscriber's queue has room (sessionqueue.go).
	queues *sessionQueues
	// throttled counts logins refused unchecked by limits.
	throttled atomic.Int64
	clients   *mqtt.Clients // the server's sessions, for takeover checks
	log       *slog.Logger

	// dummyHash is compared against when the username is unknown, so an
	// unknown user costs as much bcrypt time as a wrong password and the
	// response time does not reveal which usernames exist.
	dummyHash []byte

	authFailures atomic.Int64
	aclDenied    [2]atomic.Int64 // indexed by aclIndex(write)
	// retainDropped counts trucks' retained publishes off their status.
	retainDropped atomic.Int64
}

func newAuthHook(users map[string]User, clients *mqtt.Clients, log *slog.Logger) *authHook {
	h := &authHook{users: users, clients: clients, log: log, limits: newLoginLimiter()}
	maxCost := -1
	for _, u := range users {
		// The costliest hash stands in for unknown users; see dummyHash.
		if c, err := bcrypt.Cost([]byte(u.PasswordHash)); err == nil && c > maxCost {
			maxCost, h.dummyHash = c, []byte(u.PasswordHash)
		}
	}
	return h
}

// ID implements mqtt.Hook.
func (h *authHook) ID() string { return "linkedge-auth" }

// Provides implements mqtt.Hook.
func (h *authHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck || b == mqtt.OnPublish
}

// truckClientPrefix is how the agent names its fleet session:
// linkedge-truck-{truck}. Such ids are reserved for that truck's user.
const truckClientPrefix = "linkedge-truck-"

// OnConnectAuthenticate implements mqtt.Hook.
func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	// mochi's in-process client is registered under this id; a network
	// client using it would take over (and break) the embedding program's
	// inline publishing and subscriptions.
	if cl.ID == mqtt.InlineClientId {
		return h.refuse(cl, "client id reserved for in-process use")
	}
	if h.users == nil {
		if h.thingNames && strings.HasPrefix(cl.ID, truckClientPrefix) {
			// IoT Core's policy admits a truck only under its thing
			// name: an agent still using the old id would be refused there.
			return h.refuse(cl, "a truck's client id is its thing name (fleet.client_id in truck.yaml), not "+truckClientPrefix+"{truck}, under the aws-iot-core profile")
		}
		return true
	}
	name := string(pk.Connect.Username)
	if h.limits.blocked(cl.Net.Remote, name) {
		h.throttled.Add(1)
		return h.refuse(cl, "too many failed logins from this address in the last minute; refused without checking")
	}
	u, known := h.users[name]
	hash := h.dummyHash
	if known {
		hash = []byte(u.PasswordHash)
	}
	if bcrypt.CompareHashAndPassword(hash, pk.Connect.Password) != nil || !known {
		h.limits.failed(cl.Net.Remote, name)
		return h.refuse(cl, "bad username or password")
	}
	if h.bindCert && !certNames(cl, name) {
		return h.refuse(cl, "the client certificate is not "+name+"'s (tls_bind_username)")
	}
	// mochi publishes a client's last will without any ACL check, so a
	// truck could otherwise plant a retained "model release" as its will.
	if pk.Connect.WillFlag && !aclAllows(u, pk.Connect.WillTopic, true) {
		return h.refuse(cl, "last will topic not permitted")
	}
	// A truck's session id is its own: no other user may create it first
	// (and lock the truck out, since a session belongs to its creator),
	// and a truck may not use another id.
	if reason := h.thingNameRefused(u, cl.ID); h.thingNames && reason != "" {
		return h.refuse(cl, reason)
	}
	switch {
	case h.thingNames:
		// thingNameRefused decided.
	case u.Role == RoleTruck && cl.ID != truckClientPrefix+name:
		return h.refuse(cl, "a truck's client id must be "+truckClientPrefix+"{username}")
	case u.Role != RoleTruck && strings.HasPrefix(cl.ID, truckClientPrefix):
		return h.refuse(cl, "client ids "+truckClientPrefix+"* belong to the trucks of those names")
	}
	if reason := localClientIDRefused(u, cl.ID); reason != "" {
		return h.refuse(cl, reason)
	}
	// A client id names a session, and taking a session over inherits its
	// subscriptions and queued messages. Only the user who created a session
	// may resume it, so one truck cannot drain (or kick off) another's.
	if existing, ok := h.clients.Get(cl.ID); ok && !bytes.Equal(existing.Properties.Username, pk.Connect.Username) {
		return h.refuse(cl, "client id belongs to another user's session")
	}
	return true
}

// thingNameRefused applies the aws-iot-core profile's client-id rule, which
// is IoT Core's policy variable iot:Connection.Thing.ThingName: a truck (a
// thing) connects with its username (its thing name) as client id, and
// nobody else may use that id, nor the linkedge-truck-* ids of the default
// mode. It returns why cl.ID is refused, or "".
func (h *authHook) thingNameRefused(u User, id string) string {
	switch {
	case u.Role == RoleTruck && id != u.Username:
		return "a truck's client id must be its username, its thing name, under the aws-iot-core profile (fleet.client_id in truck.yaml)"
	case u.Role != RoleTruck && h.users[id].Role == RoleTruck:
		return "client id " + id + " is a truck's thing name; only that truck may use it"
	case strings.HasPrefix(id, truckClientPrefix):
		return "client ids " + truckClientPrefix + "* are not used under the aws-iot-core profile: a truck's client id is its thing name"
	}
	return ""
}

// certNames reports whether the client's TLS certificate names user, by
// its common name or one of its DNS names.
func certNames(cl *mqtt.Client, user string) bool {
	tc, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		return false
	}
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return false
	}
	return certs[0].Subject.CommonName == user || slices.Contains(certs[0].DNSNames, user)
}

func (h *authHook) refuse(cl *mqtt.Client, reason string) bool {
	h.authFailures.Add(1)
	h.log.Warn("mqtt connection refused", "reason", reason, "client", cl.ID,
		"username", string(cl.Properties.Username), "remote", cl.Net.Remote)
	return false
}

// OnACLCheck implements mqtt.Hook. mochi calls it for each publish (write),
// each subscription filter and each delivery (read).
func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if h.users != nil {
		// Looked up on every check rather than cached on the client, so a
		// session restored from storage for a user no longer in the file
		// gets nothing.
		u, ok := h.users[string(cl.Properties.Username)]
		if !ok || !aclAllows(u, topic, write) {
			h.aclDenied[aclIndex(write)].Add(1)
			h.log.Debug("mqtt acl denied", "client", cl.ID, "username", string(cl.Properties.Username), "topic", topic, "write", write)
			return false
		}
	}
	// A read is also each delivery to a subscriber: its queue must have room.
	return write || h.queues == nil || h.queues.admit(cl, topic)
}

// OnPublish implements mqtt.Hook: a truck may retain a message on its
// status and presence topics only, so one truck login cannot fill the broker's retained
// store (the ACL already keeps it to its own few topics). Elsewhere the
// retain flag is dropped: the message is delivered, and acknowledged, as
// if sent without it.
func (h *authHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if h.users == nil || !pk.FixedHeader.Retain || cl.ID == mqtt.InlineClientId {
		return pk, nil
	}
	u, ok := h.users[string(cl.Properties.Username)]
	if ok && !retainAllowed(u, pk.TopicName) {
		h.retainDropped.Add(1)
		h.log.Debug("mqtt retain flag dropped", "client", cl.ID, "username", u.Username, "topic", pk.TopicName)
		pk.FixedHeader.Retain = false
	}
	return pk, nil
}

// retainAllowed reports whether u's retained publish to topic (one the ACL
// lets it write) keeps its retain flag: a truck retains its status and its
// presence only,
// and a sensor on a truck's local bus nothing (a retained reading would be
// scored again, stale, by every agent start and fill the bus's memory).
func retainAllowed(u User, topic string) bool {
	switch u.Role {
	case RoleTruck:
		return topic == topicTrucks+u.Username+"/status" || topic == topicTrucks+u.Username+"/presence"
	case RoleSensor:
		return false
	}
	return true
}

func aclIndex(write bool) int {
	if write {
		return 1
	}
	return 0
}
