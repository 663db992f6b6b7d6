package edgeclient

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net/url"

	"github.com/linkedge/linkedge/edgeclient/update"
	"github.com/linkedge/linkedge/internal/download"
)

// statusRetries is how many 408, 429 or 5xx answers in a row one download
// call retries (seconds of the client's backoff, or the server's
// Retry-After) before it returns the answer, so that the update machine
// counts a source that answers so for ever (Machine.MaxURLFailures).
const statusRetries = 3

// fetchArtifact downloads a release's bundle with resume and verification.
// It retries connection failures and stalls for as long as ctx lives (error
// answers statusRetries times); the agent ends ctx when the truck goes
// offline, and the partial file waits for the next link.
func fetchArtifact(log *slog.Logger, proxy string, tlsCfg *tls.Config) update.FetchFunc {
	var u *url.URL
	if proxy != "" {
		u, _ = url.Parse(proxy) // checked by Config.Validate
	}
	client := download.NewClient(u, tlsCfg)
	return func(ctx context.Context, t update.Target, dst string, progress func(done, total int64)) error {
		// An idle connection kept for reuse costs keepalive traffic and a
		// server's FIN later; the next download is hours or weeks away.
		defer client.CloseIdleConnections()
		return download.Fetch(ctx, t.Artifact.URL, dst, t.Artifact.Size, t.Artifact.SHA256,
			download.Options{Client: client, Progress: progress, MaxStatusRetries: statusRetries,
				Logger: log.With("part", "download", "version", t.Version)})
	}
}
