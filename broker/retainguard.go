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
// mochi calls after that processing, however it ended). mochi reads each
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
	case mqtt.OnPublish, mqtt.OnSubscribe, mqtt.OnPacketProcessed:
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

// OnPacketProcessed implements mqtt.Hook.
func (g *retainGuard) OnPacketProcessed(cl *mqtt.Client, _ packets.Packet, _ error) {
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
