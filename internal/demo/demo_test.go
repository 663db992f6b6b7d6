package demo

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestDemo plays the README's first command and checks its story.
func TestDemo(t *testing.T) {
	var out bytes.Buffer
	err := Run(context.Background(), Config{Dir: t.TempDir(), Probation: time.Second, Out: &out})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"every truck serves v1", "truck-3 loses its connection", "online trucks serve v2",
		"still offline, serves v1", "truck-3 serves v2", "TRUCK", "OK: v2 reached the online trucks"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(out.String())
	}
}
