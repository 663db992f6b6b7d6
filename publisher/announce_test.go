package publisher

import (
	"context"
	"crypto/ed25519"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linkedge/linkedge/internal/release"
)

// memSender records what it is asked to send, or fails with err.
type memSender struct {
	sent [][]byte
	err  error
}

func (m *memSender) Send(_ context.Context, _ string, payload []byte) error {
	if m.err != nil {
		return m.err
	}
	m.sent = append(m.sent, payload)
	return nil
}

type fixedURL struct {
	url     string
	expires time.Time
}

func (f fixedURL) URL(context.Context, Version) (string, time.Time, error) {
	return f.url, f.expires, nil
}

func testVersion(v int64) Version {
	return Version{
		Model: "aps", Version: v, Status: StatusApproved,
		Artifact: ArtifactRef{SHA256: strings.Repeat("ab", 32), Size: 100 + v},
		Runtime:  release.Runtime{Kind: release.RuntimeInProcess},
		Source:   release.Source{Registry: release.RegistryLocal},
	}
}

func newTestAnnouncer(t *testing.T, now *time.Time) (*Announcer, *memSender, ed25519.PublicKey) {
	pub, priv := release.GenerateKey()
	s := &memSender{}
	return &Announcer{
		Key: priv, Distributor: fixedURL{url: "https://models.example.com/a"}, Sender: s,
		State: NewStateFile(filepath.Join(t.TempDir(), "state.json")), TTL: 30 * time.Hour,
		Logger: testLogger(), Now: func() time.Time { return *now },
	}, s, pub
}

func TestAnnouncerPolicyAndSerials(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	a, s, pub := newTestAnnouncer(t, &now)
	ctx := t.Context()

	r1, err := a.Announce(ctx, testVersion(1), IfDue)
	if err != nil || r1 == nil || r1.Serial != now.UnixMilli() {
		t.Fatalf("first announce: %+v, %v", r1, err)
	}
	v := release.Verifier{Keys: []ed25519.PublicKey{pub}, Now: func() time.Time { return now }}
	if _, err := v.Verify(s.sent[0]); err != nil {
		t.Fatal(err)
	}
	if r, err := a.Announce(ctx, testVersion(1), IfDue); r != nil || err != nil {
		t.Fatalf("nothing due, but Announce = %v, %v", r, err)
	}
	// The clock going backwards never makes a serial repeat: the next
	// serial ending in this publisher's replica number (0) is taken.
	now = now.Add(-time.Hour)
	r2, err := a.Announce(ctx, testVersion(1), Always)
	if err != nil || r2.Serial != r1.Serial+MaxReplicas {
		t.Fatalf("Always after the clock went back: serial %v, %v; want %d", r2, err, r1.Serial+MaxReplicas)
	}
	// Just before two thirds of the validity: not due; at it: due.
	now = r2.IssuedAt.Add(20*time.Hour - time.Millisecond)
	if r, _ := a.Announce(ctx, testVersion(1), IfDue); r != nil {
		t.Fatal("re-signed too early")
	}
	now = now.Add(time.Millisecond)
	if r, err := a.Announce(ctx, testVersion(1), IfDue); r == nil || err != nil {
		t.Fatalf("not re-signed at two thirds of the validity: %v", err)
	}
	// Different content is due at once.
	if r, err := a.Announce(ctx, testVersion(2), IfDue); r == nil || r.Stable.Version != 2 || err != nil {
		t.Fatalf("new version not announced: %v, %v", r, err)
	}
	if _, err := a.Announce(ctx, Version{Model: "aps", Version: 3, Status: StatusPending}, Always); !errors.Is(err, ErrNotApproved) {
		t.Fatalf("pending version: %v, want ErrNotApproved", err)
	}
}

func TestAnnouncerFailures(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	a, s, _ := newTestAnnouncer(t, &now)
	s.err = ErrNoAck
	if _, err := a.Announce(t.Context(), testVersion(1), IfDue); !errors.Is(err, ErrNoAck) {
		t.Fatalf("Announce = %v, want ErrNoAck", err)
	}
	st, _ := a.State.Load()
	if ms := st.Models["aps"]; ms.Announced != nil || ms.SignedSerial != now.UnixMilli() {
		t.Fatalf("after a failed send: %+v (the serial must be reserved, nothing announced)", ms)
	}
	// The retry, in the same millisecond, still gets a new serial.
	s.err = nil
	r, err := a.Announce(t.Context(), testVersion(1), IfDue)
	if err != nil || r.Serial != now.UnixMilli()+MaxReplicas {
		t.Fatalf("retry: %v, %v", r, err)
	}
}

// A URL that expires before the TTL bounds the document's validity.
func TestAnnouncerURLExpiry(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	a, _, _ := newTestAnnouncer(t, &now)
	a.Distributor = fixedURL{url: "https://bucket.s3.example.com/x?sig=1", expires: now.Add(6 * time.Hour)}
	r, err := a.Announce(t.Context(), testVersion(1), IfDue)
	if err != nil || !r.ExpiresAt.Equal(now.Add(6*time.Hour)) {
		t.Fatalf("Announce = %+v, %v; want expiry at the URL's", r, err)
	}
	a.Distributor = fixedURL{url: "https://x/y", expires: now.Add(-time.Second)}
	if _, err := a.Announce(t.Context(), testVersion(2), IfDue); err == nil || !strings.Contains(err.Error(), "expires") {
		t.Fatalf("expired URL: %v", err)
	}
}
