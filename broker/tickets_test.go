package broker

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/linkedge/linkedge/internal/tlsconfig"
	"github.com/linkedge/linkedge/internal/tlsconfig/tlstest"
)

// A mutual-TLS client resumes its session with a 16-byte ticket, not the
// whole encrypted session state (client certificate included, about 700
// bytes) that crypto/tls would send it and have it send back.
func TestSessionTicketsAreSmall(t *testing.T) {
	ca := tlstest.NewCA(t, "fleet")
	srvCert, srvKey := ca.Server(t, "broker")
	b := startBroker(t, func(c *Config) { c.TLSCert, c.TLSKey, c.TLSClientCA = srvCert, srvKey, ca.File })
	cert, key := ca.Client(t, "truck-1")
	cfg, err := tlsconfig.Client{CAFile: ca.File, CertFile: cert, KeyFile: key}.Build()
	if err != nil {
		t.Fatal(err)
	}
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	host, _, _ := net.SplitHostPort(b.Addr())
	for i := range 3 {
		c, err := tls.Dial("tcp", b.Addr(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		// A CONNECT, so that reading the CONNACK also reads the ticket.
		c.Write([]byte{0x10, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x04, 't', 'e', 's', 't'})
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
			t.Fatal(err)
		}
		if resumed := c.ConnectionState().DidResume; resumed != (i > 0) {
			t.Fatalf("connection %d: resumed %v", i, resumed)
		}
		c.Close()
		cs, ok := cfg.ClientSessionCache.Get(host)
		if !ok {
			t.Fatalf("connection %d: no session kept", i)
		}
		ticket, _, err := cs.ResumptionState()
		if err != nil || len(ticket) != 16 {
			t.Fatalf("connection %d: ticket of %d bytes (%v), want 16", i, len(ticket), err)
		}
	}
}

func TestTicketStoreBounded(t *testing.T) {
	s := newTicketStore(2)
	var ids [][]byte
	for range 3 {
		id, err := s.wrap(tls.ConnectionState{}, &tls.SessionState{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if s.len() != 2 {
		t.Fatalf("%d sessions kept, want 2", s.len())
	}
	if ss, _ := s.unwrap(ids[0], tls.ConnectionState{}); ss != nil {
		t.Fatal("the oldest session survived the bound")
	}
	if ss, _ := s.unwrap([]byte("not an id"), tls.ConnectionState{}); ss != nil {
		t.Fatal("an unknown id resumed a session")
	}
}
