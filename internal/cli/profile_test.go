package cli

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestHeapProfileOnSignal: with LINKEDGE_HEAP_PROFILE_DIR set, SIGUSR1 writes
// a heap profile there (bench fleet asks the broker for one with the fleet
// connected), one file per signal; stopping ends the listening.
func TestHeapProfileOnSignal(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("LINKEDGE_HEAP_PROFILE_DIR", dir)
	stop := startHeapProfiles()
	defer stop()
	for want := 1; want <= 2; want++ {
		if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		var got []string
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			got, _ = filepath.Glob(filepath.Join(dir, "*.heap"))
			if len(got) >= want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d heap profiles after %d signals", len(got), want)
			}
		}
		// Written whole before the next signal: a profile is gzip data.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			b, err := os.ReadFile(got[want-1])
			if err == nil && len(b) > 2 && b[0] == 0x1f && b[1] == 0x8b {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s is not a gzip-compressed profile", got[want-1])
			}
		}
	}
	stop()
	stop() // idempotent
}
