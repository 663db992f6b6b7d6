package broker

import (
	"bytes"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"
)

// Group commit settings of the bbolt file (see kvHook.write).
const (
	// batchDelay is how long a write that arrives while others are in
	// progress waits for company before its transaction starts: about
	// two commits of this VM (0.4-0.5 ms each), so the writers the
	// previous commit released have time to join. A write with no other
	// in progress does not wait at all (see write). Measured with
	// TestConcurrentWritesShareCommits (400 writes of 40 trucks): 1 ms
	// took 19-45 transactions, 0.5 ms 52-100, 2 ms 18-31, and
	// BenchmarkPersistentFanIn could not tell them apart.
	batchDelay = time.Millisecond
	// batchSize starts a transaction at once when this many writes wait:
	// 1,000 records of a few hundred bytes are under a megabyte per
	// fsync, and a burst from 10,000 trucks commits in a handful of
	// transactions rather than one that makes everyone wait for it.
	batchSize = 1000
)

// kvHook reads and writes the broker's records in a bbolt file. Bucket,
// keys and records are those of mochi's bolt hook (hooks/storage/bolt,
// v2.7.9, which earlier LinkEdge versions used), so a broker.db written by
// either loads in the other. boltStore wraps it with the guards described
// there; kvHook itself writes what it is told.
//
// What differs is how writes reach the disk. mochi's hook committed every
// record in a transaction of its own, with its own fdatasync, on the
// goroutine of the client whose packet caused it: the broker's message
// rate was one fsync per queued message, acknowledgement and retained
// message, in series, and `linkedge bench fleet` found 45 % of its CPU in
// bbolt. Here concurrent writes share transactions (group commit, through
// bbolt's DB.Batch), and each caller still returns only once its own write
// is on disk, as before: nothing acknowledged is lost to a power cut.
//
// The records of queued messages are the exception: they go through the
// lane, one goroutine that commits them in order without making the
// client wait (see queue).
type kvHook struct {
	mqtt.HookBase
	db     *bbolt.DB
	bucket []byte

	writing atomic.Int64 // writes in progress; see write

	// crashed is set by Init when the file was last closed without Stop:
	// records the lane had not written yet may be missing.
	crashed bool

	lane     chan laneOp   // queued-message records, in order; nil until Init
	laneDone chan struct{} // closed when the lane's goroutine has ended
	laneTxs  atomic.Int64  // transactions the lane committed
}

// laneOp is one change to a queued message's record: a put (msg set), a
// delete (msg nil; kept if keep reports true when it is applied), or, with
// done set, a barrier that is closed once everything before it is on disk.
type laneOp struct {
	key  string
	msg  *storage.Message // encoded by the lane, and only if it is written
	keep func() bool
	done chan struct{}
}

// Lane sizes: laneCap changes may wait to be written before the clients
// queueing more wait for room, and one transaction takes at most
// laneBatch of them. laneGather is how long the lane waits for company
// after the first change of a transaction: a subscriber that is online
// acknowledges its copy within milliseconds, and a copy and its deletion
// in one transaction cancel out (see commitLane), so most copies to online
// trucks are never encoded or written.
const (
	laneCap    = 32 * 1024
	laneBatch  = 4096
	laneGather = 5 * time.Millisecond
)

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

// Init opens the database; config is mochi's *bolt.Options (path, bucket
// and bbolt options), which the broker passes.
func (h *kvHook) Init(config any) error {
	o, ok := config.(*bolt.Options)
	if !ok || o == nil || o.Path == "" {
		return fmt.Errorf("bolt storage: %w: want *bolt.Options with a path", mqtt.ErrInvalidConfigType)
	}
	bucket := o.Bucket
	if bucket == "" {
		bucket = "mochi" // mochi's default, so its files load
	}
	opts := o.Options
	if opts == nil {
		opts = &bbolt.Options{Timeout: storeLockTimeout} // never wait forever for the file lock
	}
	db, err := bbolt.Open(o.Path, 0o600, opts)
	if err != nil {
		return err
	}
	db.MaxBatchDelay, db.MaxBatchSize = batchDelay, batchSize
	if err := db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte(bucket))
		return err
	}); err != nil {
		_ = db.Close()
		return fmt.Errorf("create bucket %q: %w", bucket, err)
	}
	h.db, h.bucket = db, []byte(bucket)
	if h.crashed, err = h.takeCleanMark(); err != nil {
		_ = db.Close()
		return fmt.Errorf("read the clean-shutdown mark: %w", err)
	}
	h.lane, h.laneDone = make(chan laneOp, laneCap), make(chan struct{})
	go h.runLane()
	return nil
}

// Stop writes what the lane holds and closes the database. The caller
// makes sure no write is in progress or comes after it (boltStore.Stop).
func (h *kvHook) Stop() error {
	if h.db == nil {
		return nil
	}
	if h.lane != nil {
		close(h.lane)
		<-h.laneDone
		h.lane = nil
		if err := h.db.Update(func(tx *bbolt.Tx) error {
			return tx.Bucket(h.bucket).Put([]byte(cleanMarkKey), []byte{1})
		}); err != nil {
			h.Log.Warn("storage: cannot mark a clean shutdown; the next start replays retained messages to resumed sessions", "error", err)
		}
	}
	return h.db.Close()
}

// cleanMarkKey is written by Stop once everything is on disk and deleted
// by the next Init. Its prefix is none of mochi's, whose loaders read their
// own prefixes only.
const cleanMarkKey = "LNK_clean_shutdown"

// takeCleanMark deletes the clean-shutdown mark and reports whether the
// file was last closed without it: a crash or power cut, or a file an
// older broker wrote (treated the same, to be safe). A new, empty file did
// not crash.
func (h *kvHook) takeCleanMark() (crashed bool, err error) {
	err = h.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(h.bucket)
		if b.Get([]byte(cleanMarkKey)) != nil {
			return b.Delete([]byte(cleanMarkKey))
		}
		k, _ := b.Cursor().First()
		crashed = k != nil
		return nil
	})
	return crashed, err
}

// queue hands a change to a queued message's record to the lane and
// returns without waiting for the disk.
//
// Why these records do not wait: mochi queues a message for each
// subscriber on the goroutine of the client that published it, one after
// the other, after it has already sent that client its PUBACK. A release
// fanned out to 10,000 trucks' sessions was 10,000 commits in series on
// the publisher's connection, 5-10 s during which the broker read nothing
// else from the publisher, which then gave up on its next publish
// (`linkedge bench fleet --trucks 10000`). Waiting bought no guarantee
// either: the PUBACK was out before the first copy was written. In the
// lane the whole fan-out is a few transactions committed within
// milliseconds of the last copy being queued; after a power cut in that
// gap the sessions lack those copies, and the broker's restored sessions
// get the retained messages of their subscriptions again on their first
// connection (see sessionHook), which is how trucks learn of a release.
//
// One goroutine and one order: a record's put and its deletion (the
// subscriber's PUBACK) are applied in the order mochi made them, and a
// deletion's keep is checked when it is applied, after every put queued
// before it.
func (h *kvHook) queue(op laneOp) {
	h.lane <- op
}

// flush returns once every change queued before it is on disk.
func (h *kvHook) flush() {
	done := make(chan struct{})
	h.queue(laneOp{done: done})
	<-done
}

// runLane commits the lane's changes: after the first, it gathers what
// arrives within laneGather (up to laneBatch) into one transaction; a
// barrier (flush, Stop) ends the gathering at once.
func (h *kvHook) runLane() {
	defer close(h.laneDone)
	batch := make([]laneOp, 0, laneBatch)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for op := range h.lane {
		batch = append(batch[:0], op)
		timer.Reset(laneGather)
	gather:
		for len(batch) < laneBatch && op.done == nil {
			select {
			case next, ok := <-h.lane:
				if !ok {
					break gather
				}
				batch = append(batch, next)
				op = next
			case <-timer.C:
				break gather
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		h.commitLane(batch)
	}
}

// commitLane applies batch in one transaction. A put followed in the same
// batch by a deletion of its key that is not kept is skipped: the record
// would be written and deleted in the same commit.
func (h *kvHook) commitLane(batch []laneOp) {
	// The deletions that will apply, decided in order, as applying does:
	// a keep is asked once, at this point, after every put before it.
	deleted := make([]bool, len(batch))
	lastPut := map[string]int{}
	writes := 0
	for i, op := range batch {
		switch {
		case op.done != nil:
		case op.msg != nil:
			lastPut[op.key] = i
		default:
			if op.keep != nil && op.keep() {
				continue
			}
			deleted[i] = true
			if j, ok := lastPut[op.key]; ok {
				batch[j].msg = nil // cancelled: written and deleted at once
				batch[j].key = ""
				delete(lastPut, op.key)
			}
		}
	}
	for i, op := range batch {
		if deleted[i] || op.msg != nil {
			writes++
		}
	}
	if writes > 0 {
		err := h.db.Update(func(tx *bbolt.Tx) error {
			b := tx.Bucket(h.bucket)
			for i, op := range batch {
				switch {
				case op.msg != nil:
					data, err := op.msg.MarshalBinary()
					if err != nil {
						h.Log.Error("storage: cannot encode a record", "key", op.key, "error", err)
						continue
					}
					if err := b.Put([]byte(op.key), data); err != nil {
						return fmt.Errorf("key %s: %w", op.key, err)
					}
				case deleted[i]:
					if err := b.Delete([]byte(op.key)); err != nil {
						return fmt.Errorf("key %s: %w", op.key, err)
					}
				}
			}
			return nil
		})
		if err != nil {
			h.Log.Error("storage: cannot write queued-message records", "records", writes, "error", err)
		} else {
			h.laneTxs.Add(1)
		}
	}
	for _, op := range batch {
		if op.done != nil {
			close(op.done)
		}
	}
}

// write applies fn to the bucket and returns once the change is on disk.
//
// Concurrent writes go through DB.Batch, which runs them in one
// transaction with one fsync. A write with no other in progress commits at
// once instead: Batch would hold it batchDelay for company that is not
// coming, and a lone writer's chain of writes (mochi fanning one release
// out to every truck's session, one after the other on the publisher's
// goroutine) took 2.1 ms a write instead of 0.5 ms.
//
// Batch may run fn more than once (when another write of its batch fails,
// the transaction is rolled back and run again without it), so fn must
// change nothing but the bucket.
func (h *kvHook) write(fn func(*bbolt.Bucket) error) error {
	apply := func(tx *bbolt.Tx) error { return fn(tx.Bucket(h.bucket)) }
	defer h.writing.Add(-1)
	if h.writing.Add(1) == 1 {
		return h.db.Update(apply)
	}
	return h.db.Batch(apply)
}

// put writes the record v under key.
func (h *kvHook) put(key string, v storage.Serializable) {
	data, err := v.MarshalBinary()
	if err != nil {
		h.Log.Error("storage: cannot encode a record", "key", key, "error", err)
		return
	}
	k := []byte(key)
	if err := h.write(func(b *bbolt.Bucket) error { return b.Put(k, data) }); err != nil {
		h.Log.Error("storage: cannot write a record", "key", key, "error", err)
	}
}

// del deletes the records under keys, in one transaction.
func (h *kvHook) del(keys ...string) {
	if len(keys) == 0 {
		return
	}
	err := h.write(func(b *bbolt.Bucket) error {
		for _, k := range keys {
			if err := b.Delete([]byte(k)); err != nil {
				return fmt.Errorf("key %s: %w", k, err)
			}
		}
		return nil
	})
	if err != nil {
		h.Log.Error("storage: cannot delete records", "keys", len(keys), "error", err)
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

// messageProps is the stored form of a message's MQTT 5 properties.
func messageProps(p packets.Properties) storage.MessageProperties {
	p = p.Copy(false)
	return storage.MessageProperties{
		PayloadFormat: p.PayloadFormat, MessageExpiryInterval: p.MessageExpiryInterval, ContentType: p.ContentType,
		ResponseTopic: p.ResponseTopic, CorrelationData: p.CorrelationData, SubscriptionIdentifier: p.SubscriptionIdentifier,
		TopicAlias: p.TopicAlias, User: p.User,
	}
}

// OnSessionEstablished records the client, its will included.
func (h *kvHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) { h.saveClient(cl) }

// OnWillSent records the client again, without the will it no longer has.
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
	})
}

// OnDisconnect deletes the client's record when its session ends, unless
// another connection took the session over.
func (h *kvHook) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if !expire || errors.Is(cl.StopCause(), packets.ErrSessionTakenOver) {
		return
	}
	h.del(clientKey(cl.ID))
}

// OnSubscribed records each granted filter, all in one write.
func (h *kvHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	type record struct{ key, val []byte }
	var recs []record
	for i, f := range pk.Filters {
		if i >= len(codes) {
			break
		}
		key := subscriptionKey(cl.ID, f.Filter)
		data, err := (&storage.Subscription{
			ID: key, T: storage.SubscriptionKey, Client: cl.ID, Qos: codes[i], Filter: f.Filter, Identifier: f.Identifier,
			NoLocal: f.NoLocal, RetainHandling: f.RetainHandling, RetainAsPublished: f.RetainAsPublished,
		}).MarshalBinary()
		if err != nil {
			h.Log.Error("storage: cannot encode a record", "key", key, "error", err)
			continue
		}
		recs = append(recs, record{[]byte(key), data})
	}
	if len(recs) == 0 {
		return
	}
	err := h.write(func(b *bbolt.Bucket) error {
		for _, r := range recs {
			if err := b.Put(r.key, r.val); err != nil {
				return fmt.Errorf("key %s: %w", r.key, err)
			}
		}
		return nil
	})
	if err != nil {
		h.Log.Error("storage: cannot write subscriptions", "client", cl.ID, "error", err)
	}
}

// OnUnsubscribed deletes each filter's record, all in one write.
func (h *kvHook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	keys := make([]string, 0, len(pk.Filters))
	for _, f := range pk.Filters {
		keys = append(keys, subscriptionKey(cl.ID, f.Filter))
	}
	h.del(keys...)
}

// OnRetainMessage records a retained message, or deletes it (r == -1).
func (h *kvHook) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	key := retainedKey(pk.TopicName)
	if r == -1 {
		h.del(key)
		return
	}
	h.put(key, &storage.Message{
		ID: key, T: storage.RetainedKey, FixedHeader: pk.FixedHeader, TopicName: pk.TopicName, Payload: pk.Payload,
		Created: pk.Created, Client: cl.ID, Origin: pk.Origin, Properties: messageProps(pk.Properties),
	})
}

// OnQosPublish records a message queued for cl, through the lane.
func (h *kvHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, _ int) {
	key := inflightKey(cl.ID, pk)
	h.queue(laneOp{key: key, msg: &storage.Message{
		ID: key, T: storage.InflightKey, Client: cl.ID, Origin: pk.Origin, FixedHeader: pk.FixedHeader,
		TopicName: pk.TopicName, Payload: pk.Payload, Sent: sent, Created: pk.Created, Properties: messageProps(pk.Properties),
	}})
}

// OnQosComplete deletes the record of a message cl acknowledged, through
// the lane.
func (h *kvHook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	h.queue(laneOp{key: inflightKey(cl.ID, pk)})
}

// delQueued deletes a queued message's record, through the lane, unless
// keep reports true when the deletion is applied.
func (h *kvHook) delQueued(key string, keep func() bool) {
	h.queue(laneOp{key: key, keep: keep})
}

// OnQosDropped deletes the record of a message dropped from cl's queue.
func (h *kvHook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) { h.OnQosComplete(cl, pk) }

// OnRetainedExpired deletes an expired retained message.
func (h *kvHook) OnRetainedExpired(topic string) { h.del(retainedKey(topic)) }

// OnClientExpired deletes an expired session's client record.
func (h *kvHook) OnClientExpired(cl *mqtt.Client) { h.del(clientKey(cl.ID)) }

// StoredClients reads every client record, unfiltered (boltStore filters).
func (h *kvHook) StoredClients() ([]storage.Client, error) {
	var out []storage.Client
	err := h.each(storage.ClientKey+"_", func(k, v []byte) {
		var c storage.Client
		if h.decode(k, v, &c) {
			out = append(out, c)
		}
	})
	return out, err
}

// StoredSubscriptions reads every subscription record.
func (h *kvHook) StoredSubscriptions() ([]storage.Subscription, error) {
	out := []storage.Subscription{}
	err := h.each(storage.SubscriptionKey+"_", func(k, v []byte) {
		var s storage.Subscription
		if h.decode(k, v, &s) {
			out = append(out, s)
		}
	})
	return out, err
}

// StoredRetainedMessages reads every retained message.
func (h *kvHook) StoredRetainedMessages() ([]storage.Message, error) {
	return h.messages(storage.RetainedKey + "_")
}

// StoredInflightMessages reads every queued message, as stored (mochi's
// records lack the packet id; boltStore restores it from the key), the
// lane's pending changes included.
func (h *kvHook) StoredInflightMessages() ([]storage.Message, error) {
	if h.lane != nil {
		h.flush()
	}
	return h.messages(storage.InflightKey + "_")
}

func (h *kvHook) messages(prefix string) ([]storage.Message, error) {
	out := []storage.Message{}
	err := h.each(prefix, func(k, v []byte) {
		var m storage.Message
		if h.decode(k, v, &m) {
			out = append(out, m)
		}
	})
	return out, err
}

// decode reads one record into v. An unreadable record is logged and
// skipped: mochi's hook stopped reading at the first one, and the broker
// came up without the records after it.
func (h *kvHook) decode(k, v []byte, into storage.Serializable) bool {
	if err := into.UnmarshalBinary(v); err != nil {
		h.Log.Warn("storage: skipping an unreadable record", "key", string(k), "error", err)
		return false
	}
	return true
}

// each calls visit with every record whose key starts with prefix.
func (h *kvHook) each(prefix string, visit func(k, v []byte)) error {
	p := []byte(prefix)
	return h.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(h.bucket).Cursor()
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			visit(k, v)
		}
		return nil
	})
}
