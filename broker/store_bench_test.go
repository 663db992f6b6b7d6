//go:build linux

package broker

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// fanInPublishers is how many clients publish at once in
// BenchmarkPersistentFanIn.
const fanInPublishers = 64

// BenchmarkPersistentFanIn is trucks reporting to the publisher's intake
// through a broker with a DataDir: fanInPublishers persistent clients
// publish QoS 1, each waiting for its PUBACK before the next, to one
// persistent subscriber, which acknowledges what it gets. One op is one
// message, from its publish until the broker has handled the subscriber's
// PUBACK: stored for the subscriber (and, retained, on its topic),
// delivered, acknowledged and deleted. cpu-ns/op is the CPU time of the
// whole process (broker and clients) per message. It uses only what the
// broker had before group commit, so it runs unchanged on older trees for
// a comparison.
func BenchmarkPersistentFanIn(b *testing.B) {
	for _, retain := range []bool{false, true} {
		name := "queued"
		if retain {
			name = "retained"
		}
		b.Run(name, func(b *testing.B) { benchFanIn(b, retain) })
	}
}

func benchFanIn(b *testing.B, retain bool) {
	br, err := New(Config{Listen: "127.0.0.1:0", DataDir: b.TempDir(), Logger: testLogger()})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := br.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := br.Close(); err != nil {
			b.Error(err)
		}
	})
	dial := func(id string) paho.Client {
		c := paho.NewClient(clientOpts(br.Addr()).SetClientID(id).SetCleanSession(false))
		if tok := c.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
			b.Fatalf("connect %s: %v", id, tok.Error())
		}
		b.Cleanup(func() { c.Disconnect(100) })
		return c
	}

	var got atomic.Int64
	all := make(chan struct{})
	intake := dial("bench-intake")
	tok := intake.Subscribe("linkedge/v1/trucks/+/status", 1, func(paho.Client, paho.Message) {
		if got.Add(1) == int64(b.N) {
			close(all)
		}
	})
	if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		b.Fatalf("subscribe: %v", tok.Error())
	}
	pubs := make([]paho.Client, fanInPublishers)
	for i := range pubs {
		pubs[i] = dial(fmt.Sprintf("bench-truck-%d", i))
	}
	payload := make([]byte, 370) // a truck's status report

	cpu0 := cpuTime(b)
	b.ResetTimer()
	var wg sync.WaitGroup
	for i, c := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := fmt.Sprintf("linkedge/v1/trucks/t%d/status", i)
			for n := i; n < b.N; n += len(pubs) {
				if tok := c.Publish(topic, 1, retain, payload); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
					b.Errorf("publish: %v", tok.Error())
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case <-all:
	case <-time.After(time.Minute):
		b.Fatalf("intake got %d of %d messages", got.Load(), b.N)
	}
	// The op ends when the broker has handled the last PUBACK (and
	// deleted what it acknowledges).
	cl, ok := br.Server().Clients.Get("bench-intake")
	deadline := time.Now().Add(time.Minute)
	for ok && cl.State.Inflight.Len() > 0 {
		if time.Now().After(deadline) {
			b.Fatalf("intake still has %d unacknowledged messages", cl.State.Inflight.Len())
		}
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
