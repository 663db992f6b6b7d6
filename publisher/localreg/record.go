package localreg

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/linkedge/linkedge/internal/release"
)

// RecordSchema is the value of Record.Schema this package writes and reads.
// A change an older reader could misread gets a new schema.
const RecordSchema = "linkedge.localreg.version/v1"

// maxRecordSize bounds what ParseRecord reads. A record is a few hundred
// bytes; the bound keeps a hand-edited or hostile file from costing much.
const maxRecordSize = 64 << 10

// maxNameLen bounds approver names ("by"), which end up in every truck's
// release document.
const maxNameLen = 128

// Status is where a version stands in the approval workflow.
type Status string

// The statuses. A version starts pending; approve and reject move it between
// the three (a rejected version may be approved again, and an approved one
// rejected to withdraw it).
const (
	StatusPending  Status = "pending"
	StatusApproved Status = "approved"
	StatusRejected Status = "rejected"
)

// Record is the content of version.json: everything the registry knows about
// one version besides its artifact. It is replaced atomically on every
// change, so a reader sees either the old or the new record.
type Record struct {
	Schema    string    `json:"schema"`
	Status    Status    `json:"status"`
	CreatedAt time.Time `json:"created_at"`
	// ApprovedAt and ApprovedBy are set by the latest approval.
	ApprovedAt time.Time `json:"approved_at,omitzero"`
	ApprovedBy string    `json:"approved_by,omitempty"`
	// RejectedAt and RejectedBy are set by the latest rejection.
	RejectedAt time.Time `json:"rejected_at,omitzero"`
	RejectedBy string    `json:"rejected_by,omitempty"`
	// SHA256 (lowercase hex) and Size describe model.tar.gz as added; they
	// are what the publisher signs, so trucks detect any later change.
	SHA256      string `json:"sha256"`
	Size        int64  `json:"size"`
	Description string `json:"description,omitempty"`
	// Image, if set, is the serving container image the version runs in,
	// pinned by digest (name@sha256:...): the publisher announces it as a
	// container release. Without it trucks run the bundle in process.
	// Set by `registry add --image` or `registry approve --image`; see
	// SetImage for when it may change.
	Image string `json:"image,omitempty"`
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ParseRecord decodes version.json strictly (unknown fields, trailing data
// and inconsistent content are errors wrapping [ErrCorrupt]): the publisher
// decides what trucks run from it, so a typo must never pass for a value.
func ParseRecord(data []byte) (*Record, error) {
	if len(data) > maxRecordSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrCorrupt, len(data), maxRecordSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var r Record
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if _, err := dec.Token(); err == nil {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrCorrupt)
	}
	if err := r.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return &r, nil
}

// validate checks the rules ParseRecord enforces; Add, Approve and Reject
// check them too before writing.
func (r *Record) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if r.Schema != RecordSchema {
		bad("schema is %q, want %q", clip(r.Schema), RecordSchema)
	}
	switch r.Status {
	case StatusPending:
	case StatusApproved:
		if r.ApprovedAt.IsZero() {
			bad("status is approved but approved_at is missing")
		}
	case StatusRejected:
		if r.RejectedAt.IsZero() {
			bad("status is rejected but rejected_at is missing")
		}
	default:
		bad("status is %q, want pending, approved or rejected", clip(string(r.Status)))
	}
	if r.CreatedAt.IsZero() {
		bad("created_at is missing")
	}
	if !sha256Hex.MatchString(r.SHA256) {
		bad("sha256 is %q, want 64 lowercase hex characters", clip(r.SHA256))
	}
	if r.Size <= 0 {
		bad("size is %d, want the artifact size in bytes", r.Size)
	}
	if r.Image != "" {
		if err := release.CheckImage(r.Image); err != nil {
			bad("image: %v", err)
		}
	}
	for _, f := range [...]struct{ name, value string }{
		{"approved_by", r.ApprovedBy}, {"rejected_by", r.RejectedBy}, {"description", r.Description},
	} {
		if !utf8.ValidString(f.value) || strings.ContainsRune(f.value, utf8.RuneError) {
			bad("%s is not valid UTF-8", f.name)
		}
	}
	return errors.Join(errs...)
}

// checkName validates an approver name: it is copied into signed release
// documents and logs, so it must be short, printable text.
func checkName(by string) error {
	switch {
	case by == "":
		return fmt.Errorf("%w: approver name is empty; say who decided (e.g. --by alice)", ErrInvalidInput)
	case len(by) > maxNameLen:
		return fmt.Errorf("%w: approver name is %d bytes, limit %d", ErrInvalidInput, len(by), maxNameLen)
	case !utf8.ValidString(by) || strings.ContainsRune(by, utf8.RuneError):
		return fmt.Errorf("%w: approver name is not valid UTF-8", ErrInvalidInput)
	}
	for _, c := range by {
		if unicode.IsControl(c) {
			return fmt.Errorf("%w: approver name %q contains a control character", ErrInvalidInput, by)
		}
	}
	return nil
}

// clip shortens s for error messages so a hostile file stays out of logs.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
