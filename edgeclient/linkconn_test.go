package edgeclient

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/linkedge/linkedge/internal/status"
)

// The fleet connection sends no TCP keepalive probes, and the dialer reads
// the CONNACK's session-present flag as it goes by.
func TestFleetDialer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		connack []byte
		present bool
	}{
		{"session kept", []byte{0x20, 0x02, 0x01, 0x00}, true},
		{"new session", []byte{0x20, 0x02, 0x00, 0x00}, false},
		{"refused", []byte{0x20, 0x02, 0x01, 0x05}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				// Byte by byte, as a slow link may deliver it.
				for _, b := range tc.connack {
					c.Write([]byte{b})
					time.Sleep(5 * time.Millisecond)
				}
				time.Sleep(time.Second)
			}()
			d := &fleetDialer{}
			u, _ := url.Parse("tcp://" + ln.Addr().String())
			conn, err := d.open(u, paho.ClientOptions{ConnectTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			raw, err := conn.(*connackConn).Conn.(*net.TCPConn).SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			var keepalive int
			raw.Control(func(fd uintptr) {
				keepalive, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
			})
			if keepalive != 0 {
				t.Fatal("TCP keepalive is on for the fleet connection")
			}
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 1)
			for range tc.connack {
				if _, err := conn.Read(buf); err != nil {
					t.Fatal(err)
				}
			}
			if got := d.sessionPresent.Load(); got != tc.present {
				t.Fatalf("session present %v, want %v", got, tc.present)
			}
		})
	}
}

// Every CONNECT carries the will: one word on the presence topic, and
// readers parse it.
func TestWillIsSmall(t *testing.T) {
	a := &Agent{cfg: Config{Truck: "WDB9634031L123456", Model: "aps-failure"}}
	w := a.will()
	if len(w) > 8 {
		t.Fatalf("will of %d bytes: %s", len(w), w)
	}
	if online, err := status.ParsePresence(w); err != nil || online {
		t.Fatalf("will %q parses as online=%v (%v)", w, online, err)
	}
}

func TestTransportFailure(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{io.EOF, true},
		{fmt.Errorf("tls handshake: %w", io.ErrUnexpectedEOF), true},
		{&net.OpError{Op: "read", Err: syscall.ECONNRESET}, true},
		{&net.OpError{Op: "dial", Err: timeoutErr{}}, true},
		{errors.New("remote error: tls: bad certificate"), false},
		{&tls.CertificateVerificationError{Err: errors.New("x509: unknown authority")}, false},
		{tls.AlertError(42), false},
	} {
		if got := transportFailure(tc.err); got != tc.want {
			t.Errorf("transportFailure(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// TestReconnectJitter: the first connection dials at once; reconnects wait
// a random time below the jitter, spread over it (a broker restart must not
// see the whole fleet in one second); Close ends a wait at once.
func TestReconnectJitter(t *testing.T) {
	stop := make(chan struct{})
	d := &fleetDialer{jitter: 10 * time.Second, stop: stop}
	if got := d.delay(); got != 0 {
		t.Fatalf("first dial waits %s, want none", got)
	}
	d.connected.Store(true)
	lo, hi := d.jitter, time.Duration(0)
	for range 200 {
		p := d.delay()
		if p < 0 || p >= d.jitter {
			t.Fatalf("reconnect waits %s, want within [0, %s)", p, d.jitter)
		}
		lo, hi = min(lo, p), max(hi, p)
	}
	if hi-lo < d.jitter/2 {
		t.Errorf("200 reconnect waits spread over only %s–%s of %s", lo, hi, d.jitter)
	}
	if (&fleetDialer{jitter: 0}).delay() != 0 {
		t.Error("jitter off still waits")
	}
	done := make(chan error, 1)
	go func() { done <- d.wait() }()
	close(stop)
	select {
	case err := <-done:
		if !errors.Is(err, errDialerStopped) {
			t.Fatalf("wait after stop: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a reconnect's wait did not end when the agent closed")
	}
}
