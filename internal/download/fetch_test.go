package download

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

const testSize = 256 << 10

func TestFullDownload(t *testing.T) {
	data, sha := artifact(testSize, 1)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		serveFile(w, r, data, `"v1"`, time.Time{})
	})
	dst := dstPath(t)
	var calls [][2]int64
	o := opts(t, nil) // default client, to exercise it too
	o.Progress = func(done, total int64) { calls = append(calls, [2]int64{done, total}) }

	res, err := FetchWithResult(t.Context(), s.url("/m.tar.gz"), dst, testSize, sha, o)
	if err != nil {
		t.Fatal(err)
	}
	assertFile(t, dst, data)
	if want := (Result{Downloaded: testSize, Attempts: 1}); res != want {
		t.Errorf("result = %+v, want %+v", res, want)
	}
	h := s.header(t, 1)
	if h.Get("Range") != "" || h.Get("Accept-Encoding") != "identity" {
		t.Errorf("request headers: Range %q, Accept-Encoding %q", h.Get("Range"), h.Get("Accept-Encoding"))
	}
	if len(calls) == 0 || calls[len(calls)-1] != [2]int64{testSize, testSize} {
		t.Fatalf("progress calls %v, want the last to be done=total", calls)
	}
	for i := 1; i < len(calls); i++ {
		if calls[i][0] < calls[i-1][0] {
			t.Fatalf("progress went backwards: %v", calls)
		}
	}
}

// A connection that dies mid-body is resumed with Range, and the bytes
// already received are not fetched again.
func TestResumeAfterDrop(t *testing.T) {
	data, sha := artifact(testSize, 2)
	cut := int64(testSize * 4 / 10)
	mod := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		name        string
		etag        string
		mod         time.Time
		ignoreRange bool
		wantIfRange string
		wantSent    int64 // body bytes the server writes in total
	}{
		{name: "etag", etag: `"v1"`, wantIfRange: `"v1"`, wantSent: testSize},
		{name: "last-modified only", mod: mod, wantIfRange: mod.Format(http.TimeFormat), wantSent: testSize},
		{name: "weak etag falls back to last-modified", etag: `W/"v1"`, mod: mod, wantIfRange: mod.Format(http.TimeFormat), wantSent: testSize},
		{name: "no validator", wantSent: testSize},
		{name: "server ignores range", etag: `"v1"`, ignoreRange: true, wantIfRange: `"v1"`, wantSent: cut + testSize},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				if tc.ignoreRange {
					r.Header.Del("Range")
				}
				if n == 1 {
					w = dropAfter(w, cut)
				}
				serveFile(w, r, data, tc.etag, tc.mod)
			})
			dst := dstPath(t)
			res, err := FetchWithResult(t.Context(), s.url("/m"), dst, testSize, sha, opts(t, s))
			if err != nil {
				t.Fatal(err)
			}
			assertFile(t, dst, data)
			if res.Attempts != 2 {
				t.Errorf("attempts = %d, want 2", res.Attempts)
			}
			h := s.header(t, 2)
			if got, want := h.Get("Range"), "bytes="+strconv.FormatInt(cut, 10)+"-"; got != want {
				t.Errorf("second request Range = %q, want %q", got, want)
			}
			if got := h.Get("If-Range"); got != tc.wantIfRange {
				t.Errorf("second request If-Range = %q, want %q", got, tc.wantIfRange)
			}
			if got := s.sent.Load(); got != tc.wantSent {
				t.Errorf("server sent %d body bytes, want %d", got, tc.wantSent)
			}
			if wantDown := tc.wantSent; res.Downloaded != wantDown {
				t.Errorf("downloaded = %d, want %d", res.Downloaded, wantDown)
			}
		})
	}
}

// An interrupted call leaves a partial file and sidecar that the next call
// (as if in a new process) resumes.
func TestResumeFromEarlierCall(t *testing.T) {
	data, sha := artifact(testSize, 3)
	cut := int64(testSize * 4 / 10)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			w = dropAfter(w, cut)
		}
		serveFile(w, r, data, `"v1"`, time.Time{})
	})
	dst := dstPath(t)
	o := opts(t, s)
	o.MaxAttempts = 1
	_, err := FetchWithResult(t.Context(), s.url("/m?X-Amz-Signature=secret"), dst, testSize, sha, o)
	if err == nil || !Retryable(err) {
		t.Fatalf("first call: err = %v, want a retryable error", err)
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("error leaks the query string: %v", err)
	}
	if got := fileSize(t, dst+".partial"); got != cut {
		t.Fatalf("partial file has %d bytes, want %d", got, cut)
	}
	meta, err := readSidecar(dst + ".partial.json")
	if err != nil {
		t.Fatalf("sidecar: %v", err)
	}
	if meta.ETag != `"v1"` || strings.Contains(meta.URL, "secret") || meta.SHA256 != sha || meta.Size != testSize {
		t.Fatalf("sidecar = %+v", meta)
	}

	// A fresh presigned URL for the same object: same path, new query.
	res, err := FetchWithResult(t.Context(), s.url("/m?X-Amz-Signature=other"), dst, testSize, sha, opts(t, s))
	if err != nil {
		t.Fatal(err)
	}
	assertFile(t, dst, data)
	if want := (Result{Resumed: cut, Downloaded: testSize - cut, Attempts: 1}); res != want {
		t.Errorf("result = %+v, want %+v", res, want)
	}
	if got := s.header(t, 2).Get("If-Range"); got != `"v1"` {
		t.Errorf("If-Range = %q", got)
	}
	if got := s.sent.Load(); got != testSize {
		t.Errorf("server sent %d body bytes in total, want %d", got, testSize)
	}
}

// A partial from a file that has since changed on the server must not be
// spliced onto the new file.
func TestServerFileChanged(t *testing.T) {
	oldData, _ := artifact(testSize, 4)
	newData, newSHA := artifact(testSize, 5)
	cut := testSize / 2
	cases := []struct {
		name      string
		oldETag   string // recorded with the partial file
		serve     func(w http.ResponseWriter, r *http.Request)
		wantTries int
	}{
		{
			name:      "if-range honoured",
			oldETag:   `"old"`,
			serve:     func(w http.ResponseWriter, r *http.Request) { serveFile(w, r, newData, `"new"`, time.Time{}) },
			wantTries: 1,
		},
		{
			name:    "if-range ignored, etag gives it away",
			oldETag: `"old"`,
			serve: func(w http.ResponseWriter, r *http.Request) {
				r.Header.Del("If-Range")
				serveFile(w, r, newData, `"new"`, time.Time{})
			},
			wantTries: 2,
		},
		{
			name: "no validators at all, digest catches the splice",
			serve: func(w http.ResponseWriter, r *http.Request) {
				r.Header.Del("If-Range")
				serveFile(w, r, newData, "", time.Time{})
			},
			wantTries: 2,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) { tc.serve(w, r) })
			dst := dstPath(t)
			plantPartial(t, dst, oldData, cut, s.url("/m"), newSHA, tc.oldETag)

			res, err := FetchWithResult(t.Context(), s.url("/m"), dst, testSize, newSHA, opts(t, s))
			if err != nil {
				t.Fatal(err)
			}
			assertFile(t, dst, newData)
			if res.Attempts != tc.wantTries || res.Resumed != 0 {
				t.Errorf("result = %+v, want %d attempts and nothing resumed", res, tc.wantTries)
			}
		})
	}
}

// A partial file that was damaged on disk (or spliced) fails the digest
// once; the call then downloads from zero and succeeds.
func TestDamagedPartialRestartsOnce(t *testing.T) {
	data, sha := artifact(testSize, 6)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		serveFile(w, r, data, `"v1"`, time.Time{})
	})
	dst := dstPath(t)
	damaged := append([]byte(nil), data...)
	damaged[100] ^= 0xff
	plantPartial(t, dst, damaged, testSize/2, s.url("/m"), sha, `"v1"`)

	res, err := FetchWithResult(t.Context(), s.url("/m"), dst, testSize, sha, opts(t, s))
	if err != nil {
		t.Fatal(err)
	}
	assertFile(t, dst, data)
	if res.Attempts != 2 || s.header(t, 2).Get("Range") != "" {
		t.Errorf("result %+v; want a second request from zero", res)
	}
}

func TestDigestMismatch(t *testing.T) {
	data, _ := artifact(testSize, 7)
	_, otherSHA := artifact(testSize, 8)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		serveFile(w, r, data, `"v1"`, time.Time{})
	})

	t.Run("fresh download", func(t *testing.T) {
		s.requests.Store(0)
		dst := dstPath(t)
		_, err := FetchWithResult(t.Context(), s.url("/m"), dst, testSize, otherSHA, opts(t, s))
		if !errors.Is(err, ErrDigestMismatch) || Retryable(err) {
			t.Fatalf("err = %v, want ErrDigestMismatch, not retryable", err)
		}
		if n := s.requests.Load(); n != 1 {
			t.Errorf("%d requests, want 1", n)
		}
		assertAbsent(t, dst, dst+".partial", dst+".partial.json")
	})

	t.Run("resumed download is tried once more from zero", func(t *testing.T) {
		s.requests.Store(0)
		dst := dstPath(t)
		plantPartial(t, dst, data, testSize/3, s.url("/m"), otherSHA, `"v1"`)
		_, err := FetchWithResult(t.Context(), s.url("/m"), dst, testSize, otherSHA, opts(t, s))
		if !errors.Is(err, ErrDigestMismatch) {
			t.Fatalf("err = %v, want ErrDigestMismatch", err)
		}
		if n := s.requests.Load(); n != 2 {
			t.Errorf("%d requests, want 2 (resume, then once from zero)", n)
		}
		assertAbsent(t, dst, dst+".partial", dst+".partial.json")
	})
}

func TestWrongSize(t *testing.T) {
	data, sha := artifact(testSize, 9)
	bigger := append(append([]byte(nil), data...), "trailing junk"...)
	cases := []struct {
		name  string
		serve handlerFunc
		want  error
	}{
		{"content-length larger", func(w http.ResponseWriter, r *http.Request, n int) {
			serveFile(w, r, bigger, "", time.Time{})
		}, ErrTooLarge},
		{"chunked body larger", func(w http.ResponseWriter, r *http.Request, n int) {
			w.Write(bigger[:testSize/2])
			http.NewResponseController(w).Flush() // forces chunked encoding
			w.Write(bigger[testSize/2:])
		}, ErrTooLarge},
		{"content-length smaller", func(w http.ResponseWriter, r *http.Request, n int) {
			serveFile(w, r, data[:testSize-1], "", time.Time{})
		}, ErrSizeMismatch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, tc.serve)
			dst := dstPath(t)
			_, err := FetchWithResult(t.Context(), s.url("/m"), dst, testSize, sha, opts(t, s))
			if !errors.Is(err, tc.want) || Retryable(err) {
				t.Fatalf("err = %v, want %v, not retryable", err, tc.want)
			}
			if n := s.requests.Load(); n != 1 {
				t.Errorf("%d requests, want 1", n)
			}
			assertAbsent(t, dst)
			if st, err := os.Stat(dst + ".partial"); err == nil && st.Size() != 0 {
				t.Errorf("partial file kept %d bytes of a wrong file", st.Size())
			}
		})
	}
}

// A server whose file is shorter than the partial answers 416; one whose
// Content-Range total differs is serving another file.
func TestRangeNotSatisfiable(t *testing.T) {
	data, sha := artifact(testSize, 10)
	cases := []struct {
		name    string
		total   int
		wantErr error
	}{
		{"same total: restart from zero", testSize, nil},
		{"other total: size mismatch", testSize / 4, ErrSizeMismatch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				if r.Header.Get("Range") != "" {
					w.Header().Set("Content-Range", "bytes */"+strconv.Itoa(tc.total))
					w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
					return
				}
				serveFile(w, r, data, `"v1"`, time.Time{})
			})
			dst := dstPath(t)
			plantPartial(t, dst, data, testSize/2, s.url("/m"), sha, `"v1"`)
			res, err := FetchWithResult(t.Context(), s.url("/m"), dst, testSize, sha, opts(t, s))
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			assertFile(t, dst, data)
			if res.Attempts != 2 || s.header(t, 2).Get("Range") != "" {
				t.Errorf("result %+v; want the second request from zero", res)
			}
		})
	}
}

func TestFatalStatusNotRetried(t *testing.T) {
	_, sha := artifact(10, 11)
	for _, code := range []int{http.StatusNotFound, http.StatusForbidden, http.StatusGone, http.StatusBadRequest} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			s := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				http.Error(w, "nope", code)
			})
			dst := dstPath(t)
			_, err := FetchWithResult(t.Context(), s.url("/models/m.tar.gz?X-Amz-Signature=secret"), dst, 10, sha, opts(t, s))
			var he *HTTPStatusError
			if !errors.Is(err, ErrHTTPStatus) || !errors.As(err, &he) || he.StatusCode != code {
				t.Fatalf("err = %v, want HTTPStatusError %d", err, code)
			}
			if Retryable(err) {
				t.Error("Retryable = true")
			}
			if n := s.requests.Load(); n != 1 {
				t.Errorf("%d requests, want 1", n)
			}
			msg := err.Error()
			if !strings.Contains(msg, strconv.Itoa(code)) || !strings.Contains(msg, "/models/m.tar.gz") || strings.Contains(msg, "secret") {
				t.Errorf("message %q: want status and path, no query", msg)
			}
		})
	}
}

func TestTransientStatusRetried(t *testing.T) {
	data, sha := artifact(1000, 12)
	for _, code := range []int{http.StatusServiceUnavailable, http.StatusInternalServerError, http.StatusBadGateway, http.StatusRequestTimeout, http.StatusTooManyRequests} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			s := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				if n == 1 {
					http.Error(w, "later", code)
					return
				}
				serveFile(w, r, data, "", time.Time{})
			})
			dst := dstPath(t)
			res, err := FetchWithResult(t.Context(), s.url("/m"), dst, int64(len(data)), sha, opts(t, s))
			if err != nil {
				t.Fatal(err)
			}
			assertFile(t, dst, data)
			if res.Attempts != 2 {
				t.Errorf("attempts = %d, want 2", res.Attempts)
			}
		})
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	data, sha := artifact(1000, 13)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		serveFile(w, r, data, "", time.Time{})
	})
	o := opts(t, s)
	o.MaxBackoff = 5 * time.Second // Retry-After is capped at MaxBackoff
	if err := Fetch(t.Context(), s.url("/m"), dstPath(t), int64(len(data)), sha, o); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	gap := s.times[1].Sub(s.times[0])
	s.mu.Unlock()
	if gap < 950*time.Millisecond {
		t.Errorf("retried after %v, want about 1s (Retry-After: 1)", gap)
	}
}

func TestMaxAttempts(t *testing.T) {
	_, sha := artifact(10, 14)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	})
	o := opts(t, s)
	o.MaxAttempts = 3
	res, err := FetchWithResult(t.Context(), s.url("/m"), dstPath(t), 10, sha, o)
	var he *HTTPStatusError
	if !errors.As(err, &he) || he.StatusCode != http.StatusServiceUnavailable || !Retryable(err) {
		t.Fatalf("err = %v, want a retryable 503", err)
	}
	if n := s.requests.Load(); n != 3 || res.Attempts != 3 {
		t.Errorf("%d requests, %d attempts; want 3", n, res.Attempts)
	}
}

// MaxStatusRetries ends a call on error answers in a row, so that the
// caller can count them; bytes of the file between them start the count
// again.
func TestMaxStatusRetries(t *testing.T) {
	data, sha := artifact(1000, 16)
	for _, tc := range []struct {
		name     string
		answers  []int // status of request n; -1 sends half the file and drops, 0 serves it
		wantErr  bool
		requests int32
	}{
		{"503 for ever", []int{503, 503, 503, 503, 503, 503}, true, 3},
		{"bytes between start the count again", []int{503, 503, -1, 503, 503, 0}, false, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				switch code := tc.answers[min(n, len(tc.answers))-1]; code {
				case 0:
					serveFile(w, r, data, `"v1"`, time.Time{})
				case -1:
					serveFile(dropAfter(w, 500), r, data, `"v1"`, time.Time{})
				default:
					http.Error(w, "down", code)
				}
			})
			o := opts(t, s)
			o.MaxStatusRetries = 2
			dst := dstPath(t)
			err := Fetch(t.Context(), s.url("/m"), dst, int64(len(data)), sha, o)
			var he *HTTPStatusError
			if tc.wantErr != (err != nil) || (err != nil && (!errors.As(err, &he) || he.StatusCode != 503 || !SourceAnswered(err))) {
				t.Fatalf("err = %v, want error %v (a 503)", err, tc.wantErr)
			}
			if n := s.requests.Load(); n != tc.requests {
				t.Errorf("%d requests, want %d", n, tc.requests)
			}
			if !tc.wantErr {
				assertFile(t, dst, data)
			}
		})
	}
}

// A connection that goes silent is abandoned after StallTimeout and the
// next attempt resumes.
func TestStall(t *testing.T) {
	data, sha := artifact(testSize, 15)
	for _, k := range []int{0, testSize / 3} {
		t.Run("after "+strconv.Itoa(k)+" bytes", func(t *testing.T) {
			var s *testServer
			s = newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				if n == 1 {
					stallAfter(s, w, r, data, k)
					return
				}
				serveFile(w, r, data, `"stall"`, time.Time{})
			})
			dst := dstPath(t)
			o := opts(t, s)
			o.StallTimeout = 200 * time.Millisecond
			start := time.Now()
			res, err := FetchWithResult(t.Context(), s.url("/m"), dst, testSize, sha, o)
			if err != nil {
				t.Fatal(err)
			}
			assertFile(t, dst, data)
			if res.Attempts != 2 || res.Downloaded != testSize {
				t.Errorf("result = %+v, want 2 attempts and each byte once", res)
			}
			if d := time.Since(start); d < 200*time.Millisecond {
				t.Errorf("finished in %v, before the stall timeout", d)
			}
			if k > 0 {
				if got := s.header(t, 2).Get("Range"); got != "bytes="+strconv.Itoa(k)+"-" {
					t.Errorf("second request Range = %q", got)
				}
			}
		})
	}
}

// Cancelling the context (truck went offline) returns promptly and keeps
// the partial file for the next call.
func TestCancelKeepsPartial(t *testing.T) {
	data, sha := artifact(testSize, 16)
	k := testSize / 2
	var s *testServer
	s = newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			stallAfter(s, w, r, data, k)
			return
		}
		serveFile(w, r, data, `"stall"`, time.Time{})
	})
	dst := dstPath(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		errc <- Fetch(ctx, s.url("/m"), dst, testSize, sha, opts(t, s))
	}()

	// Wait until the first half is on disk, then go offline.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if st, err := os.Stat(dst + ".partial"); err == nil && st.Size() == int64(k) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first half never reached the partial file")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) || Retryable(err) {
			t.Fatalf("err = %v, want context.Canceled, not retryable", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Fetch did not return after cancel")
	}
	if got := fileSize(t, dst+".partial"); got != int64(k) {
		t.Fatalf("partial file has %d bytes after cancel, want %d", got, k)
	}

	res, err := FetchWithResult(t.Context(), s.url("/m"), dst, testSize, sha, opts(t, s))
	if err != nil {
		t.Fatal(err)
	}
	assertFile(t, dst, data)
	if res.Resumed != int64(k) {
		t.Errorf("resumed %d bytes, want %d", res.Resumed, k)
	}
}

func TestAlreadyComplete(t *testing.T) {
	data, sha := artifact(testSize, 17)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		serveFile(w, r, data, "", time.Time{})
	})

	t.Run("no request", func(t *testing.T) {
		s.requests.Store(0)
		dst := dstPath(t)
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			t.Fatal(err)
		}
		// Leftovers of a crash between rename and sidecar removal.
		plantPartial(t, dst, data, 10, s.url("/m"), sha, "")
		var last [2]int64
		o := opts(t, s)
		o.Progress = func(done, total int64) { last = [2]int64{done, total} }
		res, err := FetchWithResult(t.Context(), s.url("/m"), dst, testSize, sha, o)
		if err != nil {
			t.Fatal(err)
		}
		assertFile(t, dst, data)
		if n := s.requests.Load(); n != 0 || res != (Result{}) {
			t.Errorf("%d requests, result %+v; want none", n, res)
		}
		if last != [2]int64{testSize, testSize} {
			t.Errorf("last progress %v", last)
		}
	})

	t.Run("complete partial needs no request", func(t *testing.T) {
		s.requests.Store(0)
		dst := dstPath(t)
		plantPartial(t, dst, data, testSize, s.url("/m"), sha, "")
		res, err := FetchWithResult(t.Context(), s.url("/m"), dst, testSize, sha, opts(t, s))
		if err != nil {
			t.Fatal(err)
		}
		assertFile(t, dst, data)
		if n := s.requests.Load(); n != 0 || res.Resumed != testSize {
			t.Errorf("%d requests, result %+v", n, res)
		}
	})

	t.Run("empty artifact needs no server", func(t *testing.T) {
		dst := dstPath(t)
		const emptySHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
		if err := Fetch(t.Context(), "http://127.0.0.1:1/nothing", dst, 0, emptySHA, opts(t, nil)); err != nil {
			t.Fatal(err)
		}
		assertFile(t, dst, nil)
	})

	t.Run("wrong existing file is replaced", func(t *testing.T) {
		s.requests.Store(0)
		dst := dstPath(t)
		if err := os.WriteFile(dst, make([]byte, testSize), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := Fetch(t.Context(), s.url("/m"), dst, testSize, sha, opts(t, s)); err != nil {
			t.Fatal(err)
		}
		assertFile(t, dst, data)
		if n := s.requests.Load(); n != 1 {
			t.Errorf("%d requests, want 1", n)
		}
	})
}

// A partial file whose sidecar is missing, corrupt or for another artifact
// is not trusted: the download starts from zero.
func TestUntrustedPartialRestarts(t *testing.T) {
	data, sha := artifact(testSize, 18)
	_, otherSHA := artifact(testSize, 19)
	cases := map[string]func(dst string){
		"missing":    func(dst string) { os.Remove(dst + ".partial.json") },
		"garbage":    func(dst string) { os.WriteFile(dst+".partial.json", []byte("{\"version\":1,"), 0o644) },
		"empty":      func(dst string) { os.WriteFile(dst+".partial.json", nil, 0o644) },
		"version":    func(dst string) { rewriteSidecar(dst, func(m *sidecar) { m.Version = 2 }) },
		"other sha":  func(dst string) { rewriteSidecar(dst, func(m *sidecar) { m.SHA256 = otherSHA }) },
		"other size": func(dst string) { rewriteSidecar(dst, func(m *sidecar) { m.Size = testSize + 1 }) },
		"partial too big": func(dst string) {
			os.WriteFile(dst+".partial", append(append([]byte(nil), data...), 0), 0o644)
		},
	}
	for name, spoil := range cases {
		t.Run(name, func(t *testing.T) {
			s := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				serveFile(w, r, data, `"v1"`, time.Time{})
			})
			dst := dstPath(t)
			plantPartial(t, dst, data, testSize/2, s.url("/m"), sha, `"v1"`)
			spoil(dst)
			res, err := FetchWithResult(t.Context(), s.url("/m"), dst, testSize, sha, opts(t, s))
			if err != nil {
				t.Fatal(err)
			}
			assertFile(t, dst, data)
			if res.Resumed != 0 || res.Attempts != 1 || s.header(t, 1).Get("Range") != "" {
				t.Errorf("result %+v, Range %q; want a single request from zero", res, s.header(t, 1).Get("Range"))
			}
		})
	}
}

func rewriteSidecar(dst string, change func(*sidecar)) {
	m, err := readSidecar(dst + ".partial.json")
	if err != nil {
		panic(err)
	}
	change(&m)
	// Written raw: writeSidecar is for valid state only.
	b := []byte(`{"version":` + strconv.Itoa(m.Version) + `,"url":"` + m.URL + `","size":` +
		strconv.FormatInt(m.Size, 10) + `,"sha256":"` + m.SHA256 + `","etag":"\"v1\""}`)
	if err := os.WriteFile(dst+".partial.json", b, 0o644); err != nil {
		panic(err)
	}
}

func TestBusy(t *testing.T) {
	data, sha := artifact(testSize, 20)
	started := make(chan struct{}, 1)
	var s *testServer
	s = newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		started <- struct{}{}
		stallAfter(s, w, r, data, 0)
	})
	dst := dstPath(t)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- Fetch(ctx, s.url("/m"), dst, testSize, sha, opts(t, s)) }()
	<-started
	if err := Fetch(t.Context(), s.url("/m"), dst, testSize, sha, opts(t, s)); !errors.Is(err, ErrBusy) {
		t.Errorf("concurrent Fetch: err = %v, want ErrBusy", err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("first Fetch: %v", err)
	}
}

func TestInvalidArguments(t *testing.T) {
	_, sha := artifact(10, 21)
	cases := []struct {
		name, url, sha string
		size           int64
	}{
		{"negative size", "http://127.0.0.1:1/m", sha, -1},
		{"short sha", "http://127.0.0.1:1/m", sha[:60], 10},
		{"non-hex sha", "http://127.0.0.1:1/m", strings.Repeat("g", 64), 10},
		{"ftp", "ftp://127.0.0.1/m?sig=secret", sha, 10},
		{"relative", "/m?sig=secret", sha, 10},
		{"malformed", "http://[::1/m?sig=secret", sha, 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := FetchWithResult(t.Context(), tc.url, dstPath(t), tc.size, tc.sha, opts(t, nil))
			if err == nil || Retryable(err) || res.Attempts != 0 {
				t.Fatalf("err = %v, attempts %d; want a non-retryable error and no request", err, res.Attempts)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error leaks the query: %v", err)
			}
		})
	}
	// Upper-case hex is accepted.
	data, lower := artifact(10, 22)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) { serveFile(w, r, data, "", time.Time{}) })
	if err := Fetch(t.Context(), s.url("/m"), dstPath(t), 10, strings.ToUpper(lower), opts(t, s)); err != nil {
		t.Fatalf("upper-case sha256: %v", err)
	}
}
