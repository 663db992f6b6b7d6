package update

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkedge/linkedge/internal/download"
)

// realFetch makes h download over HTTP with the real client, quickly: a
// call ends after a few requests, so that each Apply is one try.
func realFetch(h *harness) {
	h.m.Fetch = func(ctx context.Context, tg Target, dst string, p func(int64, int64)) error {
		h.fetchN.Add(1)
		return download.Fetch(ctx, tg.Artifact.URL, dst, tg.Artifact.Size, tg.Artifact.SHA256, download.Options{
			MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, MaxAttempts: 3, MaxStatusRetries: 1,
			StallTimeout: 5 * time.Second, Progress: p})
	}
}

// source is an artifact server on 127.0.0.1 that counts its requests.
type source struct {
	*httptest.Server
	requests atomic.Int32
}

func newSource(t *testing.T, h func(w http.ResponseWriter, r *http.Request, n int)) *source {
	s := &source{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h(w, r, int(s.requests.Add(1)))
	}))
	t.Cleanup(s.Close)
	return s
}

// sendThenDrop answers a request for data (from its Range, if any) with
// the first k bytes asked for, then cuts the connection.
func sendThenDrop(w http.ResponseWriter, r *http.Request, data []byte, k int) {
	from := 0
	if v, ok := strings.CutPrefix(r.Header.Get("Range"), "bytes="); ok {
		from, _ = strconv.Atoi(strings.TrimSuffix(v, "-"))
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(data)-from))
	if from > 0 {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, len(data)-1, len(data)))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	w.Write(data[from:min(from+k, len(data))])
	rc := http.NewResponseController(w)
	rc.Flush()
	if conn, _, err := rc.Hijack(); err == nil {
		conn.Close()
	}
}

// closedURL is a URL on 127.0.0.1 where nothing listens: the dial is
// refused, as when the truck's link or the source's host is down.
func closedURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr + "/m.tar.gz"
}

// A source that answers badly for ever is asked MaxURLFailures times, then
// only every DeadURLRetry, and the record (which survives restarts) says
// the URL is dead. A source that cannot be reached is never capped.
func TestDeadURLBacksOff(t *testing.T) {
	data := bytes.Repeat([]byte("model "), 2000)
	tests := []struct {
		name   string
		answer func(w http.ResponseWriter, r *http.Request) // nil: nothing listens
		// firstErr is what a try before the cap returns.
		firstErr error
	}{
		{"403 for ever", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "denied", http.StatusForbidden) }, ErrDeferred},
		{"404", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }, ErrTransient},
		{"410", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "gone", http.StatusGone) }, ErrTransient},
		{"503 for ever", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) }, ErrTransient},
		{"wrong sha256", func(w http.ResponseWriter, r *http.Request) {
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(bytes.Repeat([]byte("ledom "), 2000)))
		}, ErrTransient},
		{"redirect loop", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/again", http.StatusFound) }, ErrTransient},
		{"dial refused", nil, ErrTransient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			h := newHarness(t, dir)
			realFetch(h)
			var requests func() int32
			url := closedURL(t)
			if tt.answer != nil {
				src := newSource(t, func(w http.ResponseWriter, r *http.Request, _ int) { tt.answer(w, r) })
				url, requests = src.URL+"/m.tar.gz", src.requests.Load
			}
			tg := h.targetAt(2, 2, url, data)
			capped := tt.answer != nil
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			const tries = 8 // the default MaxURLFailures
			for try := 1; try <= tries+4; try++ {
				if try == 4 {
					h = newHarness(t, dir) // an agent restart: the counts are on disk
					realFetch(h)
				}
				rec, err := h.apply(ctx, tg)
				if errors.Is(err, ErrDeadURL) {
					if !capped || try != tries {
						t.Fatalf("try %d: %v; want a dead url only at try %d, and only for a source that answered", try, err, tries)
					}
					break
				}
				if !errors.Is(err, tt.firstErr) || rec.Attempt != 0 {
					t.Fatalf("try %d: phase %s attempt %d err %v, want %v", try, rec.Phase, rec.Attempt, err, tt.firstErr)
				}
				if !capped && (len(rec.Sources) != 0 || rec.RetryAt.After(time.Now().Add(time.Second))) {
					t.Fatalf("try %d: an unreachable source was counted: %+v, retry at %v", try, rec.Sources, rec.RetryAt)
				}
				if capped && try == tries+4 {
					t.Fatalf("never capped: %+v", rec.Sources)
				}
			}
			if !capped {
				return
			}

			// Dead, and so after a restart too.
			h = newHarness(t, dir)
			realFetch(h)
			rec, err := h.m.Store.Record()
			if err != nil || rec.Phase != Retrying || len(rec.Sources) != 1 || rec.Sources[0].Failures != tries {
				t.Fatalf("record after the cap: %+v, %v", rec, err)
			}
			if !strings.Contains(rec.Error, "artifact url is dead") || !strings.Contains(rec.Error, "8 times") || !strings.Contains(rec.Error, "another url is used at once") {
				t.Errorf("the record does not say what happened: %q", rec.Error)
			}
			retryAt := rec.RetryAt
			if min, max := time.Now().Add(5*time.Hour+24*time.Minute), time.Now().Add(6*time.Hour); retryAt.Before(min) || retryAt.After(max) {
				t.Fatalf("retry at %v, want the default DeadURLRetry (6h, less up to a tenth) from now", retryAt)
			}
			// A re-announcement naming the same URL waits too, and so
			// does a try that comes early: the source is not asked.
			again := h.targetAt(2, 3, url, data)
			for _, next := range []Target{tg, again} {
				if at := h.m.NextTry(next); !at.Equal(retryAt) {
					t.Fatalf("serial %d: next try at %v, want %v", next.Serial, at, retryAt)
				}
			}
			n := requests()
			if _, err := h.apply(ctx, again); !errors.Is(err, ErrDeadURL) || !errors.Is(err, ErrTransient) || requests() != n {
				t.Fatalf("an early try: %v after %d requests, want ErrDeadURL and no request", err, requests()-n)
			}
			// DeadURLRetry later it is asked once more, and stays dead.
			later := time.Now().Add(7 * time.Hour)
			h.m.Now = func() time.Time { return later }
			rec2, err := h.apply(ctx, again)
			if !errors.Is(err, ErrDeadURL) || requests() == n || rec2.Sources[0].Failures != tries+1 || !rec2.RetryAt.After(later.Add(5*time.Hour)) {
				t.Fatalf("the rare retry: %v, %d requests, %+v", err, requests()-n, rec2.Sources)
			}
		})
	}
}

// A newer document that names the same artifact at another URL is tried at
// once, and the download resumes the bytes the dead URL sent.
func TestNewerDocumentReplacesDeadURL(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	half := len(data) / 2
	// The old source sends half the file, then refuses for ever.
	dead := newSource(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			sendThenDrop(w, r, data, half)
			return
		}
		http.Error(w, "denied", http.StatusForbidden)
	})
	var mu sync.Mutex
	var ranges []string
	good := newSource(t, func(w http.ResponseWriter, r *http.Request, n int) {
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range"))
		mu.Unlock()
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	})
	h := newHarness(t, t.TempDir())
	realFetch(h)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tg := h.targetAt(2, 2, dead.URL+"/m.tar.gz?X-Amz-Signature=secret", data)
	var err error
	for try := 0; try < 20 && !errors.Is(err, ErrDeadURL); try++ {
		_, err = h.apply(ctx, tg)
	}
	if !errors.Is(err, ErrDeadURL) {
		t.Fatalf("the old source is not dead: %v", err)
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("the report carries the presigned query: %v", err)
	}
	partial := h.m.Store.ArtifactPath(tg.Artifact.SHA256) + ".partial"
	if st, err := os.Stat(partial); err != nil || st.Size() != int64(half) {
		t.Fatalf("partial download: %v, %v; want %d bytes kept", st, err, half)
	}

	newer := h.targetAt(2, 3, good.URL+"/mirror/m.tar.gz", data)
	if at := h.m.NextTry(newer); !at.IsZero() {
		t.Fatalf("the newer document waits until %v, want at once", at)
	}
	rec, err := h.apply(ctx, newer)
	if err != nil || rec.Phase != Committed || h.rt.version() != 2 {
		t.Fatalf("with the new url: phase %s err %v serving v%d", rec.Phase, err, h.rt.version())
	}
	mu.Lock()
	defer mu.Unlock()
	if want := fmt.Sprintf("bytes=%d-", half); len(ranges) != 1 || ranges[0] != want {
		t.Fatalf("requests to the new url asked for %q, want one for %q (the partial resumed)", ranges, want)
	}
	if len(rec.Sources) != 0 {
		t.Fatalf("counts kept after the download: %+v", rec.Sources)
	}
}

// A source that sends bytes of the file between its bad answers is alive:
// its count starts again each time, and the download completes.
func TestSourceSendingBytesIsNotDead(t *testing.T) {
	data := bytes.Repeat([]byte("model "), 2048) // 12 KiB
	src := newSource(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n%2 == 1 {
			sendThenDrop(w, r, data, 1024)
			return
		}
		http.Error(w, "not now", http.StatusNotFound)
	})
	h := newHarness(t, t.TempDir())
	realFetch(h)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tg := h.targetAt(2, 2, src.URL+"/m.tar.gz", data)
	for try := 1; ; try++ {
		rec, err := h.apply(ctx, tg)
		if err == nil && rec.Phase == Committed {
			if try <= 8 {
				t.Fatalf("committed at try %d; the test needs more tries than MaxURLFailures", try)
			}
			return
		}
		if !errors.Is(err, ErrTransient) || errors.Is(err, ErrDeadURL) || try > 30 {
			t.Fatalf("try %d: %v", try, err)
		}
		if len(rec.Sources) != 1 || rec.Sources[0].Failures != 1 {
			t.Fatalf("try %d: counts %+v, want 1: bytes came before the 404", try, rec.Sources)
		}
	}
}
