// Package sagemaker is the publisher's SageMaker Model Registry backend:
// [Registry] implements publisher.Registry over model package groups, and
// [Events] turns "SageMaker Model Package State Change" events (EventBridge
// to SQS) into an immediate refresh, with polling kept as the safety net.
//
// # Mapping
//
// Each configured model package group is one LinkEdge model: the group name
// is the model id (it must be a valid LinkEdge id, and the bundle's
// metadata.json must carry the same name). ModelPackageVersion is the
// version, InferenceSpecification.Containers[0].ModelDataUrl the s3://
// location of model.tar.gz. The artifact's sha256 and size are computed by
// streaming it once (package s3dist) and cached by model package ARN and
// S3 ETag, so a poll costs a HeadObject per group, not a download.
//
// # What is announced
//
// Per group, [Registry.Versions] reports the newest approved version whose
// description and artifact check out. The publisher's policy does the rest:
// a newly approved version is announced; rejecting it makes the newest
// still-approved one the target again, announced under a newer serial.
//
// A version with a problem that belongs to it (no ModelDataUrl, not s3://,
// no such object, not a valid bundle, a bundle of another model or
// version, no version number) is skipped with an error naming its ARN; the
// next lower approved version stands in, and the version is checked again
// at the next poll. A problem that says nothing about the version
// (throttling, access denied, a network error) never makes the fleet step
// back: the version's last good description is kept, or, if there is none,
// the group keeps what it last reported. Throttling also backs the whole
// registry off exponentially, with jitter.
//
// # Polling and events
//
// The registry reads SageMaker at most every RefreshInterval, and at once
// for groups named by an event ([Registry.Trigger], fed by [Events]).
// Between refreshes Versions answers from memory, so the publisher may
// poll it often (every second, say): an event then reaches the fleet
// within a poll interval. [Registry.Notify] signals each trigger, for a
// publisher loop that can wait on it. docs/aws.md has the details.
package sagemaker
