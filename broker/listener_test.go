package broker

import (
	"log/slog"
	"net"
	"syscall"
	"testing"
	"time"
)

// Accepted connections send no TCP keepalive probes: Go's default is one
// every 15 s, which a truck pays for on its cellular link; the MQTT
// keep-alive finds a dead link already.
func TestListenerNoTCPKeepalive(t *testing.T) {
	l := newListener("t", "127.0.0.1:0", nil, nil, slog.New(slog.DiscardHandler))
	if err := l.Init(nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(func(string) {}) })
	got := make(chan int, 1)
	go l.Serve(func(_ string, c net.Conn) error {
		raw, err := c.(*conn).Conn.(*net.TCPConn).SyscallConn()
		if err != nil {
			got <- -1
			return err
		}
		raw.Control(func(fd uintptr) {
			v, _ := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
			got <- v
		})
		return nil
	})
	c, err := net.Dial("tcp", l.Address())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case v := <-got:
		if v != 0 {
			t.Fatalf("SO_KEEPALIVE is %d on an accepted connection, want 0", v)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no connection accepted")
	}
}
