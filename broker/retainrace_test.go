package broker

import (
	"fmt"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
)

// TestRetainedPublishesWhileSubscribing publishes retained messages on
// fresh topics while other clients subscribe with wildcards over them, the
// broker's everyday mix (statuses from trucks, operators and publishers
// subscribing). Under -race it catches mochi reading a topic's retained
// path without the lock its writer holds; the broker's retainGuard hook
// keeps the two apart.
func TestRetainedPublishesWhileSubscribing(t *testing.T) {
	b := startBroker(t, nil)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for p := range 3 {
		c := connect(t, clientOpts(b.Addr()).SetClientID(fmt.Sprintf("pub-%d", p)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				c.Publish(fmt.Sprintf("linkedge/v1/trucks/t%d-%d/status", p, i%50), 1, true, []byte("s")).WaitTimeout(5 * time.Second)
			}
		}()
	}
	for s := range 3 {
		c := connect(t, clientOpts(b.Addr()).SetClientID(fmt.Sprintf("sub-%d", s)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c.Subscribe("linkedge/v1/trucks/+/status", 1, func(paho.Client, paho.Message) {}).WaitTimeout(5 * time.Second)
				c.Unsubscribe("linkedge/v1/trucks/+/status").WaitTimeout(5 * time.Second)
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	wg.Wait()
}

// TestRetainedWillsWhileSubscribing: the same, with retained last wills
// (every truck has one on its status topic) published as links drop.
func TestRetainedWillsWhileSubscribing(t *testing.T) {
	b := startBroker(t, nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			c := dialRaw(t, b.Addr())
			c.send(packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Connect},
				Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30,
					ClientIdentifier: fmt.Sprintf("truck-%d", i%20), WillFlag: true, WillRetain: true, WillQos: 1,
					WillTopic: fmt.Sprintf("linkedge/v1/trucks/truck-%d/status", i%20), WillPayload: []byte(`{"online":false}`)},
			})
			c.recv()       // CONNACK
			c.conn.Close() // a dropped link, not a DISCONNECT: the will goes out
		}
	}()
	c := connect(t, clientOpts(b.Addr()).SetClientID("ops"))
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		c.Subscribe("linkedge/v1/trucks/+/status", 1, func(paho.Client, paho.Message) {}).WaitTimeout(5 * time.Second)
		c.Unsubscribe("linkedge/v1/trucks/+/status").WaitTimeout(5 * time.Second)
	}
	close(stop)
	wg.Wait()
	if n := b.Server().Topics.Retained.Len(); n == 0 {
		t.Fatal("no will was retained: the test exercised nothing")
	}
}
