package broker

import (
	"bytes"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"
)

var _ mqtt.Hook = (*retainQuota)(nil)

// retainQuota caps the retained topics one user holds
// (Config.MaxRetainedPerUser). The publisher role may retain anywhere under
// models/#, trucks/+/desired and trucks/+/grant: without a cap, one leaked
// publisher login could fill the broker's memory and storage with retained
// messages, which mochi keeps in memory and the store on disk. Trucks are
// left out: each retains its status alone (authHook.OnPublish), a topic no
// other role may write, so counting (and recording) 10,000 statuses would
// only cost.
//
// A user holds a topic while the retained message there is the one it
// wrote: an empty retained message clears the topic and frees the slot, and
// a user who overwrites another's retained message takes the slot over.
// Over the cap, a retained publish that needs a new slot is delivered
// without the retain flag, as a truck's off its status is, counted in
// linkedge_broker_retain_dropped_total.
//
// OnPublish (and OnWill) refuse or reserve a slot; OnRetainMessage, which
// mochi calls once it has written, counts, so the counts are what is
// retained; OnPacketProcessed (OnWillSent) gives back a slot reserved for a
// publish that mochi did not retain after all. With a DataDir, each
// topic's holder is stored next to its retained message (holderKey) and
// the counts are rebuilt from the store at start (loadRetainHolders).
// Every call is a few map operations under one lock (retained publishes
// are serialised by retainGuard anyway); only a change of holder, which
// the publisher's releases and pins make once per topic, writes a record.
//
// Without a users file there are no users to count, and the hook is not
// installed; nor is it with a negative MaxRetainedPerUser (no cap).
type retainQuota struct {
	mqtt.HookBase
	max     int
	users   map[string]User
	dropped *atomic.Int64 // authHook.retainDropped
	log     *slog.Logger
	store   *boltStore // nil without a DataDir; set by Broker.openStore before Serve

	// mu guards the maps. It is not held while writing to the store, so
	// the fleet's retained publishes do not queue behind a disk write;
	// loadRetainHolders takes it with store.mu held.
	mu       sync.Mutex
	holder   map[string]string       // retained topic -> the username holding it
	held     map[string]int          // username -> topics held or reserved
	reserved map[*mqtt.Client]string // client -> username of its reserved slot
	warned   map[string]*quotaWarning
}

// quotaWarning rate-limits the Warn logged for one user over the cap, so a
// flood of refused publishes does not become a flood of log lines.
type quotaWarning struct {
	last       time.Time
	suppressed int
}

// quotaWarnEvery is how often a user over the cap is logged at most.
const quotaWarnEvery = time.Minute

func newRetainQuota(max int, users map[string]User, dropped *atomic.Int64, log *slog.Logger) *retainQuota {
	return &retainQuota{
		max: max, users: users, dropped: dropped, log: log,
		holder: map[string]string{}, held: map[string]int{},
		reserved: map[*mqtt.Client]string{}, warned: map[string]*quotaWarning{},
	}
}

// ID implements mqtt.Hook.
func (q *retainQuota) ID() string { return "linkedge-retain-quota" }

// Provides implements mqtt.Hook.
func (q *retainQuota) Provides(b byte) bool {
	switch b {
	case mqtt.OnPublish, mqtt.OnWill, mqtt.OnRetainMessage, mqtt.OnRetainedExpired, mqtt.OnPacketProcessed, mqtt.OnWillSent:
		return true
	}
	return false
}

// OnPublish implements mqtt.Hook.
func (q *retainQuota) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Retain && !cl.Net.Inline && len(pk.Payload) > 0 && !q.admit(cl, pk.TopicName, true) {
		pk.FixedHeader.Retain = false
	}
	return pk, nil
}

// OnWill implements mqtt.Hook. A delayed will is sent later without
// OnWillSent to end a reservation (mochi v2.7.9), so it is only checked.
func (q *retainQuota) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if will.Retain && !cl.Net.Inline && len(will.Payload) > 0 && !q.admit(cl, will.TopicName, will.WillDelayInterval == 0) {
		will.Retain = false
	}
	return will, nil
}

// admit reports whether cl's user may retain a message on topic, and if
// that takes a new slot and reserve is set, reserves it for cl.
func (q *retainQuota) admit(cl *mqtt.Client, topic string, reserve bool) bool {
	user := string(cl.Properties.Username)
	if !q.counts(user) {
		return true
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.holder[topic] == user {
		return true // a replacement: no new slot
	}
	n := q.held[user]
	if n < q.max {
		if reserve {
			q.held[user] = n + 1
			q.reserved[cl] = user
		}
		return true
	}
	q.dropped.Add(1)
	w := q.warned[user]
	if w == nil {
		w = &quotaWarning{}
		q.warned[user] = w
	}
	if now := time.Now(); now.Sub(w.last) >= quotaWarnEvery {
		q.log.Warn("mqtt retained publish refused: the user holds max_retained_per_user retained topics; delivered without the retain flag",
			"username", user, "client", cl.ID, "topic", topic, "held", n, "max_retained_per_user", q.max,
			"refused_since_last_warning", w.suppressed)
		w.last, w.suppressed = now, 0
	} else {
		w.suppressed++
	}
	return false
}

// counts reports whether user's retained topics are counted: those of
// the users of the file but trucks.
func (q *retainQuota) counts(user string) bool {
	u, ok := q.users[user]
	return ok && u.Role != RoleTruck
}

// OnRetainMessage implements mqtt.Hook: mochi has retained pk on its topic,
// or cleared the topic (an empty payload).
func (q *retainQuota) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, _ int64) {
	if !cl.Net.Inline && q.users[string(cl.Properties.Username)].Role == RoleTruck {
		return // its own status, which no counted user may write: nothing to count
	}
	topic := pk.TopicName
	q.mu.Lock()
	user, reserved := q.reserved[cl]
	if reserved {
		delete(q.reserved, cl)
	} else if user = string(cl.Properties.Username); cl.Net.Inline || !q.counts(user) {
		user = ""
	}
	prev, had := q.holder[topic]
	save, holder := false, ""
	switch {
	case len(pk.Payload) == 0 || user == "":
		// Cleared, or written by the in-process client or a truck, which
		// are not counted: the previous holder's slot is free.
		q.release(user, reserved)
		if had {
			q.release(prev, true)
			delete(q.holder, topic)
			save = true
		}
	case had && prev == user:
		q.release(user, reserved) // replaced its own: no new slot after all
	default:
		if had {
			q.release(prev, true)
		}
		if !reserved {
			q.held[user]++ // not reserved: a delayed will, or a race for the topic
		}
		q.holder[topic] = user
		save, holder = true, user
	}
	q.mu.Unlock()
	// Written outside the lock: the write waits for its commit, and a
	// fleet's other retained publishes need not wait for it too.
	if save {
		q.saveHolder(topic, holder)
	}
}

// release gives back one of user's slots, if taken.
func (q *retainQuota) release(user string, taken bool) {
	if !taken || user == "" {
		return
	}
	if n := q.held[user] - 1; n > 0 {
		q.held[user] = n
	} else {
		delete(q.held, user)
	}
}

// OnRetainedExpired implements mqtt.Hook.
func (q *retainQuota) OnRetainedExpired(topic string) {
	q.mu.Lock()
	prev, had := q.holder[topic]
	if had {
		q.release(prev, true)
		delete(q.holder, topic)
	}
	q.mu.Unlock()
	if had {
		q.saveHolder(topic, "")
	}
}

// OnPacketProcessed implements mqtt.Hook: a retained publish that mochi did
// not retain after all (another hook rejected it) gives its slot back.
func (q *retainQuota) OnPacketProcessed(cl *mqtt.Client, pk packets.Packet, _ error) {
	if pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Retain && q.counts(string(cl.Properties.Username)) {
		q.unreserve(cl)
	}
}

// OnWillSent implements mqtt.Hook.
func (q *retainQuota) OnWillSent(cl *mqtt.Client, _ packets.Packet) { q.unreserve(cl) }

func (q *retainQuota) unreserve(cl *mqtt.Client) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if user, ok := q.reserved[cl]; ok {
		delete(q.reserved, cl)
		q.release(user, true)
	}
}

// holderPrefix starts the keys of the holder records: "LEHOLD_{topic}" ->
// username. It shares no prefix with mochi's records (CL, SUB, IFM, RET,
// SYS), so mochi's own bolt hook, and older LinkEdge brokers, skip them.
const holderPrefix = "LEHOLD_"

func holderKey(topic string) string { return holderPrefix + topic }

// saveHolder records topic's holder, or deletes the record (user "").
//
// The record is written straight to the bolt file, in a transaction of its
// own, before the store writes the retained message itself (its hook comes
// later): a crash between the two leaves a record of a topic not retained,
// which the next start deletes. Only a change of holder writes, so the
// fleet's statuses and a publisher re-sending its releases and pins write
// nothing here. Two users retaining one topic at the same instant could
// have their records written in the other order than their messages; the
// next start then puts that one topic down to the wrong one of them.
func (q *retainQuota) saveHolder(topic, user string) {
	if q.store == nil {
		return
	}
	q.store.open(func() {
		if err := q.store.writeHolders(map[string]string{topic: user}); err != nil {
			q.log.Error("storage: cannot record the holder of a retained message", "topic", topic, "username", user, "error", err)
		}
	})
}

// writeHolders writes the holder records of the topics in one transaction;
// a user "" deletes the topic's record. The caller holds s.mu.
func (s *boltStore) writeHolders(holders map[string]string) error {
	if len(holders) == 0 {
		return nil
	}
	return s.kvHook.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(s.kvHook.bucket)
		for topic, user := range holders {
			var err error
			if user == "" {
				err = b.Delete([]byte(holderKey(topic)))
			} else {
				err = b.Put([]byte(holderKey(topic)), []byte(user))
			}
			if err != nil {
				return fmt.Errorf("holder of %s: %w", topic, err)
			}
		}
		return nil
	})
}

// loadRetainHolders rebuilds the quota's counts from the retained messages
// just read from the store and the holder records. A message without a
// record (stored by a broker before the cap, or without one) is put down
// to the user of its writer's session if the store kept one, and the
// record is then written; otherwise it is not counted. Records of topics
// no longer retained are deleted. mochi calls StoredRetainedMessages before
// any client can connect; the caller holds s.mu.
func (s *boltStore) loadRetainHolders(msgs []storage.Message) {
	q := s.quota
	holders := map[string]string{}
	prefix := []byte(holderPrefix)
	err := s.kvHook.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(s.kvHook.bucket).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			holders[string(k[len(prefix):])] = string(v)
		}
		return nil
	})
	if err != nil {
		q.log.Error("storage: cannot read the holders of retained messages; counted from their writers' sessions", "error", err)
	}
	fixes := map[string]string{}
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, m := range msgs {
		if len(m.Payload) == 0 {
			continue
		}
		user, ok := holders[m.TopicName]
		if ok {
			delete(holders, m.TopicName)
		} else if user = q.userOf(m.Origin); user != "" {
			fixes[m.TopicName] = user
		}
		if q.counts(user) {
			q.holder[m.TopicName] = user
			q.held[user]++
		}
	}
	for topic := range holders {
		fixes[topic] = "" // its message is gone
	}
	if err := s.writeHolders(fixes); err != nil {
		q.log.Error("storage: cannot update the holders of retained messages", "error", err)
	}
	for user, n := range q.held {
		if n > q.max {
			q.log.Warn("mqtt user holds more retained topics than max_retained_per_user; it may retain more only after clearing some",
				"username", user, "held", n, "max_retained_per_user", q.max)
		}
	}
}

// userOf guesses the counted user of client id, for a retained message
// stored without a holder record: the user of its stored session, "" when
// there is none or it is not counted.
func (q *retainQuota) userOf(id string) string {
	if cl, ok := q.store.srv.Clients.Get(id); ok && !cl.Net.Inline && q.counts(string(cl.Properties.Username)) {
		return string(cl.Properties.Username)
	}
	return ""
}
