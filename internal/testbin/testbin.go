// Package testbin builds the linkedge command for tests that run its parts
// as child processes (to kill them, or to see their CPU and memory apart).
package testbin

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

var (
	once sync.Once
	dir  string
	path string
	err  error
)

// Linkedge returns the path of the linkedge command, built once per test
// process (within 10 minutes). $LINKEDGE_BIN (or, for the chaos suite's
// older name, $CHAOS_BIN) names a binary built elsewhere instead, e.g. from
// a committed revision for comparison.
func Linkedge(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		for _, env := range []string{"LINKEDGE_BIN", "CHAOS_BIN"} {
			if p := os.Getenv(env); p != "" {
				path = p
				return
			}
		}
		if dir, err = os.MkdirTemp("", "linkedge-test-bin-"); err != nil {
			return
		}
		goCmd, lerr := exec.LookPath("go")
		if lerr != nil {
			goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		path = filepath.Join(dir, "linkedge")
		if out, berr := exec.CommandContext(ctx, goCmd, "build", "-o", path, "github.com/linkedge/linkedge").CombinedOutput(); berr != nil {
			err = fmt.Errorf("build linkedge: %w\n%s", berr, out)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// Cleanup removes the built binary; call it from TestMain after m.Run.
func Cleanup() {
	if dir != "" {
		os.RemoveAll(dir)
	}
}
