package broker

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"
	"go.etcd.io/bbolt"
)

func boltOptions(path string) *bolt.Options {
	return &bolt.Options{Path: path, Bucket: "mochi", Options: &bbolt.Options{Timeout: time.Second}}
}

func openKV(t testing.TB, path string) *kvHook {
	t.Helper()
	h := new(kvHook)
	h.SetOpts(testLogger(), nil)
	if err := h.Init(boltOptions(path)); err != nil {
		t.Fatal(err)
	}
	return h
}

// openMochiBolt opens path with mochi's own bolt hook, the storage of
// LinkEdge brokers before kvHook.
func openMochiBolt(t testing.TB, path string) *bolt.Hook {
	t.Helper()
	h := new(bolt.Hook)
	h.SetOpts(testLogger(), nil)
	if err := h.Init(boltOptions(path)); err != nil {
		t.Fatal(err)
	}
	return h
}

// dumpBolt returns every record of the file's bucket, key to value.
func dumpBolt(t *testing.T, path string) map[string]string {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string]string{}
	err = db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte("mochi")).ForEach(func(k, v []byte) error {
			out[string(k)] = string(v)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// recordWriter is the write side that mochi's bolt hook and kvHook share.
type recordWriter interface {
	OnSessionEstablished(*mqtt.Client, packets.Packet)
	OnWillSent(*mqtt.Client, packets.Packet)
	OnDisconnect(*mqtt.Client, error, bool)
	OnSubscribed(*mqtt.Client, packets.Packet, []byte)
	OnUnsubscribed(*mqtt.Client, packets.Packet)
	OnRetainMessage(*mqtt.Client, packets.Packet, int64)
	OnRetainedExpired(string)
	OnQosPublish(*mqtt.Client, packets.Packet, int64, int)
	OnQosComplete(*mqtt.Client, packets.Packet)
	OnQosDropped(*mqtt.Client, packets.Packet)
	OnClientExpired(*mqtt.Client)
	Stop() error
}

// writeSample makes every kind of record, MQTT 5 properties included, and
// deletes some again.
func writeSample(t *testing.T, h recordWriter) {
	t.Helper()
	truck := &mqtt.Client{
		ID:  "linkedge-truck-t1",
		Net: mqtt.ClientConnection{Remote: "10.1.2.3:51000", Listener: "mqtt"},
		Properties: mqtt.ClientProperties{
			Username: []byte("t1"), ProtocolVersion: 5,
			Props: packets.Properties{SessionExpiryInterval: 3600, SessionExpiryIntervalFlag: true, ReceiveMaximum: 64,
				User: []packets.UserProperty{{Key: "fw", Val: "2.1"}}},
			Will: mqtt.Will{TopicName: "linkedge/v1/trucks/t1/status", Payload: []byte(`{"online":false}`), Qos: 1, Retain: true, Flag: 1},
		},
	}
	other := &mqtt.Client{ID: "ops-1", Properties: mqtt.ClientProperties{Username: []byte("ops"), ProtocolVersion: 4, Clean: true}}
	h.OnSessionEstablished(truck, packets.Packet{})
	h.OnSessionEstablished(other, packets.Packet{})
	h.OnSubscribed(truck, packets.Packet{Filters: packets.Subscriptions{
		{Filter: "linkedge/v1/models/+/release", Qos: 1, Identifier: 4, RetainAsPublished: true},
		{Filter: "linkedge/v1/trucks/t1/desired", Qos: 1, NoLocal: true, RetainHandling: 1},
		{Filter: "linkedge/v1/trucks/t1/grant", Qos: 0},
	}}, []byte{1, 1, 0})
	h.OnUnsubscribed(truck, packets.Packet{Filters: packets.Subscriptions{{Filter: "linkedge/v1/trucks/t1/grant"}}})
	for id := uint16(7); id <= 9; id++ {
		h.OnQosPublish(truck, packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
			PacketID:    id, TopicName: "linkedge/v1/models/m/release", Payload: []byte(fmt.Sprintf("doc-%d", id)),
			Origin: "linkedge-publisher", Created: 1_700_000_000 + int64(id),
			Properties: packets.Properties{ContentType: "application/json", MessageExpiryInterval: 600, User: []packets.UserProperty{{Key: "serial", Val: "3"}}},
		}, 1_700_000_100, 0)
	}
	h.OnQosComplete(truck, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 8})
	h.OnQosDropped(truck, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, PacketID: 9})
	retain := func(topic, payload string, r int64) {
		h.OnRetainMessage(truck, packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true},
			TopicName:   topic, Payload: []byte(payload), Origin: truck.ID, Created: 1_700_000_200,
		}, r)
	}
	retain("linkedge/v1/trucks/t1/status", `{"online":true}`, 1)
	retain("linkedge/v1/trucks/t1/events", "x", 1)
	retain("linkedge/v1/trucks/t1/events", "", -1)
	retain("linkedge/v1/trucks/t1/old", "y", 1)
	h.OnRetainedExpired("linkedge/v1/trucks/t1/old")
	truck.Properties.Will = mqtt.Will{}
	h.OnWillSent(truck, packets.Packet{})
	h.OnDisconnect(other, nil, true)
	gone := &mqtt.Client{ID: "linkedge-truck-t2", Properties: mqtt.ClientProperties{ProtocolVersion: 4}}
	h.OnSessionEstablished(gone, packets.Packet{})
	h.OnClientExpired(gone)
	if err := h.Stop(); err != nil {
		t.Fatal(err)
	}
}

// TestRecordsAsMochiWritesThem: kvHook writes byte for byte the records
// mochi's bolt hook writes, under the same keys, so a broker.db moves
// between the two in both directions.
func TestRecordsAsMochiWritesThem(t *testing.T) {
	dir := t.TempDir()
	mochiPath, kvPath := filepath.Join(dir, "mochi.db"), filepath.Join(dir, "kv.db")
	writeSample(t, openMochiBolt(t, mochiPath))
	writeSample(t, openKV(t, kvPath))
	want, got := dumpBolt(t, mochiPath), dumpBolt(t, kvPath)
	if len(want) != 5 { // the truck, 2 subscriptions, queued message 7, the status
		t.Errorf("mochi wrote %d records, want 5: %q", len(want), slices.Sorted(maps.Keys(want)))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("record %s:\n got %s\nwant %s", k, got[k], v)
		}
	}
	if got[cleanMarkKey] == "" {
		t.Error("Stop wrote no clean-shutdown mark")
	}
	delete(got, cleanMarkKey) // ours; mochi's loaders never read it
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("record %s written, not by mochi", k)
		}
	}
}

// TestLoadsBrokerDBOfMochiHook: a broker.db written by mochi's bolt hook
// (LinkEdge before kvHook) loads whole: the session, its subscription, its
// queued messages with their packet ids, the retained message; the
// records of a clean session are deleted as orphans.
func TestLoadsBrokerDBOfMochiHook(t *testing.T) {
	dir := t.TempDir()
	old := openMochiBolt(t, filepath.Join(dir, storeFile))
	truck := &mqtt.Client{ID: "truck-1", Properties: mqtt.ClientProperties{ProtocolVersion: 4}}
	clean := &mqtt.Client{ID: "clean-1", Properties: mqtt.ClientProperties{ProtocolVersion: 4, Clean: true}}
	for _, cl := range []*mqtt.Client{truck, clean} {
		old.OnSessionEstablished(cl, packets.Packet{})
		old.OnSubscribed(cl, packets.Packet{Filters: packets.Subscriptions{{Filter: "linkedge/v1/models/#", Qos: 1}}}, []byte{1})
	}
	queued := map[uint16]string{3: "queued-a", 4: "queued-b", 6: "queued-c"}
	for id, p := range queued {
		for _, cl := range []*mqtt.Client{truck, clean} {
			old.OnQosPublish(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
				PacketID: id, TopicName: "linkedge/v1/models/m/notify", Payload: []byte(p), Created: time.Now().Unix()}, 0, 0)
		}
	}
	old.OnRetainMessage(truck, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true},
		TopicName: "linkedge/v1/models/m", Payload: []byte("retained-v1"), Created: time.Now().Unix()}, 1)
	old.OnSysInfoTick(&system.Info{Version: mqtt.Version, Retained: 1, Subscriptions: 2, Inflight: 6})
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}

	b := startBroker(t, func(c *Config) { c.DataDir = dir })
	cl, ok := b.Server().Clients.Get("truck-1")
	if !ok {
		t.Fatal("session truck-1 not restored")
	}
	for id, p := range queued {
		if m, ok := cl.State.Inflight.Get(id); !ok || string(m.Payload) != p {
			t.Errorf("queued message %d = %q (%v), want %q", id, m.Payload, ok, p)
		}
	}
	if n := cl.State.Inflight.Len(); n != len(queued) {
		t.Errorf("%d queued messages restored, want %d", n, len(queued))
	}
	if _, ok := b.Server().Topics.Subscribers("linkedge/v1/models/m").Subscriptions["truck-1"]; !ok {
		t.Error("subscription of truck-1 not restored")
	}
	if pk, ok := b.Server().Topics.Retained.Get("linkedge/v1/models/m"); !ok || string(pk.Payload) != "retained-v1" {
		t.Errorf("retained message = %q (%v)", pk.Payload, ok)
	}
	if _, ok := b.Server().Clients.Get("clean-1"); ok {
		t.Error("clean session restored")
	}
	subs, _ := b.store.kvHook.StoredSubscriptions()
	msgs, _ := b.store.kvHook.StoredInflightMessages()
	if len(subs) != 1 || len(msgs) != len(queued) {
		t.Errorf("%d subscriptions and %d queued messages stored after loading, want the truck's 1 and %d", len(subs), len(msgs), len(queued))
	}

	// And the truck gets them.
	in := newInbox()
	tc := paho.NewClient(truckOpts(b.Addr(), in))
	tok := tc.Connect()
	await(t, "truck reconnect", tok)
	t.Cleanup(func() { tc.Disconnect(100) })
	if !tok.(*paho.ConnectToken).SessionPresent() {
		t.Error("session not present")
	}
	var got []string
	for range queued {
		got = append(got, string(in.next(t).Payload()))
	}
	slices.Sort(got)
	if want := slices.Sorted(maps.Values(queued)); !slices.Equal(got, want) {
		t.Errorf("truck got %q, want %q", got, want)
	}
}

// lastTx is the id of the last committed write transaction: committed
// transactions between two calls are the difference.
func lastTx(t *testing.T, h *kvHook) int {
	t.Helper()
	var id int
	if err := h.db.View(func(tx *bbolt.Tx) error { id = tx.ID(); return nil }); err != nil {
		t.Fatal(err)
	}
	return id
}

// snapshot copies what is committed to b's store now into dir, as a power
// cut would leave the file: bbolt syncs a transaction before it counts as
// committed, and a read transaction sees only committed ones.
func snapshot(t *testing.T, b *Broker, dir string) {
	t.Helper()
	if b.store.kvHook.db.NoSync {
		t.Fatal("the store does not sync its commits")
	}
	err := b.store.kvHook.db.View(func(tx *bbolt.Tx) error {
		return tx.CopyFile(filepath.Join(dir, storeFile), 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// fleetBurst is trucks reporting status at once: fleetTrucks persistent
// MQTT 5 sessions each publish fleetReports retained QoS 1 statuses,
// pipelined, which mochi also queues for the publisher's intake, a
// persistent session that is offline. Each status is two writes (the
// retained message, before PUBACK, and the queued copy, after it).
// afterAcks runs as soon as every PUBACK is in; fleetBurst returns once
// mochi has handled every publish, and the commits taken.
const fleetTrucks, fleetReports = 40, 5

func fleetBurst(t *testing.T, b *Broker, afterAcks func()) (commits int) {
	t.Helper()
	intake := connectV5(t, b.Addr(), "linkedge-publisher", "linkedge/v1/trucks/+/status")
	intake.conn.Close()
	deadline := time.Now().Add(waitFor)
	for cl, ok := b.Server().Clients.Get("linkedge-publisher"); !ok || !cl.Closed(); cl, ok = b.Server().Clients.Get("linkedge-publisher") {
		if time.Now().After(deadline) {
			t.Fatal("intake still connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	trucks := make([]*rawClient, fleetTrucks)
	for i := range trucks {
		c := dialRaw(t, b.Addr())
		c.send(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Connect},
			Connect:     packets.ConnectParams{ProtocolName: []byte("MQTT"), Keepalive: 30, ClientIdentifier: fmt.Sprintf("linkedge-truck-t%02d", i)},
			Properties:  packets.Properties{SessionExpiryInterval: 3600, SessionExpiryIntervalFlag: true},
		})
		if ack := c.recv(); ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
			t.Fatalf("CONNACK type %d reason %#x", ack.FixedHeader.Type, ack.ReasonCode)
		}
		trucks[i] = c
	}

	start := lastTx(t, b.store.kvHook)
	for i, c := range trucks {
		for r := range fleetReports {
			c.send(packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true},
				PacketID:    uint16(r + 1), TopicName: fmt.Sprintf("linkedge/v1/trucks/t%02d/status", i), Payload: []byte(fmt.Sprintf("t%02d-%d", i, r)),
			})
		}
	}
	for _, c := range trucks {
		for range fleetReports {
			if ack := c.recv(); ack.FixedHeader.Type != packets.Puback {
				t.Fatalf("got packet type %d, want PUBACK", ack.FixedHeader.Type)
			}
		}
	}
	afterAcks()
	// mochi queues the copies after sending PUBACK; a ping is answered
	// once a client's earlier packets are handled.
	for _, c := range trucks {
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
		if p := c.recv(); p.FixedHeader.Type != packets.Pingresp {
			t.Fatalf("got packet type %d, want PINGRESP", p.FixedHeader.Type)
		}
	}
	// The copies' records go through the lane, committed just after.
	b.store.kvHook.flush()
	return lastTx(t, b.store.kvHook) - start
}

// TestConcurrentWritesShareCommits: the writes of many clients at once
// share transactions and fsyncs.
func TestConcurrentWritesShareCommits(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.DataDir = t.TempDir() })
	commits := fleetBurst(t, b, func() {})
	writes := 2 * fleetTrucks * fleetReports
	t.Logf("%d writes in %d transactions", writes, commits)
	// One transaction each before; 18-31 here, 76 with the machine busy.
	if commits <= 0 || commits*3 > writes {
		t.Errorf("%d writes took %d transactions; want them shared, at least 3 to a transaction", writes, commits)
	}
}

// TestKilledAfterPubackKeepsMessages: a broker that loses power right
// after it acknowledged the statuses still has every one of them
// retained, and once it has queued them, every copy for the offline
// intake, with its packet id.
func TestKilledAfterPubackKeepsMessages(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.DataDir = t.TempDir() })
	acked, queued := t.TempDir(), t.TempDir()
	fleetBurst(t, b, func() { snapshot(t, b, acked) })
	snapshot(t, b, queued)

	h := openKV(t, filepath.Join(acked, storeFile))
	ret, err := h.StoredRetainedMessages()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, m := range ret {
		got[m.TopicName] = string(m.Payload)
	}
	for i := range fleetTrucks {
		topic, want := fmt.Sprintf("linkedge/v1/trucks/t%02d/status", i), fmt.Sprintf("t%02d-%d", i, fleetReports-1)
		if got[topic] != want {
			t.Errorf("after PUBACK, %s retains %q, want %q", topic, got[topic], want)
		}
	}
	if err := h.Stop(); err != nil {
		t.Fatal(err)
	}

	b2 := startBroker(t, func(c *Config) { c.DataDir = queued })
	intake, ok := b2.Server().Clients.Get("linkedge-publisher")
	if !ok {
		t.Fatal("intake session lost")
	}
	payloads := map[string]bool{}
	for _, m := range intake.State.Inflight.GetAll(false) {
		if m.PacketID == 0 {
			t.Errorf("queued message %q restored without a packet id", m.Payload)
		}
		payloads[string(m.Payload)] = true
	}
	if n := len(payloads); n != fleetTrucks*fleetReports || intake.State.Inflight.Len() != n {
		t.Errorf("intake has %d queued messages (%d distinct), want %d", intake.State.Inflight.Len(), n, fleetTrucks*fleetReports)
	}
	if n := len(b2.Server().Topics.Messages("linkedge/v1/trucks/+/status")); n != fleetTrucks {
		t.Errorf("%d retained statuses restored, want %d", n, fleetTrucks)
	}
}

// TestRemovalRaceKeepsQueuedRecord races removeQos, for the acknowledgement
// of a client's own publish, against the write of a message queued for it
// under the same packet id (see boltStore.OnQosPublish): however they
// interleave, a message in flight keeps its record.
func TestRemovalRaceKeepsQueuedRecord(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.DataDir = t.TempDir() })
	cl := b.Server().NewClient(nil, "mqtt", "truck-9", false)
	cl.Properties.ProtocolVersion = 4 // clean session false: persistent
	stored := func() map[uint16]string {
		msgs, err := b.store.kvHook.StoredInflightMessages()
		if err != nil {
			t.Fatal(err)
		}
		out := map[uint16]string{}
		for _, m := range msgs {
			out[packetIDFromKey(m.ID)] = string(m.Payload)
		}
		return out
	}
	for i := range 100 {
		id := uint16(i%7 + 1)
		out := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
			PacketID: id, TopicName: "linkedge/v1/models/m/release", Payload: []byte(fmt.Sprint(i))}
		var wg sync.WaitGroup
		wg.Go(func() {
			cl.State.Inflight.Set(out) // as mochi: in the table, then stored
			b.store.OnQosPublish(cl, out, 0, 0)
		})
		wg.Go(func() {
			b.store.OnQosComplete(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: id})
		})
		wg.Wait()
		if got := stored()[id]; got != fmt.Sprint(i) {
			t.Fatalf("round %d: record of queued message %d = %q, want %q", i, id, got, fmt.Sprint(i))
		}
		cl.State.Inflight.Delete(id) // acknowledged
		b.store.OnQosComplete(cl, out)
		if got, ok := stored()[id]; ok {
			t.Fatalf("round %d: acknowledged message %d still stored (%q)", i, id, got)
		}
	}
}

// TestKVSkipsUnreadableRecords: one corrupt record does not keep the
// broker from loading the rest.
func TestKVSkipsUnreadableRecords(t *testing.T) {
	h := openKV(t, filepath.Join(t.TempDir(), storeFile))
	defer h.Stop()
	h.put(retainedKey("a"), &storage.Message{ID: retainedKey("a"), T: storage.RetainedKey, TopicName: "a", Payload: []byte("1")})
	if err := h.db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(h.bucket).Put([]byte(retainedKey("b")), []byte("{not json"))
	}); err != nil {
		t.Fatal(err)
	}
	h.put(retainedKey("c"), &storage.Message{ID: retainedKey("c"), T: storage.RetainedKey, TopicName: "c", Payload: []byte("3")})
	msgs, err := h.StoredRetainedMessages()
	if err != nil || len(msgs) != 2 || msgs[0].TopicName != "a" || msgs[1].TopicName != "c" {
		t.Fatalf("retained %+v, %v; want the readable a and c", msgs, err)
	}
}
