package onnx

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math"
	"testing"
)

func TestEncoderPrimitives(t *testing.T) {
	tests := []struct {
		name string
		fn   func(e *encoder)
		want string // hex
	}{
		{"varint 300", func(e *encoder) { e.int64(1, 300) }, "08ac02"},
		{"int64 -1 takes ten bytes", func(e *encoder) { e.int64(3, -1) }, "18ffffffffffffffffff01"},
		{"float32 1.0", func(e *encoder) { e.float32(2, 1) }, "150000803f"},
		{"string", func(e *encoder) { e.string(4, "ab") }, "22026162"},
		{"empty optional string omitted", func(e *encoder) { e.optString(4, "") }, ""},
		{"packed ints", func(e *encoder) { e.packedInt64s(8, []int64{1, 300, -1}) }, "420d" + "01" + "ac02" + "ffffffffffffffffff01"},
		{"packed floats", func(e *encoder) { e.packedFloat32s(7, []float32{1, -2}) }, "3a08" + "0000803f" + "000000c0"},
		{"empty packed omitted", func(e *encoder) { e.packedInt64s(8, nil) }, ""},
		{"large field number", func(e *encoder) { e.int64(20, 6) }, "a00106"},
		{"nested message", func(e *encoder) {
			e.message(8, func(s *encoder) { s.optString(1, "ai.onnx.ml"); s.int64(2, 3) })
		}, "420e0a0a61692e6f6e6e782e6d6c1003"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var e encoder
			tc.fn(&e)
			if got := hex.EncodeToString(e.b); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// field is one decoded protobuf field, for structural checks.
type field struct {
	num, wire int
	varint    uint64
	data      []byte
}

// decode is a minimal protobuf reader for tests: it splits one message into
// its top-level fields.
func decode(t *testing.T, b []byte) []field {
	t.Helper()
	var out []field
	readVarint := func() uint64 {
		var v uint64
		for shift := 0; ; shift += 7 {
			if len(b) == 0 || shift > 63 {
				t.Fatalf("truncated varint")
			}
			c := b[0]
			b = b[1:]
			v |= uint64(c&0x7f) << shift
			if c < 0x80 {
				return v
			}
		}
	}
	for len(b) > 0 {
		key := readVarint()
		f := field{num: int(key >> 3), wire: int(key & 7)}
		switch f.wire {
		case wireVarint:
			f.varint = readVarint()
		case wireFixed32:
			f.data, b = b[:4], b[4:]
		case wireBytes:
			n := readVarint()
			if uint64(len(b)) < n {
				t.Fatalf("field %d: length %d over %d remaining bytes", f.num, n, len(b))
			}
			f.data, b = b[:n], b[n:]
		default:
			t.Fatalf("unexpected wire type %d", f.wire)
		}
		out = append(out, f)
	}
	return out
}

func TestModelStructure(t *testing.T) {
	m := &Model{
		ProducerName: "linkedge-test", ProducerVersion: "1", ModelVersion: 4, DocString: "doc",
		Metadata: []KeyValue{{"k", "v"}},
		Graph: Graph{
			Name:    "g",
			Nodes:   []Node{{OpType: "Sigmoid", Inputs: []string{"x"}, Outputs: []string{"y"}, Attrs: []Attr{FloatAttr("f", 0)}}},
			Inputs:  []ValueInfo{FloatTensor("x", Sym("N"), Fixed(2))},
			Outputs: []ValueInfo{FloatTensor("y", Sym("N"), Fixed(2))},
		},
	}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got := map[int][]field{}
	for _, f := range decode(t, b) {
		got[f.num] = append(got[f.num], f)
	}
	if f := got[modelIRVersion]; len(f) != 1 || f[0].varint != DefaultIRVersion {
		t.Errorf("ir_version = %+v, want %d", f, DefaultIRVersion)
	}
	if f := got[modelProducerName]; len(f) != 1 || string(f[0].data) != "linkedge-test" {
		t.Errorf("producer_name = %+v", f)
	}
	if f := got[modelModelVersion]; len(f) != 1 || f[0].varint != 4 {
		t.Errorf("model_version = %+v", f)
	}
	if n := len(got[modelOpsetImport]); n != 2 {
		t.Errorf("%d opset imports, want 2", n)
	}
	if n := len(got[modelMetadataProps]); n != 1 {
		t.Errorf("%d metadata props, want 1", n)
	}
	graph := decode(t, got[modelGraph][0].data)
	var node []byte
	for _, f := range graph {
		if f.num == graphNode {
			node = f.data
		}
	}
	var attr []byte
	for _, f := range decode(t, node) {
		if f.num == nodeAttribute {
			attr = f.data
		}
	}
	// A FLOAT attribute of zero must still carry f and its type.
	var sawF, sawType bool
	for _, f := range decode(t, attr) {
		switch f.num {
		case attrF:
			sawF = bytes.Equal(f.data, []byte{0, 0, 0, 0})
		case attrType:
			sawType = f.varint == uint64(AttrFloat)
		}
	}
	if !sawF || !sawType {
		t.Errorf("zero FLOAT attribute lost its value (%v) or type (%v)", sawF, sawType)
	}
}

func TestMarshalRejects(t *testing.T) {
	ok := func() Model {
		return Model{Graph: Graph{
			Nodes:   []Node{{OpType: "Identity", Inputs: []string{"x"}, Outputs: []string{"y"}}},
			Inputs:  []ValueInfo{FloatTensor("x", Fixed(1))},
			Outputs: []ValueInfo{FloatTensor("y", Fixed(1))},
		}}
	}
	tests := []struct {
		name   string
		change func(m *Model)
	}{
		{"no outputs", func(m *Model) { m.Graph.Outputs = nil }},
		{"unnamed input", func(m *Model) { m.Graph.Inputs[0].Name = "" }},
		{"no element type", func(m *Model) { m.Graph.Outputs[0].ElemType = 0 }},
		{"no op type", func(m *Model) { m.Graph.Nodes[0].OpType = "" }},
		{"repeated attribute", func(m *Model) {
			m.Graph.Nodes[0].Attrs = []Attr{IntAttr("a", 1), IntAttr("a", 2)}
		}},
		{"unsupported attribute type", func(m *Model) { m.Graph.Nodes[0].Attrs = []Attr{{Name: "t", Type: 4}} }},
		{"initializer size", func(m *Model) {
			m.Graph.Initializers = []Tensor{{Name: "w", Dims: []int64{2, 2}, Floats: []float32{1}}}
		}},
		{"repeated metadata key", func(m *Model) { m.Metadata = []KeyValue{{"a", "1"}, {"a", "2"}} }},
		{"repeated opset", func(m *Model) { m.Opsets = []Opset{{"", 17}, {"", 13}} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := ok()
			if _, err := m.Marshal(); err != nil {
				t.Fatalf("base model: %v", err)
			}
			tc.change(&m)
			if _, err := m.Marshal(); !errors.Is(err, ErrInvalid) {
				t.Errorf("Marshal error = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestFloatBitsSurvive(t *testing.T) {
	var e encoder
	vals := []float32{float32(math.Inf(-1)), -0.0, 1e-45, math.MaxFloat32}
	e.packedFloat32s(1, vals)
	f := decode(t, e.b)
	if len(f) != 1 || len(f[0].data) != 16 {
		t.Fatalf("decoded %+v", f)
	}
}
