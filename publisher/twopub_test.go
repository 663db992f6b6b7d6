package publisher

import (
	"path/filepath"
	"testing"
	"time"
)

// TestTwoPublishers runs two publishers at once for availability: the same
// registry and key, state files and replica numbers of their own. Each
// approval reaches the fleet as a few documents, all naming the new version,
// with no serial used twice: one from each publisher, and one more when the
// document signed first arrived last (the publisher whose newer document it
// replaced announces again, so the broker retains the newest). Then the
// announcements settle, with no flapping between the two, and when one
// publisher stops the other carries on alone.
func TestTwoPublishers(t *testing.T) {
	e := newEnv(t)
	b := startBroker(t, "127.0.0.1:0")
	e.add("aps", 1, true)
	s := subscribe(t, b.Addr(), "aps")
	var pubs []running
	for i, name := range []string{"a", "b"} {
		cfg := e.config(b.Addr())
		cfg.StateFile = filepath.Join(t.TempDir(), name+"-state.json")
		cfg.Replica = i
		pubs = append(pubs, start(t, cfg))
	}
	seen := map[int64]int64{} // serial → version
	// collect reads the documents of one approval: at least one, at most
	// one per publisher, then quiet.
	collect := func(version int64) (maxSerial int64) {
		t.Helper()
		// A replaced document is noticed by the confirming view taken
		// confirmDelay after the acknowledgement, once it has settled
		// (retainedGrace); the rest is slack for a loaded machine.
		deadline := time.After(confirmDelay + retainedGrace + 5*time.Second)
		n := 0
		for {
			select {
			case m := <-s.msgs:
				r := e.verify(m)
				if r.Stable.Version != version {
					t.Fatalf("a document for version %d while version %d is the target", r.Stable.Version, version)
				}
				if v, ok := seen[r.Serial]; ok {
					t.Fatalf("serial %d used twice (versions %d and %d)", r.Serial, v, r.Stable.Version)
				}
				seen[r.Serial] = r.Stable.Version
				maxSerial = max(maxSerial, r.Serial)
				if n++; n > 2*len(pubs) {
					t.Fatalf("%d documents for version %d from %d publishers: they flap", n, version, len(pubs))
				}
			case <-deadline:
				if n == 0 {
					t.Fatalf("no document for version %d", version)
				}
				s.none(3 * time.Second) // settled
				return maxSerial
			}
		}
	}
	retained := func() int64 {
		t.Helper()
		fresh := subscribe(t, b.Addr(), "aps")
		return e.verify(fresh.next()).Serial
	}

	top := collect(1)
	if got := retained(); got != top {
		t.Errorf("the broker retains serial %d, not the highest, %d", got, top)
	}
	e.add("aps", 2, true)
	top = collect(2)
	if got := retained(); got != top {
		t.Errorf("the broker retains serial %d, not the highest, %d", got, top)
	}
	// One publisher goes; the other announces alone.
	pubs[0].stop()
	pubs = pubs[1:]
	e.add("aps", 3, true)
	collect(3)
}

// TestNextSerial: serials increase, are not below the clock, and end in the
// replica number, so publishers signing in the same millisecond differ.
func TestNextSerial(t *testing.T) {
	now := time.UnixMilli(1_796_556_387_488)
	for _, tt := range []struct {
		last    int64
		replica int
		want    int64
	}{
		{0, 0, 1_796_556_387_488},                 // the clock, already ≡ 0
		{0, 1, 1_796_556_387_489},                 // rounded up to ≡ 1
		{0, 15, 1_796_556_387_503},                // ≡ 15
		{1_796_556_387_600, 0, 1_796_556_387_616}, // above last, rounded up
		{1_796_556_387_615, 0, 1_796_556_387_616},
		{1_796_556_387_615, 15, 1_796_556_387_631}, // never equal to last
	} {
		got := nextSerial(tt.last, now, tt.replica)
		if got != tt.want || got <= tt.last || got < now.UnixMilli() || got%MaxReplicas != int64(tt.replica) {
			t.Errorf("nextSerial(%d, now, %d) = %d, want %d", tt.last, tt.replica, got, tt.want)
		}
	}
}
