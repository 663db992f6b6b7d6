// Package publisher is the cloud side of LinkEdge: it watches a model
// registry and announces, per model, the version trucks should run, as a
// signed release document (package release) retained on the fleet broker.
//
// # Policy
//
// A model's target is its highest approved version. Whenever the target
// differs from the last announcement the broker acknowledged, the publisher
// signs a new document and publishes it (retained, QoS 1) to
// topics.ModelRelease. So approving a newer version rolls it out, and
// rejecting the announced version withdraws it: the previous approved
// version is announced again under a newer serial. If no approved version
// remains, nothing is announced (trucks keep what they run) and a warning
// is logged. Documents are re-signed before they expire.
//
// # Exactly what was acknowledged
//
// An announcement is recorded in the state file ([StateFile]) only after
// the broker's PUBACK; until then it is retried on every poll. Serials are
// reserved in the state file before a document leaves the process, so no
// serial is ever signed twice for a model. See [Announcer.Announce].
//
// # Parts
//
//   - [Registry] and [Distributor]: where versions come from and how trucks
//     download them. The local folder registry (package localreg, adapted
//     by [LocalRegistry]) is the default; [ArtifactServer] serves its
//     artifacts with resumable downloads.
//   - [Publisher]: the long-running service ([New], [Publisher.Run]).
//   - [PublishOnce]: the one-shot announcement for pipeline hooks.
//
// docs/publisher.md describes the files, the command line and the metrics.
package publisher
