package inference

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/linkedge/linkedge/inference/bundle"
)

// Sentinel errors, checked with errors.Is.
var (
	// ErrNotStarted means Init has not been called.
	ErrNotStarted = errors.New("onnx runtime not started; call inference.Init first")
	// ErrModelMismatch means the ONNX graph does not match the bundle's metadata.
	ErrModelMismatch = errors.New("model does not match its metadata")
	// ErrGoldenMismatch means the model loaded but gave the wrong answers for
	// its golden samples; it must not serve.
	ErrGoldenMismatch = errors.New("golden samples failed")
	// ErrBadInput marks a request whose rows cannot be fed to the model.
	ErrBadInput = errors.New("bad input")
	// ErrClosed means the model or engine was closed.
	ErrClosed = errors.New("model closed")
)

// Options tune a loaded model. The zero value is good for small models on
// small machines.
type Options struct {
	// IntraOpThreads is ONNX Runtime's thread count inside one operator.
	// Default 1: tree ensembles on a batch of a few dozen rows finish faster
	// than a thread pool wakes up, and the server runs its own workers.
	IntraOpThreads int `json:"intra_op_threads" yaml:"intra_op_threads"`
	// InterOpThreads is ONNX Runtime's thread count across operators. Default 1.
	InterOpThreads int `json:"inter_op_threads" yaml:"inter_op_threads"`
	// SkipGolden loads a model without running its golden samples. Only the
	// toolkit uses it, to show which samples fail.
	SkipGolden bool `json:"-" yaml:"-"`
}

// Model is one loaded ONNX model with its metadata. Predict is safe for
// concurrent use.
type Model struct {
	meta    *bundle.Metadata
	sess    *ort.DynamicAdvancedSession
	nFeat   int
	outCols int
	digest  string

	closeOnce sync.Once
	mu        sync.RWMutex // guards sess against Close during Predict
	closed    bool
}

// Prediction is the model's answer for one row.
type Prediction struct {
	Label string  `json:"label"`
	Score float32 `json:"score"`
}

// LoadFile opens a bundle (model.tar.gz, folder or .onnx) and loads it.
func LoadFile(ctx context.Context, path string, opts Options) (*Model, error) {
	b, err := bundle.Open(path)
	if err != nil {
		return nil, err
	}
	return Load(ctx, b, opts)
}

// Load checks a bundle's ONNX graph against its metadata, starts a session
// and runs the golden samples. Any mismatch is an error and nothing is
// returned to serve from.
func Load(ctx context.Context, b *bundle.Bundle, opts Options) (*Model, error) {
	if !ort.IsInitialized() {
		return nil, ErrNotStarted
	}
	ins, outs, err := ort.GetInputOutputInfoWithONNXData(b.ONNX)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not a loadable ONNX model: %s", ErrModelMismatch, sourceName(b), lowerFirst(err.Error()))
	}
	meta := b.Meta
	if meta == nil {
		if meta, err = deriveMetadata(b, ins, outs); err != nil {
			return nil, err
		}
	}
	nFeat, outCols, err := checkSignature(meta, ins, outs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", sourceName(b), err)
	}
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("session options: %w", err)
	}
	defer so.Destroy()
	intra, inter := opts.IntraOpThreads, opts.InterOpThreads
	if intra <= 0 {
		intra = 1
	}
	if inter <= 0 {
		inter = 1
	}
	if err := so.SetIntraOpNumThreads(intra); err != nil {
		return nil, fmt.Errorf("session options: %w", err)
	}
	if err := so.SetInterOpNumThreads(inter); err != nil {
		return nil, fmt.Errorf("session options: %w", err)
	}
	sess, err := ort.NewDynamicAdvancedSessionWithONNXData(b.ONNX, []string{meta.Input}, []string{meta.Output}, so)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: create session: %s", ErrModelMismatch, sourceName(b), lowerFirst(err.Error()))
	}
	sum := sha256.Sum256(b.ONNX)
	m := &Model{meta: meta, sess: sess, nFeat: nFeat, outCols: outCols, digest: hex.EncodeToString(sum[:])}
	if !opts.SkipGolden {
		if err := m.CheckGolden(ctx); err != nil {
			m.Close()
			return nil, fmt.Errorf("%s: %w", sourceName(b), err)
		}
	}
	return m, nil
}

// Meta returns the model's metadata. Callers must not change it.
func (m *Model) Meta() *bundle.Metadata { return m.meta }

// Name is the model's name.
func (m *Model) Name() string { return m.meta.Name }

// Version is the model's version.
func (m *Model) Version() int64 { return m.meta.Version }

// NumFeatures is the number of input columns.
func (m *Model) NumFeatures() int { return m.nFeat }

// Digest is the sha256 of the ONNX graph, hex.
func (m *Model) Digest() string { return m.digest }

// Scores runs the model on n rows laid out one after another in flat
// (len(flat) == n*NumFeatures) and writes n positive-class scores to out.
func (m *Model) Scores(flat []float32, out []float32) error {
	n := len(out)
	if n == 0 {
		return nil
	}
	if len(flat) != n*m.nFeat {
		return fmt.Errorf("%w: %d values for %d rows of %d features", ErrBadInput, len(flat), n, m.nFeat)
	}
	res := make([]float32, n*m.outCols)
	in, outT, err := m.tensors(n, flat, res)
	if err != nil {
		return err
	}
	defer in.Destroy()
	defer outT.Destroy()
	return m.run(n, in, outT, res, out)
}

// tensors wraps flat (n rows of input) and res (n rows of output) in
// ONNX Runtime tensors over the same memory.
func (m *Model) tensors(n int, flat, res []float32) (in, out *ort.Tensor[float32], err error) {
	if in, err = ort.NewTensor(ort.NewShape(int64(n), int64(m.nFeat)), flat); err != nil {
		return nil, nil, fmt.Errorf("input tensor: %w", err)
	}
	if out, err = ort.NewTensor(ort.NewShape(int64(n), int64(m.outCols)), res); err != nil {
		in.Destroy()
		return nil, nil, fmt.Errorf("output tensor: %w", err)
	}
	return in, out, nil
}

// run scores the n rows of in, whose output tensor out is over res, and
// writes the positive-class scores to scores[:n].
func (m *Model) run(n int, in, out *ort.Tensor[float32], res, scores []float32) error {
	m.mu.RLock()
	if m.closed {
		m.mu.RUnlock()
		return ErrClosed
	}
	err := m.sess.Run([]ort.Value{in}, []ort.Value{out})
	m.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("run model %s v%d: %s", m.meta.Name, m.meta.Version, lowerFirst(err.Error()))
	}
	for i := range n {
		scores[i] = res[i*m.outCols+m.outCols-1]
	}
	return nil
}

// scratch runs batches of up to max rows through one model with tensors made
// once per batch size and then reused. A fresh pair of tensors costs four
// extra calls into ONNX Runtime and ten allocations, as much as scoring a
// small batch, so the batcher's workers, which run all day, each keep one.
// Not safe for concurrent use.
type scratch struct {
	m    *Model
	flat []float32 // max × features, the input tensors' memory
	res  []float32 // max × output columns, the output tensors' memory
	ins  []*ort.Tensor[float32]
	outs []*ort.Tensor[float32]
}

func (m *Model) newScratch(max int) *scratch {
	return &scratch{m: m, flat: make([]float32, max*m.nFeat), res: make([]float32, max*m.outCols),
		ins: make([]*ort.Tensor[float32], max), outs: make([]*ort.Tensor[float32], max)}
}

// input is the memory to fill with n rows before run(n).
func (s *scratch) input(n int) []float32 { return s.flat[:n*s.m.nFeat] }

// run scores the n rows in input(n) into scores[:n].
func (s *scratch) run(n int, scores []float32) error {
	m := s.m
	in, out := s.ins[n-1], s.outs[n-1]
	if in == nil {
		var err error
		if in, out, err = m.tensors(n, s.flat[:n*m.nFeat], s.res[:n*m.outCols]); err != nil {
			return err
		}
		s.ins[n-1], s.outs[n-1] = in, out
	}
	return m.run(n, in, out, s.res, scores)
}

// close releases the tensors; the scratch is not used again.
func (s *scratch) close() {
	for i := range s.ins {
		if s.ins[i] != nil {
			s.ins[i].Destroy()
			s.outs[i].Destroy()
			s.ins[i], s.outs[i] = nil, nil
		}
	}
}

// Predict scores rows and labels them with the metadata's threshold.
func (m *Model) Predict(rows [][]float32) ([]Prediction, error) {
	flat := make([]float32, 0, len(rows)*m.nFeat)
	for i, r := range rows {
		if len(r) != m.nFeat {
			return nil, fmt.Errorf("%w: row %d has %d features, model %s expects %d", ErrBadInput, i+1, len(r), m.meta.Name, m.nFeat)
		}
		flat = append(flat, r...)
	}
	scores := make([]float32, len(rows))
	if err := m.Scores(flat, scores); err != nil {
		return nil, err
	}
	out := make([]Prediction, len(rows))
	for i, s := range scores {
		out[i] = Prediction{Label: m.meta.Label(s), Score: s}
	}
	return out, nil
}

// GoldenResult is the outcome of one golden sample.
type GoldenResult struct {
	ID        string  `json:"id"`
	WantScore float64 `json:"want_score"`
	GotScore  float64 `json:"got_score"`
	WantLabel string  `json:"want_label"`
	GotLabel  string  `json:"got_label"`
	OK        bool    `json:"ok"`
}

// RunGolden runs every golden sample and reports each one.
func (m *Model) RunGolden(ctx context.Context) ([]GoldenResult, error) {
	if len(m.meta.Golden) == 0 {
		return nil, nil
	}
	rows := make([][]float32, len(m.meta.Golden))
	for i, g := range m.meta.Golden {
		rows[i] = g.Features
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	preds, err := m.Predict(rows)
	if err != nil {
		return nil, err
	}
	tol := m.meta.EffectiveTolerance()
	res := make([]GoldenResult, len(preds))
	for i, p := range preds {
		g := m.meta.Golden[i]
		got := float64(p.Score)
		res[i] = GoldenResult{ID: g.ID, WantScore: g.Score, GotScore: got, WantLabel: g.Label, GotLabel: p.Label,
			OK: math.Abs(got-g.Score) <= tol && p.Label == g.Label}
	}
	return res, nil
}

// CheckGolden runs the golden samples and returns ErrGoldenMismatch naming
// the first ones that failed.
func (m *Model) CheckGolden(ctx context.Context) error {
	res, err := m.RunGolden(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrGoldenMismatch, err)
	}
	var bad []string
	for _, r := range res {
		if !r.OK {
			bad = append(bad, fmt.Sprintf("%s: want %s %.6g, got %s %.6g", r.ID, r.WantLabel, r.WantScore, r.GotLabel, r.GotScore))
		}
	}
	if len(bad) > 0 {
		if len(bad) > 3 {
			bad = append(bad[:3], fmt.Sprintf("and %d more", len(bad)-3))
		}
		return fmt.Errorf("%w: %d of %d samples of %s v%d differ (tolerance %g): %s; the bundle does not match its model, rebuild it",
			ErrGoldenMismatch, len(bad), len(res), m.meta.Name, m.meta.Version, m.meta.EffectiveTolerance(), strings.Join(bad, "; "))
	}
	return nil
}

// Close frees the session. It waits for running calls and is idempotent.
func (m *Model) Close() error {
	var err error
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		m.mu.Unlock()
		err = m.sess.Destroy()
	})
	return err
}

// checkSignature compares the graph's one input and output with the metadata.
func checkSignature(meta *bundle.Metadata, ins, outs []ort.InputOutputInfo) (nFeat, outCols int, err error) {
	in, ok := findIO(ins, meta.Input)
	if !ok {
		return 0, 0, fmt.Errorf("%w: metadata names input %q, the graph has %s", ErrModelMismatch, meta.Input, ioNames(ins))
	}
	out, ok := findIO(outs, meta.Output)
	if !ok {
		return 0, 0, fmt.Errorf("%w: metadata names output %q, the graph has %s", ErrModelMismatch, meta.Output, ioNames(outs))
	}
	if len(ins) != 1 {
		return 0, 0, fmt.Errorf("%w: the graph has %d inputs %s, want exactly one", ErrModelMismatch, len(ins), ioNames(ins))
	}
	if in.OrtValueType != ort.ONNXTypeTensor || in.DataType != ort.TensorElementDataTypeFloat {
		return 0, 0, fmt.Errorf("%w: input %q is %s, want a float32 tensor", ErrModelMismatch, in.Name, in.String())
	}
	if out.OrtValueType != ort.ONNXTypeTensor || out.DataType != ort.TensorElementDataTypeFloat {
		return 0, 0, fmt.Errorf("%w: output %q is %s, want a float32 tensor", ErrModelMismatch, out.Name, out.String())
	}
	if len(in.Dimensions) != 2 {
		return 0, 0, fmt.Errorf("%w: input %q has shape %s, want [batch, features]", ErrModelMismatch, in.Name, in.Dimensions)
	}
	nFeat = len(meta.Features)
	if d := in.Dimensions[1]; d > 0 && int(d) != nFeat {
		return 0, 0, fmt.Errorf("%w: input %q takes %d features, metadata lists %d", ErrModelMismatch, in.Name, d, nFeat)
	}
	if len(out.Dimensions) != 2 {
		return 0, 0, fmt.Errorf("%w: output %q has shape %s, want [batch, 1] or [batch, 2]", ErrModelMismatch, out.Name, out.Dimensions)
	}
	switch d := out.Dimensions[1]; d {
	case 1, 2:
		outCols = int(d)
	default:
		return 0, 0, fmt.Errorf("%w: output %q has %d columns, want 1 or 2 (positive-class score last)", ErrModelMismatch, out.Name, d)
	}
	return nFeat, outCols, nil
}

// deriveMetadata makes metadata for a bare .onnx file: the graph's one input
// and output, features f0..fN-1, labels "0"/"1", threshold 0.5, version 1.
func deriveMetadata(b *bundle.Bundle, ins, outs []ort.InputOutputInfo) (*bundle.Metadata, error) {
	if len(ins) != 1 || len(outs) < 1 {
		return nil, fmt.Errorf("%w: %s has %d inputs and %d outputs; a bare model needs one of each, or add %s", ErrModelMismatch, sourceName(b), len(ins), len(outs), bundle.MetadataFile)
	}
	if len(ins[0].Dimensions) != 2 || ins[0].Dimensions[1] <= 0 {
		return nil, fmt.Errorf("%w: input %q has shape %s; a bare model needs a fixed feature count, or add %s", ErrModelMismatch, ins[0].Name, ins[0].Dimensions, bundle.MetadataFile)
	}
	n := int(ins[0].Dimensions[1])
	feats := make([]string, n)
	for i := range feats {
		feats[i] = fmt.Sprintf("f%d", i)
	}
	name := strings.ToLower(strings.TrimSuffix(filepath.Base(b.Source), ".onnx"))
	name = badNameChars.ReplaceAllString(name, "-")
	if name == "" || name == "-" {
		name = "model"
	}
	m := &bundle.Metadata{Schema: bundle.Schema, Name: strings.Trim(name, "-._"), Version: 1, Input: ins[0].Name, Output: outs[0].Name,
		Features: feats, Labels: [2]string{"0", "1"}, Threshold: 0.5, Description: "bare ONNX model without metadata"}
	if m.Name == "" {
		m.Name = "model"
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

var badNameChars = regexp.MustCompile(`[^a-z0-9._-]+`)

func findIO(list []ort.InputOutputInfo, name string) (ort.InputOutputInfo, bool) {
	for _, x := range list {
		if x.Name == name {
			return x, true
		}
	}
	return ort.InputOutputInfo{}, false
}

func ioNames(list []ort.InputOutputInfo) string {
	names := make([]string, len(list))
	for i, x := range list {
		names[i] = fmt.Sprintf("%q", x.Name)
	}
	return "[" + strings.Join(names, ", ") + "]"
}

func sourceName(b *bundle.Bundle) string {
	if b.Source != "" {
		return b.Source
	}
	if b.Meta != nil {
		return fmt.Sprintf("%s v%d", b.Meta.Name, b.Meta.Version)
	}
	return "model"
}

// lowerFirst lowercases an error text from onnxruntime_go, whose messages
// start with a capital, so ours read as one lowercase sentence.
func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

// CheckBackendGolden runs the golden samples of b's metadata through b
// itself (for a remote backend: over the wire, as requests will go) and
// returns ErrGoldenMismatch naming the samples that differ.
func CheckBackendGolden(ctx context.Context, b Backend) error {
	meta := b.Meta()
	if len(meta.Golden) == 0 {
		return nil
	}
	rows := make([][]float32, len(meta.Golden))
	for i, g := range meta.Golden {
		rows[i] = g.Features
	}
	preds, err := b.Predict(ctx, rows)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrGoldenMismatch, err)
	}
	tol := meta.EffectiveTolerance()
	var bad []string
	for i, p := range preds {
		g := meta.Golden[i]
		if math.Abs(float64(p.Score)-g.Score) > tol || p.Label != g.Label {
			bad = append(bad, fmt.Sprintf("%s: want %s %.6g, got %s %.6g", g.ID, g.Label, g.Score, p.Label, p.Score))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %d of %d samples of %s v%d differ: %s", ErrGoldenMismatch, len(bad), len(preds), meta.Name, meta.Version, strings.Join(bad, "; "))
	}
	return nil
}
