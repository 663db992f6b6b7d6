package sagemaker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/linkedge/linkedge/internal/backoff"
)

// SQSAPI is the part of *sqs.Client that [Events] uses.
type SQSAPI interface {
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, optFns ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessage(ctx context.Context, in *sqs.DeleteMessageInput, optFns ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error)
}

// Defaults of [Events].
const (
	// DefaultWait is SQS's longest long poll: one request per 20 s while
	// nothing happens, an answer the moment something does.
	DefaultWait = 20 * time.Second
	// DefaultVisibility hides a received message from other consumers for
	// as long as handling it may take.
	DefaultVisibility = time.Minute
)

// Events consumes "SageMaker Model Package State Change" events from an
// SQS queue (the target of the EventBridge rule in docs/pipeline-hook.md)
// and triggers a refresh of the group each one names. Every message is
// deleted once handled: events only say "look now", the registry reads the
// truth from SageMaker, and polling remains the safety net for an event
// that is lost. A malformed message is logged and deleted too, so it does
// not come back forever.
type Events struct {
	// Client and QueueURL are required.
	Client   SQSAPI
	QueueURL string
	// Registry is triggered by each event for one of its groups; required.
	Registry *Registry
	// Wait is the long-poll time, 1s to 20s; default [DefaultWait].
	Wait time.Duration
	// Visibility is the message's visibility timeout; default
	// [DefaultVisibility].
	Visibility time.Duration
	// MinBackoff and MaxBackoff bound the wait after a failed receive.
	// Defaults 1s and 1m.
	MinBackoff, MaxBackoff time.Duration
	// OnEvent, if set, is called for each event of a watched group after
	// the trigger (tests and metrics).
	OnEvent func(Event)
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Run receives until ctx is done, then returns nil. Failed receives (a
// missing queue, access denied, throttling) are logged once while they
// last and retried with backoff: the registry's polling carries on
// meanwhile. It returns an error only for a configuration it cannot use.
func (e *Events) Run(ctx context.Context) error {
	if e.Client == nil || e.QueueURL == "" || e.Registry == nil {
		return fmt.Errorf("%w: events need an sqs client, a queue url and a registry", ErrInvalidConfig)
	}
	log := e.Logger
	if log == nil {
		log = slog.Default()
	}
	wait := e.Wait
	if wait == 0 {
		wait = DefaultWait
	}
	if wait < time.Second || wait > 20*time.Second {
		return fmt.Errorf("%w: sqs wait %s, want 1s to 20s", ErrInvalidConfig, wait)
	}
	vis := e.Visibility
	if vis == 0 {
		vis = DefaultVisibility
	}
	b := backoff.Backoff{Min: cmpOr(e.MinBackoff, time.Second), Max: cmpOr(e.MaxBackoff, time.Minute)}
	var lastErr string
	log.Info("listening for sagemaker model package events", "queue", e.QueueURL)
	for {
		out, err := e.Client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl:            aws.String(e.QueueURL),
			MaxNumberOfMessages: 10,
			WaitTimeSeconds:     int32(wait / time.Second),
			VisibilityTimeout:   int32(vis / time.Second),
		})
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if msg := err.Error(); msg != lastErr {
				lastErr = msg
				log.Warn("cannot receive sagemaker events; polling continues, retrying", "queue", e.QueueURL, "err", err)
			}
			if !sleep(ctx, b.Next()) {
				return nil
			}
			continue
		}
		if lastErr != "" {
			log.Info("receiving sagemaker events again", "queue", e.QueueURL)
			lastErr = ""
		}
		b.Reset()
		for _, m := range out.Messages {
			e.handle(ctx, log, m)
		}
	}
}

// handle triggers the registry for one message and deletes it.
func (e *Events) handle(ctx context.Context, log *slog.Logger, m types.Message) {
	ev, err := ParseMessage([]byte(aws.ToString(m.Body)))
	switch {
	case errors.Is(err, ErrOtherEvent):
		log.Debug("ignoring an event of another kind", "message_id", aws.ToString(m.MessageId), "err", err)
	case err != nil:
		log.Warn("deleting a malformed sagemaker event", "message_id", aws.ToString(m.MessageId), "err", err)
	case !e.Registry.Watches(ev.Group):
		// Info, not Debug: a group missing from --groups (a typo, say) is
		// otherwise silent, and its approvals never reach a truck.
		log.Info("ignoring an event for a group this publisher does not watch; add it to sagemaker.groups (--groups) if its approvals should reach the trucks",
			"group", ev.Group, "version", ev.Version, "approval", ev.Approval)
	default:
		log.Info("sagemaker model package changed; refreshing", "group", ev.Group, "version", ev.Version,
			"approval", ev.Approval, "arn", ev.ARN)
		e.Registry.Trigger(ev.Group)
		if e.OnEvent != nil {
			e.OnEvent(ev)
		}
	}
	if _, err := e.Client.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(e.QueueURL), ReceiptHandle: m.ReceiptHandle}); err != nil && ctx.Err() == nil {
		// It comes back after its visibility timeout and triggers one more
		// refresh: harmless.
		log.Warn("cannot delete an sqs message", "message_id", aws.ToString(m.MessageId), "err", err)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
