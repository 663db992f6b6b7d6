// Package bundle defines the LinkEdge model bundle: the model.tar.gz that a
// data scientist publishes and a truck downloads.
//
// A bundle follows the SageMaker convention (a gzipped tar whose contents
// land in /opt/ml/model) and holds two files at its root:
//
//   - model.onnx: the model. It takes one float32 input of shape
//     [batch, len(Features)] (NaN marks a missing value) and gives one
//     float32 output of shape [batch, 1] or [batch, 2] whose last column is
//     the score of the positive label.
//   - metadata.json: the [Metadata] below: name, feature order, tensor
//     names, labels, decision threshold and golden samples, the inputs with
//     the outputs this model must produce before anyone may switch to it,
//     and optionally a version (the registry's version is the one that
//     counts; see [Metadata.Version]).
//
// Other files (a SageMaker "code/" folder, say) are allowed and ignored.
package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
)

// Schema is the value of Metadata.Schema this package writes and reads.
const Schema = "linkedge.bundle/v1"

// File names inside a bundle.
const (
	ModelFile    = "model.onnx"
	MetadataFile = "metadata.json"
)

// DefaultTolerance is the absolute score difference a golden sample may show
// when Metadata.Tolerance is zero. ONNX Runtime builds differ in the last bits
// of float32 sums; anything larger than this is a different model.
const DefaultTolerance = 1e-4

// Sentinel errors, checked with errors.Is.
var (
	// ErrInvalid marks a bundle or metadata file that breaks the format.
	ErrInvalid = errors.New("invalid model bundle")
	// ErrTooLarge marks a bundle member over the size limits of Limits.
	ErrTooLarge = errors.New("model bundle too large")
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// Metadata describes a model and how to call it. It is metadata.json.
type Metadata struct {
	// Schema is always [Schema].
	Schema string `json:"schema"`
	// Name is the model's name: lowercase letters, digits, '.', '_' and '-';
	// it appears in topics and URLs.
	Name string `json:"name"`
	// Version is optional: 0 (absent from the JSON) means the bundle does
	// not know its version. The model registry assigns the version, and a
	// SageMaker pipeline builds model.tar.gz before RegisterModel gives it
	// one, so the version a truck reports is always its signed release's,
	// which binds the registry's number to this file's sha256; a version
	// here is only the local registry's default and what `linkedge serve`
	// reports for a bundle served outside a release.
	Version int64 `json:"version,omitempty"`
	// Description is free text for people.
	Description string `json:"description,omitempty"`
	// Input and Output name the ONNX tensors.
	Input  string `json:"input"`
	Output string `json:"output"`
	// Features lists the input columns in the order the model expects them.
	Features []string `json:"features"`
	// Labels are the negative and the positive class, in that order.
	Labels [2]string `json:"labels"`
	// Threshold is the score at or above which the positive label is given.
	Threshold float64 `json:"threshold"`
	// Tolerance is the absolute score difference allowed when golden samples
	// are checked; zero means DefaultTolerance.
	Tolerance float64 `json:"tolerance,omitempty"`
	// Golden samples must reproduce on the target before it serves the model.
	Golden []Golden `json:"golden"`
	// Training records where the model came from, for people and audits.
	Training *Training `json:"training,omitempty"`
}

// Golden is one input with the output the model must give for it.
type Golden struct {
	ID       string  `json:"id"`
	Features Row     `json:"features"`
	Score    float64 `json:"score"`
	Label    string  `json:"label"`
}

// Training says how a model was made.
type Training struct {
	// Dataset names the data, e.g. "synthetic-aps(seed=1)" or "uci-aps".
	Dataset string `json:"dataset"`
	// Synthetic is true when the model never saw real data.
	Synthetic bool   `json:"synthetic"`
	Algorithm string `json:"algorithm"`
	// Params are the trainer's settings, as text.
	Params    map[string]string `json:"params,omitempty"`
	TrainRows int               `json:"train_rows"`
	TestRows  int               `json:"test_rows"`
	// FP, FN and Cost are measured on the held-out rows; Cost is the APS
	// challenge cost 10*FP + 500*FN.
	FP   int   `json:"fp"`
	FN   int   `json:"fn"`
	Cost int64 `json:"cost"`
}

// Row is one input row. In JSON a missing value is null; in memory it is NaN.
type Row []float32

// MarshalJSON writes NaN as null.
func (r Row) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, v := range r {
		if i > 0 {
			b.WriteByte(',')
		}
		if math.IsNaN(float64(v)) {
			b.WriteString("null")
			continue
		}
		if math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("feature %d is infinite", i)
		}
		b.WriteString(strconv.FormatFloat(float64(v), 'g', -1, 32))
	}
	b.WriteByte(']')
	return b.Bytes(), nil
}

// UnmarshalJSON reads null as NaN.
func (r *Row) UnmarshalJSON(data []byte) error {
	var raw []*float64
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	out := make(Row, len(raw))
	for i, p := range raw {
		if p == nil {
			out[i] = float32(math.NaN())
			continue
		}
		out[i] = float32(*p)
	}
	*r = out
	return nil
}

// EffectiveTolerance is Tolerance, or DefaultTolerance when that is zero.
func (m *Metadata) EffectiveTolerance() float64 {
	if m.Tolerance > 0 {
		return m.Tolerance
	}
	return DefaultTolerance
}

// Label maps a positive-class score to a label.
func (m *Metadata) Label(score float32) string {
	if float64(score) >= m.Threshold {
		return m.Labels[1]
	}
	return m.Labels[0]
}

// Validate checks the metadata on its own, without the model.
func (m *Metadata) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: metadata: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	switch {
	case m.Schema != Schema:
		return bad("schema is %q, want %q", m.Schema, Schema)
	case !nameRE.MatchString(m.Name):
		return bad("name %q must be 1-63 lowercase letters, digits, '.', '_' or '-'", m.Name)
	case m.Version < 0:
		return bad("version is %d; leave it out (the registry assigns one) or give 1 or more", m.Version)
	case m.Input == "" || m.Output == "":
		return bad("input and output tensor names are required")
	case len(m.Features) == 0:
		return bad("features are empty; list the input columns in model order")
	case m.Labels[0] == "" || m.Labels[1] == "" || m.Labels[0] == m.Labels[1]:
		return bad("labels %q must be two different non-empty names", m.Labels)
	case math.IsNaN(m.Threshold) || m.Threshold < 0 || m.Threshold > 1:
		return bad("threshold %v is outside [0, 1]", m.Threshold)
	case m.Tolerance < 0 || math.IsNaN(m.Tolerance):
		return bad("tolerance %v is negative", m.Tolerance)
	}
	seen := make(map[string]bool, len(m.Features))
	for i, f := range m.Features {
		if f == "" {
			return bad("feature %d has no name", i)
		}
		if seen[f] {
			return bad("feature %q is listed twice", f)
		}
		seen[f] = true
	}
	for i, g := range m.Golden {
		if len(g.Features) != len(m.Features) {
			return bad("golden sample %d (%s) has %d features, want %d", i, g.ID, len(g.Features), len(m.Features))
		}
		if g.Label != m.Labels[0] && g.Label != m.Labels[1] {
			return bad("golden sample %d (%s) has label %q, not one of %q", i, g.ID, g.Label, m.Labels)
		}
		if math.IsNaN(g.Score) || math.IsInf(g.Score, 0) {
			return bad("golden sample %d (%s) has no finite score", i, g.ID)
		}
		for j, v := range g.Features {
			if math.IsInf(float64(v), 0) {
				return bad("golden sample %d (%s) feature %s is out of float32 range", i, g.ID, m.Features[j])
			}
		}
	}
	return nil
}

// DecodeMetadata parses metadata.json strictly: unknown fields are errors, so
// a typo never silently drops a setting.
func DecodeMetadata(data []byte) (*Metadata, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var m Metadata
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, MetadataFile, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: %s: trailing data after the JSON object", ErrInvalid, MetadataFile)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// EncodeMetadata writes metadata.json, indented for people.
func EncodeMetadata(m *Metadata) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode metadata: %w", err)
	}
	return append(b, '\n'), nil
}
