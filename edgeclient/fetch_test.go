package edgeclient

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/linkedge/linkedge/edgeclient/update"
	"github.com/linkedge/linkedge/internal/release"
)

// A download's connection is closed when the download ends, not left idle
// for net/http's 90 s: on a truck's link an idle connection costs the
// server's keepalive probes and FIN later, and the next download is hours
// or weeks away.
func TestFetchClosesItsConnection(t *testing.T) {
	body := make([]byte, 100<<10)
	for i := range body {
		body[i] = byte(i * 7)
	}
	sum := sha256.Sum256(body)
	var mu sync.Mutex
	states := map[net.Conn]http.ConnState{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		mu.Lock()
		states[c] = s
		mu.Unlock()
	}
	srv.Start()
	t.Cleanup(srv.Close)
	fetch := fetchArtifact(slog.New(slog.DiscardHandler), "", nil)
	target := update.Target{Version: 1, Artifact: release.Artifact{URL: srv.URL + "/model.tar.gz", SHA256: hex.EncodeToString(sum[:]), Size: int64(len(body))}}
	if err := fetch(context.Background(), target, filepath.Join(t.TempDir(), "a.tar.gz"), nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		open := 0
		for _, s := range states {
			if s != http.StateClosed && s != http.StateHijacked {
				open++
			}
		}
		n := len(states)
		mu.Unlock()
		if n > 0 && open == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d download connections still open 5 s after the download", open, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
