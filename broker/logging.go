package broker

import (
	"context"
	"log/slog"

	"github.com/mochi-mqtt/server/v2/packets"
)

// mochiLogLevel is the lowest level of mochi's own records that reaches the
// configured logger. mochi logs every hook and listener at Info, which would
// drown the agent's logs; problems are logged at Warn and above.
const mochiLogLevel = slog.LevelWarn

// quietHandler forwards records at or above min to the wrapped handler.
//
// mochi's listeners log every connection that ends abnormally as a Warn with
// an empty message ("" error=EOF). A truck losing coverage is routine, so
// such records are demoted to Debug and given a readable message.
type quietHandler struct {
	min   slog.Level
	inner slog.Handler
}

func newMochiLogger(l *slog.Logger) *slog.Logger {
	h := &quietHandler{min: mochiLogLevel, inner: l.Handler()}
	return slog.New(h).With("component", "mqtt")
}

func (h *quietHandler) Enabled(ctx context.Context, level slog.Level) bool {
	// Demoted records are checked again in Handle.
	return level >= h.min && h.inner.Enabled(ctx, level)
}

func (h *quietHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "" {
		r.Message = "mqtt connection ended"
		r.Level = slog.LevelDebug
	}
	if !h.inner.Enabled(ctx, r.Level) {
		return nil
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(summarizePacket(a))
		return true
	})
	return h.inner.Handle(ctx, out)
}

// summarizePacket replaces a whole mochi packet (which mochi logs with %v,
// payload included, and payloads can be megabytes) by its type, topic and id.
func summarizePacket(a slog.Attr) slog.Attr {
	pk, ok := a.Value.Any().(packets.Packet)
	if !ok {
		return a
	}
	attrs := []any{"type", packets.PacketNames[pk.FixedHeader.Type], "id", pk.PacketID}
	if pk.TopicName != "" {
		attrs = append(attrs, "topic", pk.TopicName, "bytes", len(pk.Payload))
	}
	return slog.Group(a.Key, attrs...)
}

func (h *quietHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &quietHandler{min: h.min, inner: h.inner.WithAttrs(attrs)}
}

func (h *quietHandler) WithGroup(name string) slog.Handler {
	return &quietHandler{min: h.min, inner: h.inner.WithGroup(name)}
}
