package sagemaker

import (
	"testing"
	"time"
)

func TestBackoffBounds(t *testing.T) {
	b := backoff{min: time.Second, max: 10 * time.Second}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	for i, w := range want {
		d := b.next()
		if d < w/2 || d > w {
			t.Fatalf("wait %d: %s, want between %s and %s", i, d, w/2, w)
		}
	}
	b.reset()
	if d := b.next(); d > time.Second {
		t.Fatalf("after reset: %s", d)
	}
}
