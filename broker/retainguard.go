package broker

import (
	"sync"

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
// A retained publish holds the guard for writing and a subscription holds it
// for reading, from OnPublish or OnSubscribe (mochi calls them inside its
// processing of the packet, after validation) to OnPacketProcessed (which
// mochi calls after that processing, however it ended); a retained last
// will holds it for writing from OnWill to OnWillSent. mochi reads each
// client's packets one at a time, so a client holds the guard at most once.
// Publishes of the in-process client are left out: they may run on many
// goroutines at once under the one client, and the agent does not make
// retained ones.
type retainGuard struct {
	mqtt.HookBase
	mu   sync.RWMutex
	held sync.Map // *mqtt.Client -> bool, true for the write side
}

// ID implements mqtt.Hook.
func (g *retainGuard) ID() string { return "linkedge-retain-guard" }

// Provides implements mqtt.Hook.
func (g *retainGuard) Provides(b byte) bool {
	switch b {
	case mqtt.OnPublish, mqtt.OnSubscribe, mqtt.OnPacketProcessed, mqtt.OnWill, mqtt.OnWillSent:
		return true
	}
	return false
}

// OnPublish implements mqtt.Hook.
func (g *retainGuard) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Retain && !cl.Net.Inline {
		g.mu.Lock()
		g.held.Store(cl, true)
	}
	return pk, nil
}

// OnSubscribe implements mqtt.Hook.
func (g *retainGuard) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if !cl.Net.Inline {
		g.mu.RLock()
		g.held.Store(cl, false)
	}
	return pk
}

// OnWill implements mqtt.Hook. A truck's last will is a retained status,
// written by mochi between OnWill and OnWillSent (unless the will is
// delayed, which mochi then sends later without these hooks).
func (g *retainGuard) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if will.Retain && cl.Properties.Will.WillDelayInterval == 0 && !cl.Net.Inline {
		g.mu.Lock()
		g.held.Store(cl, true)
	}
	return will, nil
}

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
