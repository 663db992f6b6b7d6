package download

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/linkedge/linkedge/internal/backoff"
)

// errRestart says the attempt discarded the partial file and the next
// request (from zero, without Range) should go out at once.
var errRestart = errors.New("starting over from zero")

// download sends requests until the partial file holds size bytes, with
// backoff between failed attempts.
func (fe *fetcher) download() error {
	bo := backoff.Backoff{Min: fe.opt.MinBackoff, Max: fe.opt.MaxBackoff}
	answers := 0 // error answers in a row, for MaxStatusRetries
	for fe.off < fe.size {
		if err := fe.ctx.Err(); err != nil {
			return fe.interrupted(err)
		}
		before := fe.res.Downloaded
		fe.res.Attempts++
		err := fe.attempt()
		if err == nil {
			continue
		}
		if ctxErr := fe.ctx.Err(); ctxErr != nil && (Retryable(err) || errors.Is(err, ctxErr)) {
			return fe.interrupted(ctxErr)
		}
		if !Retryable(err) {
			return err
		}
		if fe.opt.MaxAttempts > 0 && fe.res.Attempts >= fe.opt.MaxAttempts {
			return fmt.Errorf("giving up after %d attempts with %d of %d bytes: %w",
				fe.res.Attempts, fe.off, fe.size, err)
		}
		if fe.res.Downloaded > before {
			bo.Reset()
			answers = 0
		}
		if errors.Is(err, ErrHTTPStatus) {
			answers++
			if fe.opt.MaxStatusRetries > 0 && answers > fe.opt.MaxStatusRetries {
				return fmt.Errorf("giving up after %d error answers in a row with %d of %d bytes: %w",
					answers, fe.off, fe.size, err)
			}
		}
		var delay time.Duration
		if !errors.Is(err, errRestart) {
			delay = max(bo.Next(), min(retryAfter(err), fe.opt.MaxBackoff))
		}
		fe.log.Warn("download attempt failed; will retry", "attempt", fe.res.Attempts,
			"have", fe.off, "size", fe.size, "retry_in", delay, "err", err)
		if err := sleep(fe.ctx, delay); err != nil {
			return fe.interrupted(err)
		}
	}
	return nil
}

func (fe *fetcher) interrupted(err error) error {
	return fmt.Errorf("stopped with %d of %d bytes kept for the next call: %w", fe.off, fe.size, err)
}

// attempt sends one request and copies its body into the partial file. It
// returns nil once the partial file holds all size bytes.
func (fe *fetcher) attempt() error {
	ctx, cancel := context.WithCancelCause(withBinding(fe.ctx))
	defer cancel(nil)
	// Armed before the request, so a server that accepts the connection
	// and never answers counts as a stall too.
	stall := time.AfterFunc(fe.opt.StallTimeout, func() { cancel(ErrStalled) })
	defer stall.Stop()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fe.url, nil)
	if err != nil {
		return errors.New("cannot build request") // the URL was parsed already; do not echo it
	}
	// Offsets must count bytes of the file itself, not of a compressed
	// stream (net/http would otherwise ask for gzip and decode it).
	req.Header.Set("Accept-Encoding", "identity")
	from := fe.off
	if from > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(from, 10)+"-")
		if v := fe.meta.ifRange(); v != "" {
			req.Header.Set("If-Range", v)
		}
	}
	resp, err := fe.opt.Client.Do(req)
	if err != nil {
		return fe.ioErr(ctx, err)
	}
	defer resp.Body.Close()

	switch resp.StatusCode {
	case http.StatusOK:
		err = fe.startOver(resp)
	case http.StatusPartialContent:
		err = fe.continueAt(resp, from)
	case http.StatusRequestedRangeNotSatisfiable:
		err = fe.rangeRefused(resp)
	default:
		err = fe.statusErr(resp)
	}
	if err != nil {
		return err
	}
	return fe.copyBody(ctx, &stallReader{r: resp.Body, timer: stall, d: fe.opt.StallTimeout})
}

// startOver handles 200: the body is the whole file.
func (fe *fetcher) startOver(resp *http.Response) error {
	// Checked before anything is discarded: a server announcing another
	// size serves another file, and the partial may still be good for a
	// mirror that serves the right one.
	if cl := resp.ContentLength; cl > fe.size {
		return fmt.Errorf("%w: server announces %d bytes, want %d", ErrTooLarge, cl, fe.size)
	} else if cl >= 0 && cl < fe.size {
		return fmt.Errorf("%w: server announces %d bytes, want %d", ErrSizeMismatch, cl, fe.size)
	}
	if fe.off > 0 {
		fe.log.Info("server sent the whole file (Range ignored or file changed); starting over", "discarded", fe.off)
		if err := fe.truncate(); err != nil {
			return err
		}
	}
	// Truncate first, then the new sidecar: a crash in between leaves an
	// empty partial, never old bytes under new validators.
	fe.meta = sidecar{
		Version:      sidecarVersion,
		URL:          fe.safeURL,
		Size:         fe.size,
		SHA256:       fe.wantHex,
		ETag:         validatorFrom(resp.Header.Get("ETag")),
		LastModified: validatorFrom(resp.Header.Get("Last-Modified")),
	}
	return writeSidecar(fe.metaPath, fe.meta)
}

// continueAt handles 206: the body should continue the partial file at from.
func (fe *fetcher) continueAt(resp *http.Response, from int64) error {
	if from == 0 {
		return fe.statusErr(resp) // 206 to a request without Range: a broken server
	}
	start, end, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
	switch {
	case ok && total >= 0 && total != fe.size:
		return fmt.Errorf("%w: server has %d bytes, want %d", ErrSizeMismatch, total, fe.size)
	case !ok || start < 0:
		return fe.restart("206 without a usable Content-Range")
	case start != from || end >= fe.size:
		return fe.restart(fmt.Sprintf("asked for bytes %d-, got %d-%d", from, start, end))
	}
	// Some servers honour Range but ignore If-Range; a changed ETag gives
	// the change away.
	if et := resp.Header.Get("ETag"); fe.meta.ETag != "" && et != "" && et != fe.meta.ETag {
		return fe.restart("file changed on the server (ETag differs) but it sent a range anyway")
	}
	fe.joined = true
	return nil
}

// rangeRefused handles 416: the partial file does not fit the server's file.
func (fe *fetcher) rangeRefused(resp *http.Response) error {
	if fe.off == 0 {
		return fe.statusErr(resp) // no Range was sent
	}
	if _, _, total, ok := parseContentRange(resp.Header.Get("Content-Range")); ok && total >= 0 && total != fe.size {
		return fmt.Errorf("%w: server has %d bytes, want %d", ErrSizeMismatch, total, fe.size)
	}
	return fe.restart("server refused to resume at byte " + strconv.FormatInt(fe.off, 10))
}

// restart discards the partial file and asks for an immediate new attempt.
func (fe *fetcher) restart(reason string) error {
	fe.log.Info("discarding partial file", "bytes", fe.off, "reason", reason)
	if err := fe.truncate(); err != nil {
		return err
	}
	return transient(fmt.Errorf("%w: %s", errRestart, reason))
}

func (fe *fetcher) statusErr(resp *http.Response) error {
	// A little draining lets net/http reuse the connection for the retry.
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	return &HTTPStatusError{
		StatusCode: resp.StatusCode,
		Status:     resp.Status,
		URL:        fe.safeURL,
		RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
	}
}

// copyBody appends the body to the partial file, never beyond size.
func (fe *fetcher) copyBody(ctx context.Context, body io.Reader) error {
	if fe.buf == nil {
		fe.buf = make([]byte, 32<<10)
	}
	for fe.off < fe.size {
		n := int(min(int64(len(fe.buf)), fe.size-fe.off))
		m, err := body.Read(fe.buf[:n])
		if m > 0 {
			if _, werr := fe.f.Write(fe.buf[:m]); werr != nil {
				return fmt.Errorf("write partial file: %w", werr)
			}
			fe.h.Write(fe.buf[:m])
			fe.off += int64(m)
			fe.res.Downloaded += int64(m)
			fe.prog.report(fe.off, fe.size, false)
		}
		if err != nil && fe.off == fe.size {
			return nil // the body ended (or broke) right after the last byte
		}
		if errors.Is(err, io.EOF) {
			return transient(fmt.Errorf("connection closed after %d of %d bytes: %w", fe.off, fe.size, io.ErrUnexpectedEOF))
		}
		if err != nil {
			return fe.ioErr(ctx, err)
		}
	}
	// All expected bytes are here. One byte more means the server's file
	// is not the announced one: read it (and no more) to find out. Any
	// error instead of a byte is fine, the file is complete.
	var probe [1]byte
	if n, _ := io.ReadAtLeast(body, probe[:], 1); n > 0 {
		fe.discard()
		return fmt.Errorf("%w: server sent more than %d bytes", ErrTooLarge, fe.size)
	}
	return nil
}

// ioErr classifies an error of Do or of a body read.
func (fe *fetcher) ioErr(attemptCtx context.Context, err error) error {
	if ctxErr := fe.ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	if errors.Is(context.Cause(attemptCtx), ErrStalled) {
		// An HTTP/2 connection stays pooled after its stream is reset;
		// make sure the next attempt does not reuse a dead one.
		fe.opt.Client.CloseIdleConnections()
		return transient(fmt.Errorf("%w for %s", ErrStalled, fe.opt.StallTimeout))
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = fe.safeURL // the original carries the presigned query
	}
	if errors.Is(err, ErrRedirect) {
		return err // a policy refusal: asking again gets the same answer
	}
	return transient(err)
}

// parseContentRange parses "bytes first-last/total", "bytes first-last/*"
// and "bytes */total". Unknown parts are -1.
func parseContentRange(v string) (first, last, total int64, ok bool) {
	rest, found := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !found {
		return -1, -1, -1, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return -1, -1, -1, false
	}
	total = -1
	if tot != "*" {
		t, ok := parseNonNegative(tot)
		if !ok {
			return -1, -1, -1, false
		}
		total = t
	}
	if rng == "*" {
		return -1, -1, total, total >= 0
	}
	a, b, found := strings.Cut(rng, "-")
	first, ok1 := parseNonNegative(a)
	last, ok2 := parseNonNegative(b)
	if !found || !ok1 || !ok2 || last < first || (total >= 0 && last >= total) {
		return -1, -1, -1, false
	}
	return first, last, total, true
}

func parseNonNegative(s string) (int64, bool) {
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n >= 0
}
