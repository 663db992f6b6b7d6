package download

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseContentRange(t *testing.T) {
	cases := []struct {
		in                 string
		first, last, total int64
		ok                 bool
	}{
		{"bytes 0-499/1234", 0, 499, 1234, true},
		{"bytes 500-1233/1234", 500, 1233, 1234, true},
		{"bytes 500-1233/*", 500, 1233, -1, true},
		{"bytes */1234", -1, -1, 1234, true},
		{"bytes */*", -1, -1, -1, false},
		{"bytes 500-1234/1234", -1, -1, -1, false}, // last beyond total
		{"bytes 5-4/10", -1, -1, -1, false},
		{"bytes -1-4/10", -1, -1, -1, false},
		{"bytes +1-4/10", -1, -1, -1, false},
		{"bytes 1-4/-10", -1, -1, -1, false},
		{"items 0-4/10", -1, -1, -1, false},
		{"bytes 0-4", -1, -1, -1, false},
		{"bytes 0-99999999999999999999/10", -1, -1, -1, false},
		{"", -1, -1, -1, false},
	}
	for _, tc := range cases {
		f, l, tot, ok := parseContentRange(tc.in)
		if f != tc.first || l != tc.last || tot != tc.total || ok != tc.ok {
			t.Errorf("parseContentRange(%q) = %d, %d, %d, %v; want %d, %d, %d, %v",
				tc.in, f, l, tot, ok, tc.first, tc.last, tc.total, tc.ok)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"1", time.Second},
		{"120", 2 * time.Minute},
		{"0", 0},
		{"-5", 0},
		{"soon", 0},
		{"99999999999999999999", 0},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
	}
	for _, tc := range cases {
		if got := parseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestRetryable(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"503", &HTTPStatusError{StatusCode: 503}, true},
		{"429 wrapped", fmt.Errorf("x: %w", &HTTPStatusError{StatusCode: 429}), true},
		{"408", &HTTPStatusError{StatusCode: 408}, true},
		{"404", &HTTPStatusError{StatusCode: 404}, false},
		{"416", &HTTPStatusError{StatusCode: 416}, false},
		{"connection", transient(io.ErrUnexpectedEOF), true},
		{"stall", fmt.Errorf("a: %w", transient(ErrStalled)), true},
		{"digest", fmt.Errorf("a: %w", ErrDigestMismatch), false},
		{"size", ErrSizeMismatch, false},
		{"too large", ErrTooLarge, false},
		{"canceled", fmt.Errorf("a: %w", context.Canceled), false},
		{"deadline", context.DeadlineExceeded, false},
		{"disk", &os.PathError{Op: "write", Path: "x", Err: errors.New("no space left on device")}, false},
	}
	for _, tc := range cases {
		if got := Retryable(tc.err); got != tc.want {
			t.Errorf("%s: Retryable(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

func TestSourceAnswered(t *testing.T) {
	dial := &url.Error{Op: "Get", URL: "http://x/y", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"403", fmt.Errorf("x: %w", &HTTPStatusError{StatusCode: 403}), true},
		{"503 after retries", fmt.Errorf("giving up: %w", &HTTPStatusError{StatusCode: 503}), true},
		{"digest", fmt.Errorf("a: %w", ErrDigestMismatch), true},
		{"size", ErrSizeMismatch, true},
		{"too large", ErrTooLarge, true},
		{"redirect refused at the dial", &url.Error{Op: "Get", URL: "http://x/y", Err: &net.OpError{Op: "dial", Err: fmt.Errorf("%w: 127.0.0.1", ErrRedirect)}}, true},
		{"dial refused", transient(dial), false},
		{"connection cut", transient(io.ErrUnexpectedEOF), false},
		{"stall", transient(ErrStalled), false},
		{"canceled", fmt.Errorf("a: %w", context.Canceled), false},
	}
	for _, tc := range cases {
		if got := SourceAnswered(tc.err); got != tc.want {
			t.Errorf("%s: SourceAnswered(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

func TestHTTPStatusErrorMessage(t *testing.T) {
	e := &HTTPStatusError{StatusCode: 404, URL: "https://h/m"}
	if got := e.Error(); got != "GET https://h/m: 404 Not Found" {
		t.Errorf("Error() = %q", got)
	}
	if !errors.Is(e, ErrHTTPStatus) {
		t.Error("errors.Is(e, ErrHTTPStatus) = false")
	}
}

func TestRedact(t *testing.T) {
	u, _ := url.Parse("https://user:pw@bucket.s3.example/models/m.tar.gz?X-Amz-Signature=secret#frag")
	got := redact(u)
	if got != "https://bucket.s3.example/models/m.tar.gz" {
		t.Errorf("redact = %q", got)
	}
	if !strings.Contains(u.String(), "secret") {
		t.Error("redact modified its argument")
	}
}
