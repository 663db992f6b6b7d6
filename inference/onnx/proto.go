package onnx

import (
	"errors"
	"fmt"
)

// ErrInvalid marks a model that Marshal refuses to encode.
var ErrInvalid = errors.New("invalid onnx model")

// Field numbers from onnx.proto, grouped by message. Only the fields this
// writer emits are listed.
const (
	modelIRVersion       = 1
	modelProducerName    = 2
	modelProducerVersion = 3
	modelDomain          = 4
	modelModelVersion    = 5
	modelDocString       = 6
	modelGraph           = 7
	modelOpsetImport     = 8
	modelMetadataProps   = 14

	opsetDomain  = 1
	opsetVersion = 2

	entryKey   = 1
	entryValue = 2

	graphNode        = 1
	graphName        = 2
	graphInitializer = 5
	graphDocString   = 10
	graphInput       = 11
	graphOutput      = 12

	nodeInput     = 1
	nodeOutput    = 2
	nodeName      = 3
	nodeOpType    = 4
	nodeAttribute = 5
	nodeDocString = 6
	nodeDomain    = 7

	attrName    = 1
	attrF       = 2
	attrI       = 3
	attrS       = 4
	attrFloats  = 7
	attrInts    = 8
	attrStrings = 9
	attrType    = 20

	valueInfoName      = 1
	valueInfoType      = 2
	valueInfoDocString = 3

	typeTensorType = 1 // TypeProto.tensor_type
	tensorElemType = 1 // TypeProto.Tensor.elem_type
	tensorShape    = 2 // TypeProto.Tensor.shape
	shapeDim       = 1 // TensorShapeProto.dim
	dimValue       = 1 // TensorShapeProto.Dimension.dim_value
	dimParam       = 2 // TensorShapeProto.Dimension.dim_param

	tensorDims      = 1
	tensorDataType  = 2
	tensorFloatData = 4
	tensorName      = 8
)

// Marshal encodes the model as an .onnx file. It checks what a reader would
// otherwise reject with a less helpful message (empty names, duplicate
// attributes, initializer sizes) but not operator semantics: that is ONNX
// Runtime's job when it loads the model.
func (m *Model) Marshal() ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	var e encoder
	ir := m.IRVersion
	if ir == 0 {
		ir = DefaultIRVersion
	}
	e.int64(modelIRVersion, ir)
	e.optString(modelProducerName, m.ProducerName)
	e.optString(modelProducerVersion, m.ProducerVersion)
	e.optString(modelDomain, m.Domain)
	if m.ModelVersion != 0 {
		e.int64(modelModelVersion, m.ModelVersion)
	}
	e.optString(modelDocString, m.DocString)
	e.message(modelGraph, m.Graph.encode)
	opsets := m.Opsets
	if opsets == nil {
		opsets = DefaultOpsets()
	}
	for _, o := range opsets {
		e.message(modelOpsetImport, func(s *encoder) {
			s.optString(opsetDomain, o.Domain)
			s.int64(opsetVersion, o.Version)
		})
	}
	for _, kv := range m.Metadata {
		e.message(modelMetadataProps, kv.encode)
	}
	return e.b, nil
}

func (kv KeyValue) encode(e *encoder) {
	e.string(entryKey, kv.Key)
	e.string(entryValue, kv.Value)
}

func (g *Graph) encode(e *encoder) {
	for i := range g.Nodes {
		e.message(graphNode, g.Nodes[i].encode)
	}
	e.optString(graphName, g.Name)
	for i := range g.Initializers {
		e.message(graphInitializer, g.Initializers[i].encode)
	}
	e.optString(graphDocString, g.DocString)
	for i := range g.Inputs {
		e.message(graphInput, g.Inputs[i].encode)
	}
	for i := range g.Outputs {
		e.message(graphOutput, g.Outputs[i].encode)
	}
}

func (n *Node) encode(e *encoder) {
	// Names are written even when empty: an empty input name means "optional
	// input omitted" and positions matter.
	for _, in := range n.Inputs {
		e.string(nodeInput, in)
	}
	for _, out := range n.Outputs {
		e.string(nodeOutput, out)
	}
	e.optString(nodeName, n.Name)
	e.string(nodeOpType, n.OpType)
	for i := range n.Attrs {
		e.message(nodeAttribute, n.Attrs[i].encode)
	}
	e.optString(nodeDocString, n.DocString)
	e.optString(nodeDomain, n.Domain)
}

func (a *Attr) encode(e *encoder) {
	e.string(attrName, a.Name)
	// The value field matching Type is always written, even when it is zero:
	// a FLOAT attribute of 0.0 must still carry its value.
	switch a.Type {
	case AttrFloat:
		e.float32(attrF, a.F)
	case AttrInt:
		e.int64(attrI, a.I)
	case AttrString:
		e.string(attrS, a.S)
	case AttrFloats:
		e.packedFloat32s(attrFloats, a.Floats)
	case AttrInts:
		e.packedInt64s(attrInts, a.Ints)
	case AttrStrings:
		for _, s := range a.Strings {
			e.string(attrStrings, s)
		}
	}
	e.int64(attrType, int64(a.Type))
}

func (v *ValueInfo) encode(e *encoder) {
	e.string(valueInfoName, v.Name)
	e.message(valueInfoType, func(t *encoder) {
		t.message(typeTensorType, func(tt *encoder) {
			tt.int64(tensorElemType, int64(v.ElemType))
			if v.Shape == nil {
				return
			}
			tt.message(tensorShape, func(sh *encoder) {
				for _, d := range v.Shape {
					sh.message(shapeDim, func(de *encoder) {
						if d.Param != "" {
							de.string(dimParam, d.Param)
						} else {
							de.int64(dimValue, d.Value)
						}
					})
				}
			})
		})
	})
	e.optString(valueInfoDocString, v.DocString)
}

func (t *Tensor) encode(e *encoder) {
	e.packedInt64s(tensorDims, t.Dims)
	e.int64(tensorDataType, int64(Float))
	e.packedFloat32s(tensorFloatData, t.Floats)
	e.string(tensorName, t.Name)
}

func (m *Model) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	keys := map[string]bool{}
	for _, kv := range m.Metadata {
		if kv.Key == "" || keys[kv.Key] {
			return bad("metadata key %q is empty or repeated", kv.Key)
		}
		keys[kv.Key] = true
	}
	domains := map[string]bool{}
	for _, o := range m.Opsets {
		if domains[o.Domain] || o.Version < 1 {
			return bad("opset %q is repeated or has version %d", o.Domain, o.Version)
		}
		domains[o.Domain] = true
	}
	g := &m.Graph
	if len(g.Outputs) == 0 {
		return bad("graph %q has no outputs", g.Name)
	}
	for _, v := range append(append([]ValueInfo(nil), g.Inputs...), g.Outputs...) {
		if v.Name == "" {
			return bad("graph input or output without a name")
		}
		if v.ElemType <= 0 {
			return bad("value %q has no element type", v.Name)
		}
	}
	for i, n := range g.Nodes {
		if n.OpType == "" {
			return bad("node %d (%q) has no op_type", i, n.Name)
		}
		seen := map[string]bool{}
		for _, a := range n.Attrs {
			if a.Name == "" || seen[a.Name] {
				return bad("node %d (%s): attribute %q is empty or repeated", i, n.OpType, a.Name)
			}
			seen[a.Name] = true
			switch a.Type {
			case AttrFloat, AttrInt, AttrString, AttrFloats, AttrInts, AttrStrings:
			default:
				return bad("node %d (%s): attribute %q has unsupported type %d", i, n.OpType, a.Name, a.Type)
			}
		}
	}
	for _, t := range g.Initializers {
		n := int64(1)
		for _, d := range t.Dims {
			if d < 0 {
				return bad("initializer %q has negative dimension %d", t.Name, d)
			}
			n *= d
		}
		if t.Name == "" || n != int64(len(t.Floats)) {
			return bad("initializer %q has %d values for dims %v", t.Name, len(t.Floats), t.Dims)
		}
	}
	return nil
}
