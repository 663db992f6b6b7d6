package backoff

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		w *= time.Millisecond
		d := b.Next()
		if d < w/2 || d > w {
			t.Fatalf("wait %d = %v, want in [%v, %v]", i, d, w/2, w)
		}
	}
	b.Reset()
	if d := b.Next(); d > 100*time.Millisecond {
		t.Fatalf("after Reset: %v", d)
	}
	for range 100 {
		b.Next() // no overflow past 32 doublings
	}
	if d := b.Next(); d < 500*time.Millisecond || d > time.Second {
		t.Fatalf("long run: %v", d)
	}
}
