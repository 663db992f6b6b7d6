// Package s3dist connects the publisher to Amazon S3 (or an S3-compatible
// store): it reads a model.tar.gz once, streaming, to learn the sha256 and
// size that trucks will check and to prove it is a valid LinkEdge bundle,
// and it hands trucks presigned GET URLs ([Presigner], a
// publisher.Distributor), so no truck ever holds AWS credentials.
//
// Why presigned URLs: a release document is broadcast to the whole fleet and
// logged, so it must carry no secret, yet the bucket stays private. A
// presigned URL is a capability limited to one object and a lifetime (at
// most seven days with SigV4). The publisher re-signs the release document
// before that lifetime runs out; see [Presigner] and docs/aws.md.
package s3dist
