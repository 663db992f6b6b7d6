package broker

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"
)

// kvHook is the broker's bbolt storage: the records and keys of mochi's
// bolt hook (hooks/storage/bolt, v2.7.9), so a broker.db written by it
// loads unchanged, written differently. mochi's hook wrote every queued
// message, acknowledgement and retained message in a transaction of its
// own, with its own fsync, on the goroutine of the client whose packet
// caused it. mochi handles each client's packets one after the other, so
// the publisher's acknowledgements of 10,000 trucks' status reports, and
// the fan-out of one release to 10,000 queues, went through the disk one
// fsync at a time: about 500 trucks a second through an update, with 45 %
// of the broker's CPU in bbolt (`linkedge bench fleet`).
//
// Here one writer goroutine commits whatever writes are waiting, in the
// order they came, in one transaction and one fsync, and starts the next
// commit as soon as one ends (group commit, no added delay). Writes whose
// loss a restart would show wait for their commit (sync): retained
// messages (mochi acknowledges a retained publish after storing it),
// subscriptions and sessions. The others are queued and committed within
// a commit or two (async): a queued copy of a message for a subscriber
// (mochi acknowledges the publish before it fans out, so waiting there
// never protected the publisher's acknowledgement, and the fan-out loop
// paid an fsync per subscriber), and the deletions that follow an
// acknowledgement (losing one redelivers a message, which QoS 1 allows).
// A broker killed within that window (milliseconds) can lose those; one
// that stops cleanly drains the queue first.
//
// boltStore wraps it with the guards described there.
type kvHook struct {
	mqtt.HookBase
	db     *bbolt.DB
	bucket []byte

	mu      sync.Mutex
	queue   []kvOp
	wake    chan struct{} // a write was queued
	stop    chan struct{} // closed by Stop: drain and end
	stopped chan struct{} // closed when the writer has ended
	commits atomic.Int64  // transactions committed by the writer
}

// kvOp is one queued write: a put, or a delete when val is nil. done, if
// set, receives the commit's result.
type kvOp struct {
	key, val []byte
	done     chan error
}

// maxCommit bounds the writes of one transaction.
const maxCommit = 5000

// ID implements mqtt.Hook.
func (h *kvHook) ID() string { return "linkedge-bolt-kv" }

// Provides implements mqtt.Hook: the hooks that write or restore state
// ($SYS counters are not stored; see boltStore).
func (h *kvHook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnSubscribed, mqtt.OnUnsubscribed,
		mqtt.OnRetainMessage, mqtt.OnWillSent, mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnQosDropped,
		mqtt.OnClientExpired, mqtt.OnRetainedExpired,
		mqtt.StoredClients, mqtt.StoredInflightMessages, mqtt.StoredRetainedMessages, mqtt.StoredSubscriptions, mqtt.StoredSysInfo,
	}, []byte{b})
}

// Init opens the database; config is a *bolt.Options (mochi's, for the
// path, bucket and bbolt options).
func (h *kvHook) Init(config any) error {
	o, ok := config.(*bolt.Options)
	if !ok || o == nil || o.Path == "" {
		return fmt.Errorf("bolt storage: %w: want *bolt.Options with a path", mqtt.ErrInvalidConfigType)
	}
	bucket := o.Bucket
	if bucket == "" {
		bucket = "mochi"
	}
	db, err := bbolt.Open(o.Path, 0o600, o.Options)
	if err != nil {
		return err
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte(bucket))
		return err
	}); err != nil {
		db.Close()
		return err
	}
	h.db, h.bucket = db, []byte(bucket)
	h.wake, h.stop, h.stopped = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	go h.writer()
	return nil
}

// Stop commits what is queued and closes the database. The caller makes
// sure no write comes after it (boltStore).
func (h *kvHook) Stop() error {
	if h.db == nil {
		return nil
	}
	close(h.stop)
	<-h.stopped
	return h.db.Close()
}

// writer commits the queue until Stop, then once more.
func (h *kvHook) writer() {
	defer close(h.stopped)
	for {
		select {
		case <-h.wake:
		case <-h.stop:
			for h.commit() {
			}
			return
		}
		for h.commit() {
		}
	}
}

// commit writes up to maxCommit queued writes in one transaction and
// reports whether there were any.
func (h *kvHook) commit() bool {
	h.mu.Lock()
	n := min(len(h.queue), maxCommit)
	ops := h.queue[:n:n]
	h.queue = h.queue[n:]
	h.mu.Unlock()
	if n == 0 {
		return false
	}
	err := h.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(h.bucket)
		for _, op := range ops {
			var err error
			if op.val == nil {
				err = b.Delete(op.key)
			} else {
				err = b.Put(op.key, op.val)
			}
			if err != nil {
				return fmt.Errorf("key %s: %w", op.key, err)
			}
		}
		return nil
	})
	h.commits.Add(1)
	if err != nil {
		h.Log.Error("storage: a commit failed; its writes are lost", "writes", n, "error", err)
	}
	for _, op := range ops {
		if op.done != nil {
			op.done <- err
		}
	}
	return true
}

// enqueue queues a write and, when sync, waits for its commit.
func (h *kvHook) enqueue(key string, val []byte, sync bool) {
	op := kvOp{key: []byte(key), val: val}
	if sync {
		op.done = make(chan error, 1)
	}
	h.mu.Lock()
	h.queue = append(h.queue, op)
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default: // a wake-up is pending already
	}
	if sync {
		<-op.done // the commit logged any error
	}
}

// Keys, as mochi's hook builds them.
func clientKey(id string) string { return storage.ClientKey + "_" + id }
func subscriptionKey(id, filter string) string {
	return storage.SubscriptionKey + "_" + id + ":" + filter
}
func retainedKey(topic string) string { return storage.RetainedKey + "_" + topic }
func inflightKey(id string, pk packets.Packet) string {
	return storage.InflightKey + "_" + id + ":" + pk.FormatID()
}

// flush waits until every write queued before it is committed.
func (h *kvHook) flush() { h.enqueue("\x00flush", nil, true) }

// put writes a record (see kvHook for sync).
func (h *kvHook) put(key string, v storage.Serializable, sync bool) {
	data, err := v.MarshalBinary()
	if err != nil {
		h.Log.Error("storage: cannot encode a record", "key", key, "error", err)
		return
	}
	if data == nil {
		data = []byte{}
	}
	h.enqueue(key, data, sync)
}

// del deletes a record (see kvHook for sync).
func (h *kvHook) del(key string, sync bool) { h.enqueue(key, nil, sync) }

// each calls visit with the value of every key that starts with prefix.
func (h *kvHook) each(prefix string, visit func([]byte) error) error {
	p := []byte(prefix)
	return h.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(h.bucket).Cursor()
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			if err := visit(v); err != nil {
				return err
			}
		}
		return nil
	})
}

func messageProps(p packets.Properties) storage.MessageProperties {
	p = p.Copy(false)
	return storage.MessageProperties{
		PayloadFormat: p.PayloadFormat, MessageExpiryInterval: p.MessageExpiryInterval, ContentType: p.ContentType,
		ResponseTopic: p.ResponseTopic, CorrelationData: p.CorrelationData, SubscriptionIdentifier: p.SubscriptionIdentifier,
		TopicAlias: p.TopicAlias, User: p.User,
	}
}

// OnSessionEstablished records the client (its will included).
func (h *kvHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) { h.saveClient(cl) }

// OnWillSent records the client without the will it no longer has.
func (h *kvHook) OnWillSent(cl *mqtt.Client, _ packets.Packet) { h.saveClient(cl) }

func (h *kvHook) saveClient(cl *mqtt.Client) {
	p := cl.Properties.Props.Copy(false)
	h.put(clientKey(cl.ID), &storage.Client{
		ID: cl.ID, T: storage.ClientKey, Remote: cl.Net.Remote, Listener: cl.Net.Listener,
		Username: cl.Properties.Username, Clean: cl.Properties.Clean, ProtocolVersion: cl.Properties.ProtocolVersion,
		Properties: storage.ClientProperties{
			SessionExpiryInterval: p.SessionExpiryInterval, AuthenticationMethod: p.AuthenticationMethod,
			AuthenticationData: p.AuthenticationData, RequestProblemInfo: p.RequestProblemInfo,
			RequestResponseInfo: p.RequestResponseInfo, ReceiveMaximum: p.ReceiveMaximum,
			TopicAliasMaximum: p.TopicAliasMaximum, User: p.User, MaximumPacketSize: p.MaximumPacketSize,
		},
		Will: storage.ClientWill(cl.Properties.Will),
	}, true)
}

// OnDisconnect deletes the client's record when its session ends, unless
// another connection took the session over.
func (h *kvHook) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if !expire || errors.Is(cl.StopCause(), packets.ErrSessionTakenOver) {
		return
	}
	h.del(clientKey(cl.ID), false)
}

// OnSubscribed records each granted filter.
func (h *kvHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	for i, f := range pk.Filters {
		if i >= len(codes) {
			break
		}
		key := subscriptionKey(cl.ID, f.Filter)
		h.put(key, &storage.Subscription{
			ID: key, T: storage.SubscriptionKey, Client: cl.ID, Qos: codes[i], Filter: f.Filter, Identifier: f.Identifier,
			NoLocal: f.NoLocal, RetainHandling: f.RetainHandling, RetainAsPublished: f.RetainAsPublished,
		}, true)
	}
}

// OnUnsubscribed deletes each filter's record.
func (h *kvHook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	for _, f := range pk.Filters {
		h.del(subscriptionKey(cl.ID, f.Filter), true)
	}
}

// OnRetainMessage records a retained message, or deletes it (r == -1).
func (h *kvHook) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	key := retainedKey(pk.TopicName)
	if r == -1 {
		h.del(key, true)
		return
	}
	h.put(key, &storage.Message{
		ID: key, T: storage.RetainedKey, FixedHeader: pk.FixedHeader, TopicName: pk.TopicName, Payload: pk.Payload,
		Created: pk.Created, Client: cl.ID, Origin: pk.Origin, Properties: messageProps(pk.Properties),
	}, true)
}

// OnQosPublish records a message queued for cl.
func (h *kvHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, _ int) {
	key := inflightKey(cl.ID, pk)
	h.put(key, &storage.Message{
		ID: key, T: storage.InflightKey, Client: cl.ID, Origin: pk.Origin, FixedHeader: pk.FixedHeader,
		TopicName: pk.TopicName, Payload: pk.Payload, Sent: sent, Created: pk.Created, Properties: messageProps(pk.Properties),
	}, false)
}

// OnQosComplete deletes a message cl acknowledged.
func (h *kvHook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	h.del(inflightKey(cl.ID, pk), false)
}

// OnQosDropped deletes a message dropped from cl's queue.
func (h *kvHook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) { h.OnQosComplete(cl, pk) }

// OnRetainedExpired deletes an expired retained message.
func (h *kvHook) OnRetainedExpired(topic string) { h.del(retainedKey(topic), false) }

// OnClientExpired deletes an expired session's client record.
func (h *kvHook) OnClientExpired(cl *mqtt.Client) { h.del(clientKey(cl.ID), false) }

// StoredClients reads every client record, unfiltered (boltStore filters).
func (h *kvHook) StoredClients() ([]storage.Client, error) {
	var out []storage.Client
	err := h.each(storage.ClientKey+"_", func(v []byte) error {
		var c storage.Client
		if err := c.UnmarshalBinary(v); err != nil {
			h.Log.Warn("storage: skipping an unreadable record", "error", err)
			return nil
		}
		out = append(out, c)
		return nil
	})
	return out, err
}

// StoredSubscriptions reads every subscription record.
func (h *kvHook) StoredSubscriptions() ([]storage.Subscription, error) {
	out := []storage.Subscription{}
	err := h.each(storage.SubscriptionKey+"_", func(v []byte) error {
		var s storage.Subscription
		if err := s.UnmarshalBinary(v); err != nil {
			h.Log.Warn("storage: skipping an unreadable record", "error", err)
			return nil
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

// StoredRetainedMessages reads every retained message.
func (h *kvHook) StoredRetainedMessages() ([]storage.Message, error) {
	return h.messages(storage.RetainedKey + "_")
}

// StoredInflightMessages reads every queued message.
func (h *kvHook) StoredInflightMessages() ([]storage.Message, error) {
	return h.messages(storage.InflightKey + "_")
}

func (h *kvHook) messages(prefix string) ([]storage.Message, error) {
	out := []storage.Message{}
	err := h.each(prefix, func(v []byte) error {
		var m storage.Message
		if err := m.UnmarshalBinary(v); err != nil {
			h.Log.Warn("storage: skipping an unreadable record", "error", err)
			return nil
		}
		out = append(out, m)
		return nil
	})
	return out, err
}
