package download

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Sentinel errors; test with errors.Is. The first three condemn the artifact
// as announced (or the server serving it): asking again will not help.
var (
	// ErrDigestMismatch: the downloaded bytes do not have the announced
	// SHA-256. The partial file has been deleted.
	ErrDigestMismatch = errors.New("sha256 mismatch")
	// ErrSizeMismatch: the server announced (Content-Length, Content-Range)
	// a file of another size than the one expected.
	ErrSizeMismatch = errors.New("size mismatch")
	// ErrTooLarge: the server sent more bytes than the announced size.
	ErrTooLarge = errors.New("response larger than announced size")
	// ErrHTTPStatus: the server answered with an unexpected status. The
	// error is an [*HTTPStatusError]; use errors.As for the code.
	ErrHTTPStatus = errors.New("unexpected http status")
	// ErrStalled: no byte arrived for [Options.StallTimeout]. Retried.
	ErrStalled = errors.New("stalled: no data received")
	// ErrBusy: another Fetch in this process is writing the same dst.
	ErrBusy = errors.New("another download to the same file is in progress")
	// ErrRedirect: the server redirected the download somewhere it may not
	// go (the truck's own networks, checked when the redirect arrives and
	// again at the connection), or too many times.
	ErrRedirect = errors.New("redirect refused")
)

// SourceAnswered reports whether err says that the artifact source
// answered, and badly: an HTTP error status, a size or SHA-256 other than
// the announced one, a redirect refused. Asking the same URL again is then
// likely to get the same answer, and a caller may count it against the
// URL. Connection errors, stalls and cancellations say nothing about the
// source (the truck's own link may be down) and are false.
func SourceAnswered(err error) bool {
	return errors.Is(err, ErrHTTPStatus) || errors.Is(err, ErrDigestMismatch) || errors.Is(err, ErrSizeMismatch) ||
		errors.Is(err, ErrTooLarge) || errors.Is(err, ErrRedirect)
}

// HTTPStatusError reports a response status Fetch cannot use. It matches
// [ErrHTTPStatus] with errors.Is.
type HTTPStatusError struct {
	StatusCode int
	Status     string // as sent, e.g. "404 Not Found"
	// URL without query string or credentials: presigned URLs carry their
	// signature in the query, and error messages end up in logs.
	URL string
	// RetryAfter is the server's Retry-After (429, 503), 0 if absent.
	RetryAfter time.Duration
}

func (e *HTTPStatusError) Error() string {
	status := e.Status
	if status == "" {
		status = strconv.Itoa(e.StatusCode) + " " + http.StatusText(e.StatusCode)
	}
	return fmt.Sprintf("GET %s: %s", e.URL, status)
}

// Is makes errors.Is(err, ErrHTTPStatus) true.
func (e *HTTPStatusError) Is(target error) bool { return target == ErrHTTPStatus }

// Retryable reports whether a later request may get a better answer: 408,
// 429 and every 5xx.
func (e *HTTPStatusError) Retryable() bool {
	return e.StatusCode == http.StatusRequestTimeout ||
		e.StatusCode == http.StatusTooManyRequests ||
		e.StatusCode >= 500 && e.StatusCode <= 599
}

// transientError marks an error the retry loop may retry: the network or
// the server had a bad moment, nothing is known to be wrong with the
// artifact or the local disk.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

func transient(err error) error { return &transientError{err} }

// Retryable reports whether err is transient: a connection error, a stall,
// a short body, or a 408/429/5xx status. Fetch already retries these itself
// until MaxAttempts or the context stops it, so a caller sees a retryable
// error only in those cases, and may simply call Fetch again later (the
// partial file is kept).
//
// Retryable is false for nil, for context cancellation (the caller decided
// to stop; check ctx.Err() first), for local file system errors (disk full,
// permissions), and for [ErrDigestMismatch], [ErrSizeMismatch],
// [ErrTooLarge] and non-retryable [ErrHTTPStatus]. Only those last four say
// the artifact or its URL is bad; a local error does not.
//
// (A caller's cancellation is never marked transient, so a loop such as
// "for Retryable(err)" cannot spin on a dead context.)
func Retryable(err error) bool {
	var he *HTTPStatusError
	if errors.As(err, &he) {
		return he.Retryable()
	}
	var te *transientError
	return errors.As(err, &te)
}

// redact returns rawURL without query, fragment and user info, for logs and
// error messages.
func redact(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = ""
	c.ForceQuery = false
	c.Fragment = ""
	c.RawFragment = ""
	return c.String()
}

// retryAfter returns the Retry-After carried by err, if any.
func retryAfter(err error) time.Duration {
	var he *HTTPStatusError
	if errors.As(err, &he) {
		return he.RetryAfter
	}
	return 0
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP-date.
// Anything unparsable or in the past counts as absent.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		const maxSecs = int64(24 * time.Hour / time.Second) // avoids overflow; capped later anyway
		return time.Duration(min(secs, maxSecs)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
