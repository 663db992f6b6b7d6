package broker

import (
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

var _ mqtt.Hook = (*retainGuard)(nil)

// retainGuard keeps apart the two sides of a data race in mochi (v2.7.9):
// a retained publish writes a topic's retained path under that topic's
// lock, while a new subscription's scan for retained messages reads it
// without any (TopicsIndex.scanMessages). A torn read there is a crash; the
// race detector flags it within seconds of a truck fleet reporting status
// while operators subscribe.
//
// A subscription holds the guard for reading from OnSubscribe (mochi calls it
// inside its processing of the packet, after validation) to
// OnPacketProcessed (which mochi calls after that processing, however it
// ended). A retained publish or last will holds it for writing from OnPublish
// or OnWill to OnRetainMessage, right after the write, with OnPacketProcessed
// and OnWillSent as the fallback when mochi does not retain after all. mochi reads each
// client's packets one at a time, so a client holds the guard at most once.
// Publishes of the in-process client are left out: they may run on many
// goroutines at once under the one client, and the agent does not make
// retained ones.
type retainGuard struct {
	mqtt.HookBase
	mu      sync.RWMutex
	held    sync.Map     // *mqtt.Client -> bool, true for the write side
	writers atomic.Int32 // retained writes waiting for the guard
}

// ID implements mqtt.Hook.
func (g *retainGuard) ID() string { return "linkedge-retain-guard" }

// Provides implements mqtt.Hook.
func (g *retainGuard) Provides(b byte) bool {
	switch b {
	case mqtt.OnPublish, mqtt.OnSubscribe, mqtt.OnPacketProcessed, mqtt.OnWill, mqtt.OnWillSent, mqtt.OnRetainMessage:
		return true
	}
	return false
}

// OnPublish implements mqtt.Hook.
func (g *retainGuard) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Retain && !cl.Net.Inline && g.lockForWrite() {
		g.held.Store(cl, true)
	}
	return pk, nil
}

// OnSubscribe implements mqtt.Hook.
func (g *retainGuard) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if !cl.Net.Inline {
		// Let waiting writers in first (a little while at most): with
		// subscriptions coming back to back, readers would otherwise keep
		// the guard shared for ever.
		deadline := time.Now().Add(writeWait)
		for g.writers.Load() > 0 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Microsecond)
		}
		g.mu.RLock()
		g.held.Store(cl, false)
	}
	return pk
}

// OnWill implements mqtt.Hook. A truck's last will is a retained status,
// written by mochi between OnWill and OnWillSent (unless the will is
// delayed, which mochi then sends later without these hooks).
func (g *retainGuard) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if will.Retain && cl.Properties.Will.WillDelayInterval == 0 && !cl.Net.Inline && g.lockForWrite() {
		g.held.Store(cl, true)
	}
	return will, nil
}

// writeWait bounds how long a retained write waits for the guard, and how
// long a new subscription steps aside for waiting writes. Both are rare on a
// fleet broker (statuses every 30 s per truck, subscriptions at connect), so
// the bound matters only when a reader is stuck on a slow link.
const writeWait = time.Second

// lockForWrite takes the write side, waiting at most writeWait. A reader
// holds the read side while mochi writes its SUBACK, which a slow link can
// stretch to seconds; retained traffic from the whole fleet must not queue
// behind it (nor new subscriptions behind a waiting writer, as they would
// with a blocking Lock). Past the wait the write goes ahead unguarded, as it
// did before this hook.
func (g *retainGuard) lockForWrite() bool {
	g.writers.Add(1)
	defer g.writers.Add(-1)
	deadline := time.Now().Add(writeWait)
	for !g.mu.TryLock() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Microsecond)
	}
	return true
}

// OnRetainMessage implements mqtt.Hook: mochi has written the retained
// message, so the write side is released here, before the publish's
// acknowledgement goes out over what may be a slow link.
func (g *retainGuard) OnRetainMessage(cl *mqtt.Client, _ packets.Packet, _ int64) { g.release(cl) }

// OnWillSent implements mqtt.Hook.
func (g *retainGuard) OnWillSent(cl *mqtt.Client, _ packets.Packet) { g.release(cl) }

// OnPacketProcessed implements mqtt.Hook.
func (g *retainGuard) OnPacketProcessed(cl *mqtt.Client, _ packets.Packet, _ error) { g.release(cl) }

func (g *retainGuard) release(cl *mqtt.Client) {
	v, ok := g.held.LoadAndDelete(cl)
	if !ok {
		return
	}
	if v.(bool) {
		g.mu.Unlock()
	} else {
		g.mu.RUnlock()
	}
}
