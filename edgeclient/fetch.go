package edgeclient

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net/http"
	"net/url"

	"github.com/linkedge/linkedge/edgeclient/update"
	"github.com/linkedge/linkedge/internal/download"
)

// fetchArtifact downloads a release's bundle with resume and verification.
// It retries transient failures for as long as ctx lives; the agent ends ctx
// when the truck goes offline, and the partial file waits for the next link.
func fetchArtifact(log *slog.Logger, proxy string, tlsCfg *tls.Config) update.FetchFunc {
	var client *http.Client
	if proxy != "" || tlsCfg != nil {
		var u *url.URL
		if proxy != "" {
			u, _ = url.Parse(proxy) // checked by Config.Validate
		}
		client = download.NewClient(u, tlsCfg)
	}
	return func(ctx context.Context, t update.Target, dst string, progress func(done, total int64)) error {
		return download.Fetch(ctx, t.Artifact.URL, dst, t.Artifact.Size, t.Artifact.SHA256,
			download.Options{Client: client, Progress: progress, Logger: log.With("part", "download", "version", t.Version)})
	}
}

// permanentFetchError reports download errors that retrying cannot fix: a
// digest or size mismatch, a 404. The update fails and the artifact is
// remembered as bad.
func permanentFetchError(err error) bool {
	if errors.Is(err, download.ErrDigestMismatch) || errors.Is(err, download.ErrSizeMismatch) || errors.Is(err, download.ErrTooLarge) {
		return true
	}
	return errors.Is(err, download.ErrHTTPStatus) && !download.Retryable(err) && !deferredFetchError(err)
}

// deferredFetchError reports a 401 or 403: nothing against the artifact, but
// a presigned URL that expired (or a truck clock that is off). The publisher
// re-signs the release with a fresh URL for the same bytes before the old
// one expires, so the update waits for that release, without counting an
// attempt against the artifact.
func deferredFetchError(err error) bool {
	var he *download.HTTPStatusError
	return errors.As(err, &he) && (he.StatusCode == 401 || he.StatusCode == 403)
}
