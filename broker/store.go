package broker

import (
	"errors"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// storeFile is the bolt database's file name inside Config.DataDir.
const storeFile = "broker.db"

var errStoreClosed = errors.New("broker storage closed")

var _ mqtt.Hook = (*boltStore)(nil)

// boltStore is the broker's storage: kvHook (mochi's bolt records, with
// group commit) with the defects of mochi's bolt hook that matter
// to LinkEdge fixed (mochi v2.7.9, hooks/storage/bolt):
//
//   - The hook saves queued (inflight) messages without their packet id, so
//     after a restart every queued message of a session came back with id 0,
//     overwrote the others and was resent with an invalid id. The id is still
//     in the record's key; StoredInflightMessages puts it back.
//   - Subscriptions and queued messages of the in-process (inline) client were
//     saved and, after a restart, reloaded as a network session that queued
//     every matching QoS>0 message forever. Inline session data is not saved.
//   - Records of sessions that no longer exist (clean sessions after a crash,
//     expired sessions) were reloaded into the topic index on every start.
//     They are deleted while loading.
//   - Stop could close the database while mochi's housekeeping loop or an
//     in-process publish was still writing to it (a data race on the
//     database pointer, which Stop sets to nil). All calls are serialised
//     against Stop and become no-ops afterwards.
//   - A client's own QoS 1 publish could delete the record of a message
//     queued for it under the same packet id (see OnQosPublish).
//   - Resuming a session deleted the records of its queued messages and relied
//     on the resend to write them again; they are now kept (OnQosDropped).
//   - Sessions that end on disconnect (clean sessions) had every subscription
//     and QoS handshake written and synced although they are never restored;
//     only persistent sessions are written now.
//   - The $SYS counters were written every second (an fsync each) only to be
//     read back at start; they are instead recomputed from the loaded state.
type boltStore struct {
	*kvHook
	srv *mqtt.Server

	mu         sync.RWMutex
	closed     bool
	persistent map[string]bool // while loading: ids of stored persistent sessions
	quota      *retainQuota    // nil without a cap; its counts are loaded with the retained messages

	// restored holds, after a start that followed a crash, the ids of the
	// persistent sessions loaded that no client has resumed yet (see
	// sessionHook.OnSessionEstablished).
	restored sync.Map
}

func newBoltStore(srv *mqtt.Server) *boltStore {
	return &boltStore{kvHook: new(kvHook), srv: srv}
}

// ID implements mqtt.Hook.
func (s *boltStore) ID() string { return "linkedge-bolt" }

// Provides implements mqtt.Hook.
func (s *boltStore) Provides(b byte) bool {
	return b != mqtt.OnSysInfoTick && s.kvHook.Provides(b)
}

// Stop implements mqtt.Hook; it closes the database once.
func (s *boltStore) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.kvHook.Stop()
}

// firstSinceRestore reports whether id's session was loaded from disk at
// start and this is the first time a client resumes it.
func (s *boltStore) firstSinceRestore(id string) bool {
	_, ok := s.restored.LoadAndDelete(id)
	return ok
}

// session runs fn unless the store is closed or cl is the inline client,
// whose subscriptions are re-made by the embedding program on every start.
func (s *boltStore) session(cl *mqtt.Client, fn func()) {
	if cl.Net.Inline {
		return
	}
	s.open(fn)
}

// persistentSession is like session but also skips clients whose session
// ends when they disconnect: nothing of theirs is restored, so writing (and
// syncing) their subscriptions and QoS handshakes to disk was pure cost.
// Deletions keyed by client id (OnDisconnect, OnClientExpired) still run,
// since a clean session may replace a stored persistent one. (An MQTT 5
// client that lowers its session expiry to 0 in DISCONNECT leaves its
// subscription records behind; the next start deletes them as orphans.)
func (s *boltStore) persistentSession(cl *mqtt.Client, fn func()) {
	if sessionEndsOnDisconnect(cl.Properties.ProtocolVersion, cl.Properties.Clean, cl.Properties.Props.SessionExpiryInterval) {
		return
	}
	s.session(cl, fn)
}

// sessionEndsOnDisconnect is mochi's rule for sessions that are not kept.
func sessionEndsOnDisconnect(version byte, clean bool, expiry uint32) bool {
	return version < 5 && clean || version == 5 && expiry == 0
}

func (s *boltStore) open(fn func()) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.closed {
		fn()
	}
}

// The overrides below only add the guards described on boltStore.

func (s *boltStore) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	s.persistentSession(cl, func() { s.kvHook.OnSessionEstablished(cl, pk) })
}
func (s *boltStore) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	s.persistentSession(cl, func() { s.kvHook.OnWillSent(cl, pk) })
}
func (s *boltStore) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	s.session(cl, func() { s.kvHook.OnDisconnect(cl, err, expire) })
}
func (s *boltStore) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	s.persistentSession(cl, func() { s.kvHook.OnSubscribed(cl, pk, codes) })
}
func (s *boltStore) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	s.persistentSession(cl, func() { s.kvHook.OnUnsubscribed(cl, pk) })
}

// Queued-message records are keyed by client id and packet id, and mochi
// uses one packet-id space for both directions: the acknowledgement of a
// client's own QoS 1 publish is recorded and removed under the same key as a
// message queued for that client with the same id. mochi removes the record
// after sending PUBACK, by which time a message published to the (now
// offline) client may already have taken that id and been written, and the
// late removal deleted it. So acknowledgements of incoming QoS 1 publishes,
// which are answered at once and never need restoring, are not written, and a
// record is not removed while an outgoing message holds its id (removeQos).
func (s *boltStore) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	if pk.FixedHeader.Type == packets.Puback {
		return
	}
	s.persistentSession(cl, func() { s.kvHook.OnQosPublish(cl, pk, sent, resends) })
}
func (s *boltStore) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	s.persistentSession(cl, func() { s.removeQos(cl, pk) })
}

// removeQos deletes cl's record under pk's packet id unless an outgoing
// message holds that id: then the key belongs to that message. The
// deletion goes through the store's lane (kvHook.queue), which applies the
// records of queued messages in the order mochi made them and checks held
// again when it applies the deletion: a message that took the id and was
// queued before then has its record put first and kept, one queued after
// has its record put after the deletion.
func (s *boltStore) removeQos(cl *mqtt.Client, pk packets.Packet) {
	held := func() bool {
		m, ok := cl.State.Inflight.Get(pk.PacketID)
		return ok && outgoing(m)
	}
	if held() {
		return
	}
	s.kvHook.delQueued(inflightKey(cl.ID, pk), held)
}

// OnQosDropped keeps the record when cl has been taken over: the message was
// moved to the resumed session, which has the same client id and so the same
// record key. mochi's hook deleted it and relied on the resend to write it
// again, losing it if the truck dropped off mid-resend and the broker then
// restarted.
func (s *boltStore) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if cl.IsTakenOver() {
		return
	}
	s.persistentSession(cl, func() { s.removeQos(cl, pk) })
}
func (s *boltStore) OnClientExpired(cl *mqtt.Client) {
	s.session(cl, func() { s.kvHook.OnClientExpired(cl) })
}

// OnRetainMessage is not limited to network clients: retained messages
// published in-process must survive a restart too.
func (s *boltStore) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	s.open(func() { s.kvHook.OnRetainMessage(cl, pk, r) })
}
func (s *boltStore) OnRetainedExpired(filter string) {
	s.open(func() { s.kvHook.OnRetainedExpired(filter) })
}
