package download

import (
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/linkedge/linkedge/internal/netsim"
)

// TestThroughCutLink is the demo in miniature: a slow link is cut a quarter
// of the way into the download and restored a moment later; the download
// carries on from where it stopped instead of starting over.
func TestThroughCutLink(t *testing.T) {
	const size = 200 << 10
	data, sha := artifact(size, 30)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		serveFile(w, r, data, `"v1"`, time.Time{})
	})
	p, err := netsim.New(s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	p.SetRate(400_000) // ~0.5s for the whole file

	var cutOnce sync.Once
	var restore *time.Timer
	o := opts(t, nil)
	o.Client = &http.Client{Transport: &http.Transport{
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}}
	t.Cleanup(o.Client.CloseIdleConnections)
	o.Progress = func(done, total int64) {
		if done >= total/4 && done < total {
			cutOnce.Do(func() {
				p.Cut()
				restore = time.AfterFunc(150*time.Millisecond, p.Restore)
			})
		}
	}
	dst := dstPath(t)
	res, err := FetchWithResult(t.Context(), "http://"+p.Addr()+"/m", dst, size, sha, o)
	if restore != nil {
		restore.Stop()
	}
	if err != nil {
		t.Fatal(err)
	}
	assertFile(t, dst, data)
	if restore == nil {
		t.Fatal("the link was never cut")
	}
	if res.Attempts < 2 {
		t.Errorf("attempts = %d, want at least 2 (the cut must have interrupted the transfer)", res.Attempts)
	}
	// Every byte the client received counted once: resumed, not restarted.
	if res.Downloaded != size {
		t.Errorf("downloaded %d bytes for a %d-byte file", res.Downloaded, size)
	}
	if sent := s.sent.Load(); sent > 2*size {
		t.Errorf("server sent %d bytes for a %d-byte file", sent, size)
	}
}
