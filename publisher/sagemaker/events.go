package sagemaker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/linkedge/linkedge/internal/topics"
)

// DetailType is the EventBridge detail-type of the events the registry
// listens to; the rule in docs/pipeline-hook.md matches on it.
const DetailType = "SageMaker Model Package State Change"

// maxMessage is SQS's largest message body.
const maxMessage = 256 << 10

// Event is a model package state change: a version was registered,
// approved, rejected or edited.
type Event struct {
	Group   string
	Version int64 // 0 if the event carried none
	// Approval is ModelApprovalStatus as SageMaker spells it.
	Approval string
	ARN      string
	// Time is the event's time; zero if absent.
	Time time.Time
}

// envelope is the EventBridge event, as EventBridge delivers it to an SQS
// target (the whole event is the message body).
type envelope struct {
	DetailType *string         `json:"detail-type"`
	Source     string          `json:"source"`
	Time       string          `json:"time"`
	Detail     json.RawMessage `json:"detail"`
}

type detail struct {
	ModelPackageGroupName string          `json:"ModelPackageGroupName"`
	ModelPackageVersion   json.RawMessage `json:"ModelPackageVersion"`
	ModelApprovalStatus   string          `json:"ModelApprovalStatus"`
	ModelPackageArn       string          `json:"ModelPackageArn"`
}

// snsEnvelope is the body SQS holds when the event came through an SNS
// topic without raw message delivery: the event is its Message string.
type snsEnvelope struct {
	Type    string `json:"Type"`
	Message string `json:"Message"`
}

// ParseMessage reads an SQS message body holding an EventBridge event
// (directly, or wrapped by SNS). It returns [ErrOtherEvent] for a valid
// event of another detail-type, and [ErrMalformedEvent] for anything that
// cannot be read, including a group name that cannot be a LinkEdge model.
func ParseMessage(body []byte) (Event, error) {
	if len(body) > maxMessage {
		return Event{}, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformedEvent, len(body), maxMessage)
	}
	var sns snsEnvelope
	if json.Unmarshal(body, &sns) == nil && sns.Type == "Notification" && sns.Message != "" {
		body = []byte(sns.Message)
	}
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return Event{}, fmt.Errorf("%w: %w", ErrMalformedEvent, err)
	}
	if env.DetailType == nil {
		return Event{}, fmt.Errorf("%w: no detail-type (not an EventBridge event)", ErrMalformedEvent)
	}
	if *env.DetailType != DetailType || (env.Source != "" && env.Source != "aws.sagemaker") {
		return Event{}, fmt.Errorf("%w: %q from %q", ErrOtherEvent, clip(*env.DetailType), clip(env.Source))
	}
	var d detail
	if len(env.Detail) == 0 || bytes.Equal(env.Detail, []byte("null")) {
		return Event{}, fmt.Errorf("%w: no detail", ErrMalformedEvent)
	}
	if err := json.Unmarshal(env.Detail, &d); err != nil {
		return Event{}, fmt.Errorf("%w: detail: %w", ErrMalformedEvent, err)
	}
	if err := topics.ValidID(d.ModelPackageGroupName); err != nil {
		return Event{}, fmt.Errorf("%w: ModelPackageGroupName %q: %w", ErrMalformedEvent, clip(d.ModelPackageGroupName), err)
	}
	e := Event{Group: d.ModelPackageGroupName, Approval: d.ModelApprovalStatus, ARN: d.ModelPackageArn}
	if len(d.ModelPackageVersion) > 0 && !bytes.Equal(d.ModelPackageVersion, []byte("null")) {
		if err := json.Unmarshal(d.ModelPackageVersion, &e.Version); err != nil || e.Version < 1 {
			return Event{}, fmt.Errorf("%w: ModelPackageVersion %s is not a version number", ErrMalformedEvent, clip(string(d.ModelPackageVersion)))
		}
	}
	if env.Time != "" {
		if t, err := time.Parse(time.RFC3339, env.Time); err == nil {
			e.Time = t
		}
	}
	return e, nil
}

// clip shortens s for messages, so a hostile message stays out of logs.
func clip(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
