package download

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/linkedge/linkedge/internal/atomicfile"
)

// Result says what one call did; the demo shows "resumed at 40%" from it.
type Result struct {
	// Resumed is how many bytes of the final file were already on disk
	// from an earlier call; 0 if there were none or they were discarded.
	Resumed int64
	// Downloaded is how many body bytes this call received and wrote,
	// including any a restart later discarded.
	Downloaded int64
	// Attempts is the number of HTTP requests this call sent.
	Attempts int
}

// Fetch downloads rawURL into dst and makes sure the result has exactly
// size bytes and the SHA-256 sha256hex (hex, case-insensitive). See the
// package documentation for the guarantees, and [FetchWithResult].
func Fetch(ctx context.Context, rawURL, dst string, size int64, sha256hex string, opt Options) error {
	_, err := FetchWithResult(ctx, rawURL, dst, size, sha256hex, opt)
	return err
}

// FetchWithResult is [Fetch], also reporting what the call did, on success
// and on failure.
//
// If dst already has the right size and digest it returns at once, without
// a request. Otherwise bytes go to dst+".partial", whose owner is recorded
// in dst+".partial.json"; a partial left by an earlier call or process is
// re-hashed and resumed. The response decides what happens to it:
//
//   - 206 Partial Content: append.
//   - 200 OK (the server ignores Range, or If-Range did not match because
//     the file changed): discard the partial and start from zero.
//   - 416 Range Not Satisfiable: the partial does not fit the server's file;
//     discard it and start from zero.
//   - 408, 429, 5xx: retry after a backoff (at least Retry-After).
//   - any other status: fail with an [*HTTPStatusError], not retried.
//
// Connection errors, short bodies and stalls are retried too, each attempt
// resuming where the last stopped, until Options.MaxAttempts or ctx stops
// it. When ctx is done Fetch returns an error wrapping ctx.Err() and keeps
// the partial file. A verified file is fsynced and renamed to dst (and the
// directory fsynced), so dst never holds anything but the announced
// artifact.
func FetchWithResult(ctx context.Context, rawURL, dst string, size int64, sha256hex string, opt Options) (Result, error) {
	u, want, err := checkArgs(rawURL, size, sha256hex)
	if err != nil {
		return Result{}, fmt.Errorf("download to %s: %w", dst, err)
	}
	release, err := claim(dst)
	if err != nil {
		return Result{}, fmt.Errorf("download to %s: %w", dst, err)
	}
	defer release()

	opt = opt.withDefaults()
	safe := redact(u)
	fe := &fetcher{
		ctx:      ctx,
		url:      u.String(),
		safeURL:  safe,
		dst:      dst,
		partPath: dst + ".partial",
		metaPath: dst + ".partial.json",
		size:     size,
		want:     want,
		wantHex:  hex.EncodeToString(want),
		opt:      opt,
		log:      opt.Logger.With("url", safe, "dst", dst),
		h:        sha256.New(),
		prog:     progress{fn: opt.Progress},
	}
	res, err := fe.run()
	if err != nil {
		return res, fmt.Errorf("download to %s: %w", dst, err)
	}
	return res, nil
}

func checkArgs(rawURL string, size int64, sha256hex string) (*url.URL, []byte, error) {
	if size < 0 {
		return nil, nil, fmt.Errorf("negative size %d", size)
	}
	sha := strings.ToLower(sha256hex)
	if !validSHA256(sha) {
		return nil, nil, fmt.Errorf("sha256 %q is not 64 hex digits", sha256hex)
	}
	want, _ := hex.DecodeString(sha)
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse quotes the whole URL, query included; do not repeat it.
		return nil, nil, errors.New("malformed url")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, nil, fmt.Errorf("url %s: want an absolute http or https url", redact(u))
	}
	return u, want, nil
}

// active holds the dst paths being written by this process.
var active sync.Map

func claim(dst string) (release func(), err error) {
	key := dst
	if abs, err := filepath.Abs(dst); err == nil {
		key = abs
	}
	if _, busy := active.LoadOrStore(key, struct{}{}); busy {
		return nil, ErrBusy
	}
	return func() { active.Delete(key) }, nil
}

// fetcher is the state of one call. It is used by one goroutine only.
type fetcher struct {
	ctx                     context.Context
	url, safeURL            string
	dst, partPath, metaPath string
	size                    int64
	want                    []byte
	wantHex                 string
	opt                     Options
	log                     *slog.Logger
	prog                    progress
	res                     Result
	buf                     []byte

	f    *os.File  // the partial file, positioned at off
	h    hash.Hash // SHA-256 of the first off bytes of f
	off  int64
	meta sidecar // describes the entity the bytes in f belong to
	// joined is set when the bytes in f came from more than one response
	// (or an earlier call): a digest mismatch may then be a bad splice.
	joined bool
}

func (fe *fetcher) run() (Result, error) {
	if done, err := fe.alreadyThere(); done || err != nil {
		return fe.res, err
	}
	if err := fe.openPartial(); err != nil {
		return fe.res, err
	}
	defer fe.closePartial()
	fe.prog.report(fe.off, fe.size, true)
	defer func() { fe.prog.report(fe.off, fe.size, true) }()

	restarted := false
	for {
		if err := fe.download(); err != nil {
			return fe.res, err
		}
		err := fe.finish()
		if errors.Is(err, ErrDigestMismatch) && fe.joined && !restarted {
			restarted = true
			fe.log.Warn("digest mismatch on a resumed download; downloading once more from zero", "err", err)
			if err := fe.truncate(); err != nil {
				return fe.res, err
			}
			continue
		}
		if errors.Is(err, ErrDigestMismatch) {
			fe.discard()
		}
		return fe.res, err
	}
}

// alreadyThere reports whether dst is already the verified artifact, and
// then removes leftovers of the download that produced it.
func (fe *fetcher) alreadyThere() (bool, error) {
	st, err := os.Stat(fe.dst)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("inspect %s: %w", fe.dst, err)
	case !st.Mode().IsRegular():
		return false, fmt.Errorf("%s exists and is not a regular file", fe.dst)
	case st.Size() != fe.size:
		fe.log.Warn("existing file has the wrong size; downloading again", "have", st.Size(), "want", fe.size)
		return false, nil
	}
	f, err := os.Open(fe.dst)
	if err != nil {
		return false, fmt.Errorf("open %s: %w", fe.dst, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, fmt.Errorf("hash %s: %w", fe.dst, err)
	}
	if !bytes.Equal(h.Sum(nil), fe.want) {
		fe.log.Warn("existing file has the wrong sha256; downloading again")
		return false, nil
	}
	for _, p := range []string{fe.partPath, fe.metaPath} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			fe.log.Warn("cannot remove leftover of an earlier download", "path", p, "err", err)
		}
	}
	fe.prog.report(fe.size, fe.size, true)
	return true, nil
}

// openPartial opens (or creates) the partial file and decides whether its
// bytes can be resumed: only if the sidecar is valid and describes this
// artifact. Otherwise they are discarded; the sidecar is rewritten before
// the first new byte lands.
func (fe *fetcher) openPartial() error {
	meta, metaErr := readSidecar(fe.metaPath)
	f, err := os.OpenFile(fe.partPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open partial file: %w", err)
	}
	fe.f = f
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("inspect partial file: %w", err)
	}
	n := st.Size()
	var reason string
	switch {
	case n == 0:
	case errors.Is(metaErr, fs.ErrNotExist):
		reason = "no resume state next to it"
	case metaErr != nil:
		reason = "resume state unusable: " + metaErr.Error()
	case meta.Size != fe.size || meta.SHA256 != fe.wantHex:
		reason = "resume state belongs to another artifact"
	case n > fe.size:
		reason = "partial file is larger than the artifact"
	}
	if metaErr != nil || reason != "" {
		meta = sidecar{}
	}
	fe.meta = meta
	if reason != "" {
		fe.log.Info("discarding partial file", "bytes", n, "reason", reason)
		return fe.truncate()
	}
	if n == 0 {
		return nil
	}
	if meta.URL != fe.safeURL {
		// A mirror or another path: its validators mean nothing here.
		// Resume blind; the digest check and the restart-once rule
		// catch a file that differs.
		fe.log.Info("partial file came from another url; resuming without If-Range", "from", meta.URL)
		fe.meta.ETag, fe.meta.LastModified = "", ""
	}
	if _, err := io.CopyN(fe.h, f, n); err != nil {
		return fmt.Errorf("re-hash partial file: %w", err)
	}
	fe.off, fe.res.Resumed, fe.joined = n, n, true
	fe.log.Info("resuming download", "have", n, "size", fe.size, "percent", 100*n/max(fe.size, 1))
	return nil
}

// truncate discards the partial file's bytes.
func (fe *fetcher) truncate() error {
	if err := fe.f.Truncate(0); err != nil {
		return fmt.Errorf("truncate partial file: %w", err)
	}
	if _, err := fe.f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("rewind partial file: %w", err)
	}
	fe.h.Reset()
	fe.off, fe.res.Resumed, fe.joined = 0, 0, false
	return nil
}

// finish verifies the complete partial file and moves it to dst.
func (fe *fetcher) finish() error {
	if got := fe.h.Sum(nil); !bytes.Equal(got, fe.want) {
		return fmt.Errorf("%w: %s has sha256 %x, want %s", ErrDigestMismatch, fe.safeURL, got, fe.wantHex)
	}
	if err := fe.f.Sync(); err != nil {
		return fmt.Errorf("fsync partial file: %w", err)
	}
	err := fe.f.Close()
	fe.f = nil
	if err != nil {
		return fmt.Errorf("close partial file: %w", err)
	}
	if err := os.Rename(fe.partPath, fe.dst); err != nil {
		return fmt.Errorf("move verified file into place: %w", err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(fe.dst)); err != nil {
		return fmt.Errorf("%s is in place but fsync of its directory failed, so it may not survive a crash: %w", fe.dst, err)
	}
	// After the rename: a crash in between leaves a stale sidecar, which
	// the next call removes, rather than a complete partial without one,
	// which it would download again.
	if err := os.Remove(fe.metaPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		fe.log.Warn("cannot remove resume state", "err", err)
	}
	fe.log.Info("download complete", "size", fe.size, "resumed", fe.res.Resumed,
		"downloaded", fe.res.Downloaded, "attempts", fe.res.Attempts)
	return nil
}

// closePartial closes the partial file if still open, after an fsync so
// that what was received survives a power loss for the next call.
func (fe *fetcher) closePartial() {
	if fe.f == nil {
		return
	}
	if err := fe.f.Sync(); err != nil {
		fe.log.Warn("fsync partial file", "err", err)
	}
	if err := fe.f.Close(); err != nil {
		fe.log.Warn("close partial file", "err", err)
	}
	fe.f = nil
}

// discard deletes the partial file and its sidecar: the bytes are known to
// be wrong, and a later call must not resume them.
func (fe *fetcher) discard() {
	if fe.f != nil {
		_ = fe.f.Close() // being deleted; nothing to keep
		fe.f = nil
	}
	for _, p := range []string{fe.partPath, fe.metaPath} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			fe.log.Warn("cannot remove rejected download", "path", p, "err", err)
		}
	}
}
