package broker

import (
	"strconv"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"
)

// The Stored* methods run once, from mochi's Serve, before any client can
// connect, in this order: clients, subscriptions, inflight, retained, sysinfo.

func (s *boltStore) StoredClients() ([]storage.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errStoreClosed
	}
	all, err := s.kvHook.StoredClients()
	if err != nil {
		return nil, err
	}
	s.persistent = make(map[string]bool, len(all))
	out := all[:0]
	for _, c := range all {
		if c.ID == mqtt.InlineClientId {
			continue
		}
		if !sessionEndsOnDisconnect(c.ProtocolVersion, c.Clean, c.Properties.SessionExpiryInterval) {
			s.persistent[c.ID] = true
			if s.kvHook.crashed {
				s.restored.Store(c.ID, struct{}{})
			}
		}
		// Clean sessions are passed on too: mochi deletes their records.
		out = append(out, c)
	}
	return out, nil
}

func (s *boltStore) StoredSubscriptions() ([]storage.Subscription, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errStoreClosed
	}
	all, err := s.kvHook.StoredSubscriptions()
	if err != nil || s.persistent == nil {
		return all, err
	}
	out := all[:0]
	var orphans []string // deleted in one transaction: one fsync, not one each
	for _, sub := range all {
		if s.persistent[sub.Client] {
			out = append(out, sub)
			continue
		}
		orphans = append(orphans, subscriptionKey(sub.Client, sub.Filter))
	}
	s.kvHook.del(orphans...)
	return out, nil
}

func (s *boltStore) StoredInflightMessages() ([]storage.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errStoreClosed
	}
	all, err := s.kvHook.StoredInflightMessages()
	if err != nil {
		return nil, err
	}
	persistent := s.persistent
	s.persistent = nil // orphans are only judged while loading
	out := all[:0]
	var orphans []string
	for _, m := range all {
		if m.PacketID == 0 {
			m.PacketID = packetIDFromKey(m.ID)
		}
		if m.PacketID == 0 {
			s.kvHook.Log.Warn("dropping stored message without packet id", "key", m.ID)
			continue
		}
		if persistent != nil && !persistent[m.Client] {
			orphans = append(orphans, inflightKey(m.Client, packets.Packet{PacketID: m.PacketID}))
			continue
		}
		out = append(out, m)
	}
	s.kvHook.del(orphans...)
	return out, nil
}

// packetIDFromKey recovers the packet id from an inflight record's key,
// "IFM_{client id}:{packet id}"; 0 means it could not.
func packetIDFromKey(key string) uint16 {
	i := strings.LastIndexByte(key, ':')
	if i < 0 {
		return 0
	}
	n, err := strconv.ParseUint(key[i+1:], 10, 16)
	if err != nil {
		return 0
	}
	return uint16(n)
}

func (s *boltStore) StoredRetainedMessages() ([]storage.Message, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errStoreClosed
	}
	msgs, err := s.kvHook.StoredRetainedMessages()
	if err == nil && s.quota != nil {
		s.loadRetainHolders(msgs)
	}
	return msgs, err
}

// StoredSysInfo returns the gauges mochi restores at start (subscriptions,
// queued messages, retained messages), counted from what was just loaded.
func (s *boltStore) StoredSysInfo() (storage.SystemInfo, error) {
	var subs, inflight int64
	for _, cl := range s.srv.Clients.GetAll() {
		subs += int64(cl.State.Subscriptions.Len())
		inflight += int64(cl.State.Inflight.Len())
	}
	return storage.SystemInfo{
		ID: storage.SysInfoKey,
		T:  storage.SysInfoKey,
		Info: system.Info{
			Version:       mqtt.Version, // mochi ignores a result without one
			Subscriptions: subs,
			Inflight:      inflight,
			Retained:      int64(s.srv.Topics.Retained.Len()),
		},
	}, nil
}
