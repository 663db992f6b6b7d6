// Package mqttstore is a paho.mqtt.golang session store that keeps packets
// as bytes, so that every Get returns a packet of its own.
//
// paho's MemoryStore hands back the very packet that was stored. With a
// persistent session paho resends what is in the store after each
// (re)connect, and marks each publish as a duplicate on the packet it got
// from the store, while a publish made from the connect handler (a status
// report, say) may already be on its way out as that same packet: a data
// race (seen under -race in the fleet tests) and a corrupted write at worst.
// Storing encoded packets gives resume a copy to mark.
package mqttstore

import (
	"bytes"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// Store implements paho.Store in memory, a copy per Get.
type Store struct {
	mu sync.Mutex
	m  map[string][]byte
	// lists counts All calls, and listed is closed (and replaced) at
	// each: paho lists the store once per connection, to resend what it
	// holds, right after it calls the connect handler in a goroutine. A
	// QoS 1 publish that the handler makes before that listing is sent
	// twice (once by Publish, once by the resend); see WaitListed.
	lists  uint64
	listed chan struct{}
}

var _ paho.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store { return &Store{m: map[string][]byte{}, listed: make(chan struct{})} }

// Lists returns how many times the store has been listed (paho's resume
// after each connection).
func (s *Store) Lists() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lists
}

// WaitListed waits until the store has been listed more than n times, at
// most timeout, and reports whether it was. A connect handler that records
// n before dialing and waits here publishes after paho's resend has read
// the store, so its message goes out once.
func (s *Store) WaitListed(n uint64, timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		s.mu.Lock()
		done, ch := s.lists > n, s.listed
		s.mu.Unlock()
		if done {
			return true
		}
		select {
		case <-ch:
		case <-t.C:
			return false
		}
	}
}

// Open implements paho.Store.
func (s *Store) Open() {}

// Put implements paho.Store. A packet that cannot be encoded is not
// stored; paho then cannot resend it after a reconnect, as with a full
// store.
func (s *Store) Put(key string, message packets.ControlPacket) {
	var buf bytes.Buffer
	if err := message.Write(&buf); err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[key] = buf.Bytes()
}

// Get implements paho.Store: a freshly decoded packet, or nil.
func (s *Store) Get(key string) packets.ControlPacket {
	s.mu.Lock()
	b, ok := s.m[key]
	s.mu.Unlock()
	if !ok {
		return nil
	}
	p, err := packets.ReadPacket(bytes.NewReader(b))
	if err != nil {
		return nil
	}
	return p
}

// All implements paho.Store.
func (s *Store) All() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lists++
	close(s.listed)
	s.listed = make(chan struct{})
	keys := make([]string, 0, len(s.m))
	for k := range s.m {
		keys = append(keys, k)
	}
	return keys
}

// Del implements paho.Store.
func (s *Store) Del(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, key)
}

// Close implements paho.Store.
func (s *Store) Close() {}

// Reset implements paho.Store.
func (s *Store) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m = map[string][]byte{}
}
