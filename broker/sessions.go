package broker

import (
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

var _ mqtt.Hook = (*sessionHook)(nil)

// sessionHook repairs two gaps in mochi's (v2.7.9) session handling that a
// fleet of intermittently connected trucks hits all the time.
type sessionHook struct {
	mqtt.HookBase
	srv *mqtt.Server
}

// ID implements mqtt.Hook.
func (h *sessionHook) ID() string { return "linkedge-sessions" }

// Provides implements mqtt.Hook.
func (h *sessionHook) Provides(b byte) bool {
	return b == mqtt.OnClientExpired || b == mqtt.OnQosDropped
}

// OnClientExpired implements mqtt.Hook. When a disconnected persistent
// session expires, mochi forgets the client but keeps its subscriptions in
// the topic index and its queued messages in memory and in storage; every
// retired or re-imaged truck would leak them forever. Unsubscribing and
// clearing the queue here also deletes the stored records through the storage
// hook's usual callbacks.
func (h *sessionHook) OnClientExpired(cl *mqtt.Client) {
	h.srv.UnsubscribeClient(cl)
	cl.ClearInflights()
}

// OnQosDropped implements mqtt.Hook. When a reconnecting client resumes its
// session, mochi moves the queued messages to the new connection and then
// "clears" them from the old one, which decrements the in-flight gauge a
// second time for every message moved (they are decremented again when
// acknowledged). Only such moves reach here with a taken-over client, so the
// decrement is undone.
func (h *sessionHook) OnQosDropped(cl *mqtt.Client, _ packets.Packet) {
	if cl.IsTakenOver() {
		atomic.AddInt64(&h.srv.Info.Inflight, 1)
	}
}
