// Package onnx writes ONNX model files (onnx.proto's ModelProto) without a
// protobuf library: the few messages a model builder needs are encoded by
// hand in the protobuf wire format, with the field numbers of onnx.proto.
//
// It is a writer only. It covers models, graphs, nodes with FLOAT, INT,
// STRING, FLOATS, INTS and STRINGS attributes, tensor value infos with fixed
// or symbolic dimensions, and float initializers: enough for tree ensembles
// and small arithmetic graphs, which is what LinkEdge's trainers export.
// ONNX Runtime is the judge of the result; the tests load every kind of
// model built here into it.
package onnx

// Opset domains.
const (
	DomainONNX = ""           // ai.onnx, the default operator set
	DomainML   = "ai.onnx.ml" // classical machine learning operators
)

// Defaults used when a Model leaves them unset.
const (
	DefaultIRVersion = 8
	DefaultOpset     = 17 // ai.onnx
	DefaultMLOpset   = 3  // ai.onnx.ml (TreeEnsembleRegressor with *_as_tensor)
)

// DataType is TensorProto.DataType.
type DataType int32

// The element types used here; values as in onnx.proto.
const (
	Float  DataType = 1
	Int64  DataType = 7
	String DataType = 8
	Double DataType = 11
)

// AttrType is AttributeProto.AttributeType.
type AttrType int32

// Supported attribute types; values as in onnx.proto.
const (
	AttrFloat   AttrType = 1
	AttrInt     AttrType = 2
	AttrString  AttrType = 3
	AttrFloats  AttrType = 6
	AttrInts    AttrType = 7
	AttrStrings AttrType = 8
)

// Model is a ModelProto.
type Model struct {
	// IRVersion zero means DefaultIRVersion.
	IRVersion       int64
	ProducerName    string
	ProducerVersion string
	Domain          string
	ModelVersion    int64
	DocString       string
	// Opsets nil means ai.onnx DefaultOpset and ai.onnx.ml DefaultMLOpset.
	Opsets []Opset
	// Metadata becomes metadata_props; ONNX Runtime shows it as the model's
	// custom metadata map. Keys must be distinct.
	Metadata []KeyValue
	Graph    Graph
}

// Opset is an OperatorSetIdProto.
type Opset struct {
	Domain  string
	Version int64
}

// DefaultOpsets is what a Model with nil Opsets imports.
func DefaultOpsets() []Opset {
	return []Opset{{DomainONNX, DefaultOpset}, {DomainML, DefaultMLOpset}}
}

// KeyValue is a StringStringEntryProto.
type KeyValue struct {
	Key, Value string
}

// Graph is a GraphProto. Nodes must be in topological order.
type Graph struct {
	Name         string
	DocString    string
	Nodes        []Node
	Inputs       []ValueInfo
	Outputs      []ValueInfo
	Initializers []Tensor
}

// Node is a NodeProto: one operator call.
type Node struct {
	Name      string
	OpType    string
	Domain    string
	DocString string
	Inputs    []string
	Outputs   []string
	Attrs     []Attr
}

// Attr is an AttributeProto. Type selects which value field is written.
type Attr struct {
	Name    string
	Type    AttrType
	F       float32
	I       int64
	S       string
	Floats  []float32
	Ints    []int64
	Strings []string
}

// FloatAttr is a FLOAT attribute.
func FloatAttr(name string, v float32) Attr { return Attr{Name: name, Type: AttrFloat, F: v} }

// IntAttr is an INT attribute.
func IntAttr(name string, v int64) Attr { return Attr{Name: name, Type: AttrInt, I: v} }

// StringAttr is a STRING attribute.
func StringAttr(name, v string) Attr { return Attr{Name: name, Type: AttrString, S: v} }

// FloatsAttr is a FLOATS attribute.
func FloatsAttr(name string, v []float32) Attr { return Attr{Name: name, Type: AttrFloats, Floats: v} }

// IntsAttr is an INTS attribute.
func IntsAttr(name string, v []int64) Attr { return Attr{Name: name, Type: AttrInts, Ints: v} }

// StringsAttr is a STRINGS attribute.
func StringsAttr(name string, v []string) Attr {
	return Attr{Name: name, Type: AttrStrings, Strings: v}
}

// ValueInfo is a ValueInfoProto for a tensor: its name, element type and
// shape. A nil Shape declares a tensor of unknown rank.
type ValueInfo struct {
	Name      string
	ElemType  DataType
	Shape     []Dim
	DocString string
}

// Dim is one dimension: a fixed size, or a symbolic name such as "N" for a
// batch size chosen at run time.
type Dim struct {
	Value int64
	Param string
}

// Fixed is a dimension of known size.
func Fixed(n int64) Dim { return Dim{Value: n} }

// Sym is a symbolic dimension.
func Sym(name string) Dim { return Dim{Param: name} }

// FloatTensor describes a float tensor value of the given shape.
func FloatTensor(name string, shape ...Dim) ValueInfo {
	return ValueInfo{Name: name, ElemType: Float, Shape: shape}
}

// Tensor is a float TensorProto used as an initializer (a constant input).
type Tensor struct {
	Name   string
	Dims   []int64
	Floats []float32
}
