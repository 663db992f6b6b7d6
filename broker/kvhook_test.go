package broker

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"
)

func openKV(t testing.TB, path string) *kvHook {
	t.Helper()
	h := new(kvHook)
	h.SetOpts(testLogger(), nil)
	if err := h.Init(&bolt.Options{Path: path, Bucket: "mochi", Options: &bbolt.Options{Timeout: time.Second}}); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestKVReadsMochiBoltFiles: a broker.db that mochi's own bolt hook wrote
// (the storage of earlier LinkEdge versions) reads back whole.
func TestKVReadsMochiBoltFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), storeFile)
	old := new(bolt.Hook)
	old.SetOpts(testLogger(), nil)
	if err := old.Init(&bolt.Options{Path: path, Bucket: "mochi", Options: &bbolt.Options{Timeout: time.Second}}); err != nil {
		t.Fatal(err)
	}
	cl := &mqtt.Client{ID: "linkedge-truck-t1", Properties: mqtt.ClientProperties{Username: []byte("t1"), ProtocolVersion: 4}}
	old.OnSessionEstablished(cl, packets.Packet{})
	old.OnSubscribed(cl, packets.Packet{Filters: packets.Subscriptions{{Filter: "linkedge/v1/models/+/release", Qos: 1}}}, []byte{1})
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "linkedge/v1/models/m/release", Payload: []byte("doc"), PacketID: 7}
	old.OnQosPublish(cl, pk, 1, 0)
	ret := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true}, TopicName: "linkedge/v1/trucks/t1/status", Payload: []byte("online")}
	old.OnRetainMessage(cl, ret, 1)
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}

	h := openKV(t, path)
	defer h.Stop()
	clients, err := h.StoredClients()
	if err != nil || len(clients) != 1 || clients[0].ID != cl.ID || string(clients[0].Username) != "t1" {
		t.Fatalf("clients %+v, %v", clients, err)
	}
	subs, err := h.StoredSubscriptions()
	if err != nil || len(subs) != 1 || subs[0].Filter != "linkedge/v1/models/+/release" || subs[0].Client != cl.ID {
		t.Fatalf("subscriptions %+v, %v", subs, err)
	}
	msgs, err := h.StoredInflightMessages()
	if err != nil || len(msgs) != 1 || string(msgs[0].Payload) != "doc" || packetIDFromKey(msgs[0].ID) != 7 {
		t.Fatalf("queued messages %+v, %v", msgs, err)
	}
	ret2, err := h.StoredRetainedMessages()
	if err != nil || len(ret2) != 1 || string(ret2[0].Payload) != "online" {
		t.Fatalf("retained %+v, %v", ret2, err)
	}
	// And what the new store writes, under the same keys, replaces it.
	h.OnQosComplete(cl, pk)
	h.flush()
	if msgs, _ := h.StoredInflightMessages(); len(msgs) != 0 {
		t.Fatalf("acknowledged message still stored: %+v", msgs)
	}
}

// TestKVSharesTransactions: writes that arrive together share
// transactions (and fsyncs): the queued copies of messages, which do not
// wait, and retained messages from many clients, which each wait for
// their commit. Every write is on disk once it returned (sync) or once
// the store stopped (async).
func TestKVSharesTransactions(t *testing.T) {
	path := filepath.Join(t.TempDir(), storeFile)
	h := openKV(t, path)
	const clients, each = 100, 10
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := &mqtt.Client{ID: fmt.Sprintf("linkedge-truck-t%d", c)}
			for i := range each {
				h.OnQosPublish(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "x", Payload: []byte("p"), PacketID: uint16(i + 1)}, 0, 0)
				h.OnRetainMessage(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true}, TopicName: fmt.Sprintf("linkedge/v1/trucks/t%d/status", c), Payload: []byte{byte(i)}}, 1)
			}
		}()
	}
	wg.Wait()
	writes, txs := 2*clients*each, h.commits.Load()
	t.Logf("%d writes in %d transactions", writes, txs)
	if txs <= 0 || txs > int64(writes/4) {
		t.Errorf("%d writes took %d transactions; want them shared (at most a quarter)", writes, txs)
	}
	// A sync write is committed when it returns: readable at once.
	if ret, err := h.StoredRetainedMessages(); err != nil || len(ret) != clients {
		t.Fatalf("%d retained records before stopping, %v; want %d", len(ret), err, clients)
	}
	if err := h.Stop(); err != nil {
		t.Fatal(err)
	}
	h = openKV(t, path)
	defer h.Stop()
	if msgs, err := h.StoredInflightMessages(); err != nil || len(msgs) != clients*each {
		t.Fatalf("%d queued records after reopening, %v; want %d", len(msgs), err, clients*each)
	}
	for _, m := range must(h.StoredRetainedMessages()) {
		if len(m.Payload) != 1 || m.Payload[0] != each-1 {
			t.Fatalf("%s retains %v, want the last write, %d: writes of one topic must commit in order", m.TopicName, m.Payload, each-1)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestKVSkipsUnreadableRecords: one corrupt record does not keep the
// broker from loading the rest.
func TestKVSkipsUnreadableRecords(t *testing.T) {
	h := openKV(t, filepath.Join(t.TempDir(), storeFile))
	defer h.Stop()
	h.put(retainedKey("a"), &storage.Message{ID: retainedKey("a"), T: storage.RetainedKey, TopicName: "a", Payload: []byte("1")}, true)
	h.db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(h.bucket).Put([]byte(retainedKey("b")), []byte("{not json"))
	})
	msgs, err := h.StoredRetainedMessages()
	if err != nil || len(msgs) != 1 || msgs[0].TopicName != "a" {
		t.Fatalf("retained %+v, %v; want the readable one", msgs, err)
	}
}

// BenchmarkStoreWrites: 64 writers storing 370-byte records at once: each
// in a transaction of its own (mochi's bolt hook), through the group
// commit waiting for it (retained messages), and queued (copies of
// messages for subscribers). Compare the ns/op of one run.
func BenchmarkStoreWrites(b *testing.B) {
	msg := &storage.Message{T: storage.InflightKey, TopicName: "linkedge/v1/trucks/t1/status", Payload: make([]byte, 370)}
	data, _ := msg.MarshalBinary()
	for _, mode := range []string{"own transaction", "group commit, waiting", "group commit, queued"} {
		b.Run(mode, func(b *testing.B) {
			h := openKV(b, filepath.Join(b.TempDir(), storeFile))
			b.SetParallelism(32) // 64 writers on 2 cores
			var next atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := next.Add(1)
					key := fmt.Sprintf("IFM_c%d:%d", id%64, id)
					switch mode {
					case "own transaction":
						if err := h.db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(h.bucket).Put([]byte(key), data) }); err != nil {
							b.Fatal(err)
						}
					case "group commit, waiting":
						h.put(key, msg, true)
					default:
						h.put(key, msg, false)
					}
				}
			})
			h.Stop() // the queued writes are committed before the clock stops
		})
	}
}
