package mqttstore

import (
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

func TestGetReturnsACopy(t *testing.T) {
	s := New()
	p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	p.TopicName, p.Qos, p.MessageID, p.Payload = "linkedge/v1/trucks/t1/status", 1, 7, []byte(`{"online":true}`)
	s.Put("o.7", p)
	got, ok := s.Get("o.7").(*packets.PublishPacket)
	if !ok || got == p {
		t.Fatalf("Get returned %p for %p: want a distinct publish packet", got, p)
	}
	if got.TopicName != p.TopicName || got.MessageID != 7 || got.Qos != 1 || string(got.Payload) != string(p.Payload) {
		t.Fatalf("copy differs: %+v", got)
	}
	// Marking the copy (as paho's resume does) leaves the original alone.
	got.Dup = true
	if p.Dup {
		t.Fatal("the stored original changed")
	}
	if keys := s.All(); len(keys) != 1 || keys[0] != "o.7" {
		t.Fatalf("keys %v", keys)
	}
	s.Del("o.7")
	if s.Get("o.7") != nil || len(s.All()) != 0 {
		t.Fatal("Del kept the packet")
	}
	s.Put("i.1", packets.NewControlPacket(packets.Pubrel))
	s.Reset()
	if len(s.All()) != 0 {
		t.Fatal("Reset kept packets")
	}
}

func TestWaitListed(t *testing.T) {
	s := New()
	n := s.Lists()
	if s.WaitListed(n, 10*time.Millisecond) {
		t.Fatal("WaitListed true before any listing")
	}
	done := make(chan bool)
	go func() { done <- s.WaitListed(n, 10*time.Second) }()
	s.All()
	if !<-done {
		t.Fatal("WaitListed false after a listing")
	}
	if s.Lists() != n+1 || !s.WaitListed(n, 0) {
		t.Fatalf("Lists %d after one listing from %d", s.Lists(), n)
	}
}
