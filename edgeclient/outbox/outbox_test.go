package outbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func drain(t *testing.T, q *Queue) []string {
	t.Helper()
	var got []string
	for {
		m, h, ok := q.Peek()
		if !ok {
			return got
		}
		got = append(got, string(m))
		if err := q.Ack(h); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOrderAndRestart(t *testing.T) {
	dir := t.TempDir()
	q, err := Open(dir, 100)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := q.Push(fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	// Two delivered, then the agent stops.
	for range 2 {
		_, h, _ := q.Peek()
		q.Ack(h)
	}
	q.Close()
	q.Close() // idempotent
	if err := q.Push([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("push after close: %v", err)
	}

	q, err = Open(dir, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.Len() != 3 {
		t.Fatalf("%d waiting after a restart, want 3", q.Len())
	}
	q.Push([]byte(`{"n":5}`))
	got := drain(t, q)
	want := []string{`{"n":2}`, `{"n":3}`, `{"n":4}`, `{"n":5}`}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestFullQueueDropsOldest(t *testing.T) {
	dir := t.TempDir()
	q, _ := Open(dir, 3)
	for i := range 5 {
		q.Push(fmt.Appendf(nil, "m%d", i))
	}
	if q.Dropped() != 2 || q.Len() != 3 {
		t.Fatalf("dropped %d, waiting %d; want 2 and 3", q.Dropped(), q.Len())
	}
	q.Close()
	q, _ = Open(dir, 3)
	defer q.Close()
	if got := drain(t, q); fmt.Sprint(got) != "[m2 m3 m4]" {
		t.Fatalf("after restart %v, want the newest three", got)
	}
	// Reopened smaller: the newest are kept.
	for i := range 3 {
		q.Push(fmt.Appendf(nil, "n%d", i))
	}
	q.Close()
	q, _ = Open(dir, 2)
	defer q.Close()
	if got := drain(t, q); fmt.Sprint(got) != "[n1 n2]" || q.Dropped() != 1 {
		t.Fatalf("reopened with max 2: %v, dropped %d", got, q.Dropped())
	}
}

// TestAckAfterDrop: the head in flight is dropped by a push into a full
// queue before its acknowledgement comes; the acknowledgement must not
// remove the next message, which was never sent.
func TestAckAfterDrop(t *testing.T) {
	q, _ := Open(t.TempDir(), 3)
	defer q.Close()
	for _, m := range []string{"a", "b", "c"} {
		q.Push([]byte(m))
	}
	msg, h, _ := q.Peek() // "a" goes out
	q.Push([]byte("d"))   // full: "a" is dropped
	if err := q.Ack(h); err != nil {
		t.Fatal(err)
	}
	if got := drain(t, q); string(msg) != "a" || fmt.Sprint(got) != "[b c d]" || q.Dropped() != 1 {
		t.Fatalf("after the late ack: %v (dropped %d), want [b c d]", got, q.Dropped())
	}
}

func TestTornLastLine(t *testing.T) {
	dir := t.TempDir()
	q, _ := Open(dir, 10)
	q.Push([]byte("whole"))
	q.Close()
	// A crash in the middle of the next append.
	f, _ := os.OpenFile(filepath.Join(dir, "log-0"), os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte(`{"half`))
	f.Close()
	q, err := Open(dir, 10)
	if err != nil {
		t.Fatal(err)
	}
	q.Push([]byte("next"))
	if got := drain(t, q); fmt.Sprint(got) != "[whole next]" {
		t.Fatalf("got %v: the torn line must go and the next append stay whole", got)
	}
	q.Close()
}

func TestCompaction(t *testing.T) {
	dir := t.TempDir()
	q, _ := Open(dir, 10*compactAfter)
	n := 3 * compactAfter
	for i := range n {
		q.Push(fmt.Appendf(nil, "m%d", i))
	}
	for range 2*compactAfter + 1 {
		_, h, _ := q.Peek()
		q.Ack(h)
	}
	// Compacted at least once: a new generation, the old log gone.
	logs, _ := filepath.Glob(filepath.Join(dir, "log-*"))
	if len(logs) != 1 || q.gen == 0 {
		t.Fatalf("logs %v, generation %d", logs, q.gen)
	}
	q.Close()
	// A compaction interrupted after writing the next log but before the
	// cursor: the left-over log is ignored and removed.
	os.WriteFile(filepath.Join(dir, fmt.Sprintf("log-%d", q.gen+1)), []byte("stray\n"), 0o644)
	q, err := Open(dir, 10*compactAfter)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	got := drain(t, q)
	if len(got) != n-(2*compactAfter+1) || got[0] != fmt.Sprintf("m%d", 2*compactAfter+1) || got[len(got)-1] != fmt.Sprintf("m%d", n-1) {
		t.Fatalf("%d after compaction and restart, first %q", len(got), got[0])
	}
	if logs, _ := filepath.Glob(filepath.Join(dir, "log-*")); len(logs) != 1 {
		t.Fatalf("stray log kept: %v", logs)
	}
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	q, _ := Open(dir, 10)
	defer q.Close()
	for _, m := range []string{"", "two\nlines"} {
		if err := q.Push([]byte(m)); !errors.Is(err, ErrBadMessage) {
			t.Errorf("push %q: %v", m, err)
		}
	}
	os.WriteFile(filepath.Join(dir, "cursor.json"), []byte("{"), 0o644)
	if _, err := Open(dir, 10); err == nil {
		t.Fatal("a corrupt cursor was accepted")
	}
}

// BenchmarkPush measures what queuing one forwarded prediction costs: an
// append and an fsync.
func BenchmarkPush(b *testing.B) {
	q, err := Open(b.TempDir(), 1<<30)
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	msg := []byte(`{"id":"r-17","model":"aps-failure","model_version":2,"label":"pos","score":0.93,"latency_ms":0.21,"time":"2026-11-26T06:10:01.123Z"}`)
	for b.Loop() {
		if err := q.Push(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func TestPeekNAckN(t *testing.T) {
	q, err := Open(t.TempDir(), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	for _, m := range []string{"a", "b", "c"} {
		q.Push([]byte(m))
	}
	batch, h := q.PeekN(10)
	if len(batch) != 3 || string(batch[0]) != "a" {
		t.Fatalf("PeekN: %q", batch)
	}
	// While the batch is on its way, the full queue drops "a" and "b".
	q.Push([]byte("d"))
	q.Push([]byte("e"))
	q.Push([]byte("f"))
	if err := q.AckN(h, len(batch)); err != nil {
		t.Fatal(err)
	}
	rest, _ := q.PeekN(10)
	if got := fmt.Sprintf("%s", rest); got != "[d e f]" {
		t.Fatalf("after the ack: %s, want the three never sent", got)
	}
	// An ack of a batch long gone changes nothing.
	if err := q.AckN(h, len(batch)); err != nil || q.Len() != 3 {
		t.Fatalf("stale ack: %v, %d left", err, q.Len())
	}
}
