// Package download fetches one large file over HTTP in a way that survives
// how trucks are connected: online now and then over cellular, with links
// that drop, hang silently, or vanish when the engine is switched off.
//
// # Guarantees
//
//   - Resumable. Bytes land in dst+".partial"; a sidecar dst+".partial.json"
//     remembers which entity they belong to (URL without query, ETag,
//     Last-Modified, expected size and SHA-256). A later call, even in a new
//     process after a power loss, re-hashes what is there and asks only for
//     the rest with "Range: bytes=N-" and "If-Range", so a file that changed
//     on the server restarts from zero instead of being spliced onto old
//     bytes.
//   - Bounded. Never more than the announced size is written, and a server
//     that sends more fails with [ErrTooLarge] rather than filling the disk.
//   - Verified. dst only ever appears, by an fsynced rename, with exactly the
//     announced size and SHA-256. A wrong digest is reported as
//     [ErrDigestMismatch] and the bytes are deleted.
//   - Patient but not stuck. Connection errors, 5xx, 408, 429 and stalls
//     (no byte for [Options.StallTimeout]) are retried with jittered
//     backoff, each attempt resuming where the last stopped (error answers
//     at most [Options.MaxStatusRetries] times in a row). Answers that
//     cannot improve by asking again (404, 403, a wrong digest) are returned
//     at once; [SourceAnswered] tells them from a failing link.
//   - Kept out of the truck. A redirect from a public host to a loopback,
//     private or link-local address is refused, when it arrives and again
//     at the connection, where the name was resolved anew ([ErrRedirect]).
//   - Cancellable. When the caller cancels the context (the truck went
//     offline, the agent is stopping) Fetch returns promptly and leaves the
//     partial file for the next call.
//
// # Why the partial is re-hashed rather than trusted
//
// The hash state is not persisted: after a crash the tail of the partial
// file may not be what was received (unflushed pages, a torn write), and a
// persisted state could disagree with the bytes. Re-hashing costs one read
// of the partial file per call. If the final digest of a file that was
// assembled from more than one response does not match, Fetch assumes a bad
// splice or a damaged partial rather than a bad artifact and downloads once
// more from zero before it reports [ErrDigestMismatch].
//
// # Concurrency
//
// Two Fetch calls must not write the same dst at the same time. Within one
// process this is enforced ([ErrBusy]); across processes it is the caller's
// job (the agent is the only writer of its artifact folder).
package download
