package broker

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

func TestMochiLogBridge(t *testing.T) {
	tests := []struct {
		name      string
		level     slog.Level // of the configured logger
		log       func(l *slog.Logger)
		want, not string
	}{
		{"info is dropped", slog.LevelDebug, func(l *slog.Logger) { l.Info("added hook") }, "", "added hook"},
		{"warn passes", slog.LevelInfo, func(l *slog.Logger) { l.Warn("client store quota reached") }, "quota reached", ""},
		{"connection end demoted", slog.LevelInfo, func(l *slog.Logger) { l.Warn("", "error", "EOF") }, "", "EOF"},
		{"connection end at debug", slog.LevelDebug, func(l *slog.Logger) { l.Warn("", "error", "EOF") }, "mqtt connection ended", ""},
		{"packet summarized", slog.LevelInfo, func(l *slog.Logger) {
			l.Warn("error processing packet", "pk", packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Publish},
				TopicName:   "linkedge/v1/models/m",
				Payload:     []byte("SECRET-MODEL-BYTES"),
			})
		}, "pk.topic=linkedge/v1/models/m", "SECRET"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			base := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tc.level}))
			tc.log(newMochiLogger(base).With("hook", "x"))
			out := buf.String()
			if tc.want != "" && !strings.Contains(out, tc.want) {
				t.Errorf("output %q lacks %q", out, tc.want)
			}
			if tc.want == "" && tc.not == "" && out != "" {
				t.Errorf("unexpected output %q", out)
			}
			if tc.not != "" && strings.Contains(out, tc.not) {
				t.Errorf("output %q contains %q", out, tc.not)
			}
		})
	}
}

func TestAnonymousWarning(t *testing.T) {
	tests := []struct {
		addr string
		warn bool
	}{
		{"127.0.0.1:1883", false},
		{"[::1]:1883", false},
		{"localhost:1883", false},
		{"[::]:1883", true},
		{"0.0.0.0:1883", true},
		{"10.1.2.3:1883", true},
	}
	for _, tc := range tests {
		var buf bytes.Buffer
		b := newBroker(t, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(&buf, nil)) })
		b.mqttAddr = tc.addr // as if bound there; tests only listen on loopback
		b.warnIfAnonymous()
		if got := strings.Contains(buf.String(), "anonymous"); got != tc.warn {
			t.Errorf("%s: warned=%v, want %v (%q)", tc.addr, got, tc.warn, buf.String())
		}
	}
}
