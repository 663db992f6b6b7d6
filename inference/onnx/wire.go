package onnx

import (
	"encoding/binary"
	"math"
)

// Protocol buffer wire types (https://protobuf.dev/programming-guides/encoding/).
const (
	wireVarint  = 0
	wireBytes   = 2
	wireFixed32 = 5
)

// encoder appends protobuf wire format to a byte slice. It knows nothing of
// ONNX; the message encoders in proto.go choose field numbers and presence.
type encoder struct {
	b []byte
}

func (e *encoder) varint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }

func (e *encoder) tag(field, wire int) { e.varint(uint64(field)<<3 | uint64(wire)) }

// int64 writes a varint field. Negative values take ten bytes, as protobuf's
// int64 (not sint64) demands.
func (e *encoder) int64(field int, v int64) {
	e.tag(field, wireVarint)
	e.varint(uint64(v))
}

func (e *encoder) float32(field int, v float32) {
	e.tag(field, wireFixed32)
	e.b = binary.LittleEndian.AppendUint32(e.b, math.Float32bits(v))
}

func (e *encoder) bytes(field int, v []byte) {
	e.tag(field, wireBytes)
	e.varint(uint64(len(v)))
	e.b = append(e.b, v...)
}

func (e *encoder) string(field int, v string) {
	e.tag(field, wireBytes)
	e.varint(uint64(len(v)))
	e.b = append(e.b, v...)
}

// optString writes s only when it is not empty: for proto2 optional strings
// an absent field and an empty one mean the same to ONNX readers.
func (e *encoder) optString(field int, s string) {
	if s != "" {
		e.string(field, s)
	}
}

// packedInt64s writes a packed repeated int64 field. ONNX's proto2 schema
// does not mark every such field packed, but protobuf parsers must accept
// both encodings for repeated scalars, and packed is smaller.
func (e *encoder) packedInt64s(field int, vs []int64) {
	if len(vs) == 0 {
		return
	}
	n := 0
	for _, v := range vs {
		n += varintLen(uint64(v))
	}
	e.tag(field, wireBytes)
	e.varint(uint64(n))
	for _, v := range vs {
		e.varint(uint64(v))
	}
}

// packedFloat32s writes a packed repeated float field.
func (e *encoder) packedFloat32s(field int, vs []float32) {
	if len(vs) == 0 {
		return
	}
	e.tag(field, wireBytes)
	e.varint(uint64(4 * len(vs)))
	for _, v := range vs {
		e.b = binary.LittleEndian.AppendUint32(e.b, math.Float32bits(v))
	}
}

// message writes a length-delimited sub-message built by fn.
func (e *encoder) message(field int, fn func(*encoder)) {
	var sub encoder
	fn(&sub)
	e.bytes(field, sub.b)
}

func varintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
