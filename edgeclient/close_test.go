package edgeclient

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// H: Close returns within ShutdownTimeout whatever a part does, and says
// where it was stuck. Here the updater never returns.
func TestCloseIsBounded(t *testing.T) {
	a := &Agent{cfg: Config{ShutdownTimeout: 200 * time.Millisecond}, log: slog.New(slog.DiscardHandler)}
	a.cancel = func() {}
	a.wg.Add(1) // an updater that never stops; left blocked when the test ends
	start := time.Now()
	err := a.Close()
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Close took %s with a 200ms shutdown timeout", took)
	}
	if !errors.Is(err, ErrCloseTimeout) || !strings.Contains(err.Error(), "stopping the updater") {
		t.Fatalf("Close: %v, want ErrCloseTimeout naming the updater", err)
	}
	if err2 := a.Close(); err2 != err {
		t.Fatalf("second Close: %v, want the same answer", err2)
	}
}
