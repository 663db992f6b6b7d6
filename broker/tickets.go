package broker

import (
	"container/list"
	"crypto/rand"
	"crypto/tls"
	"sync"
)

// ticketStore keeps TLS sessions on the broker and hands clients a 16-byte
// id as their session ticket, instead of crypto/tls's default ticket: the
// whole session state encrypted, client certificate included. With mutual
// TLS that default is about 700 bytes, which a truck receives after every
// handshake and sends back in every resumed ClientHello; on a cellular
// link that reconnects a few times a day it is most of what a reconnect
// costs. A broker restart forgets the sessions: the next handshakes are
// full ones, as with the default's random ticket keys.
//
// An id is a random capability, useless without the session's secret
// (the client proves it with the PSK binder), and it is used as a map key
// only: no one can forge a session from it.
type ticketStore struct {
	mu    sync.Mutex
	max   int
	byID  map[string]*list.Element
	order *list.List // front: the most recently stored
}

type ticketEntry struct {
	id    string
	state []byte
}

// maxTickets bounds the sessions kept, about 1 KB each: room for a fleet
// of tens of thousands of trucks, each with a session or two.
const maxTickets = 50_000

func newTicketStore(max int) *ticketStore {
	return &ticketStore{max: max, byID: make(map[string]*list.Element), order: list.New()}
}

// install makes cfg issue and accept the store's ids.
func (s *ticketStore) install(cfg *tls.Config) {
	cfg.WrapSession = s.wrap
	cfg.UnwrapSession = s.unwrap
}

func (s *ticketStore) wrap(_ tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	state, err := ss.Bytes()
	if err != nil {
		return nil, err
	}
	id := make([]byte, 16)
	rand.Read(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byID[string(id)] = s.order.PushFront(&ticketEntry{id: string(id), state: state})
	for s.order.Len() > s.max {
		oldest := s.order.Back()
		s.order.Remove(oldest)
		delete(s.byID, oldest.Value.(*ticketEntry).id)
	}
	return id, nil
}

// unwrap returns the session an id names; nil, nil (a full handshake) for
// an id it does not know, such as one from before a restart.
func (s *ticketStore) unwrap(id []byte, _ tls.ConnectionState) (*tls.SessionState, error) {
	s.mu.Lock()
	e, ok := s.byID[string(id)]
	var state []byte
	if ok {
		state = e.Value.(*ticketEntry).state
		s.order.MoveToFront(e)
	}
	s.mu.Unlock()
	if !ok {
		return nil, nil
	}
	ss, err := tls.ParseSessionState(state)
	if err != nil {
		return nil, nil
	}
	return ss, nil
}

// len is the number of sessions kept.
func (s *ticketStore) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.order.Len()
}
