package server

import (
	"math"
	"strconv"
	"testing"
)

// strconv32 is the reference parseDecimal32 must agree with.
func strconv32(s string) (float32, bool) {
	v, err := strconv.ParseFloat(s, 32)
	if err != nil {
		return 0, false
	}
	return float32(v), true
}

func TestParseDecimal32(t *testing.T) {
	for _, tc := range []struct {
		in     string
		fast   bool // whether the fast path should take it
		reason string
	}{
		{"0", true, "zero"},
		{"-0", true, "negative zero"},
		{"42", true, "integer"},
		{"2130706438", true, "APS counter above 2^24, rounds once"},
		{"9999999999999999999", true, "19 digits still fit in uint64"},
		{"99999999999999999999", false, "20 digits do not"},
		{"16777217", true, "2^24+1 rounds to even"},
		{"0.1", true, "short decimal"},
		{"-3.25", true, "negative decimal"},
		{"+7.5", true, "plus sign"},
		{".5", true, "no integer part"},
		{"5.", true, "no fraction digits"},
		{"1.5e3", true, "exponent folds into an integer"},
		{"1e-5", true, "small exponent"},
		{"1234.567e-2", true, "mantissa below 2^24"},
		{"0.1234567890123", false, "too many digits for one exact division"},
		{"1e-11", false, "power of ten beyond the exact table"},
		{"1e39", false, "overflows uint64 on the way"},
		{"1e", false, "exponent without digits"},
		{"e5", false, "no mantissa"},
		{".", false, "no digits"},
		{"", false, "empty"},
		{"1.2.3", false, "two dots"},
		{"0x10", false, "hex goes to strconv"},
		{"inf", false, "words go to strconv"},
		{"1_000", false, "underscores go to strconv"},
		{"1e+0004", false, "four exponent digits"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			v, ok := parseDecimal32([]byte(tc.in))
			if ok != tc.fast {
				t.Fatalf("fast path took it: %v, want %v (%s)", ok, tc.fast, tc.reason)
			}
			if !ok {
				return
			}
			want, wok := strconv32(tc.in)
			if !wok || math.Float32bits(v) != math.Float32bits(want) {
				t.Fatalf("got %v (%#x), strconv gives %v (%#x, ok %v)", v, math.Float32bits(v), want, math.Float32bits(want), wok)
			}
		})
	}
}

// FuzzParseDecimal32 checks that whatever the fast path accepts, it converts
// bit for bit as strconv.ParseFloat(s, 32) does.
func FuzzParseDecimal32(f *testing.F) {
	for _, s := range []string{"0", "2130706438", "0.1", "-1.5e3", "16777217", "9007199254740993", "3.4028235e38", "1e-10", "0.00001"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, ok := parseDecimal32([]byte(s))
		if !ok {
			return
		}
		want, wok := strconv32(s)
		if !wok {
			t.Fatalf("fast path accepted %q, strconv refuses it", s)
		}
		if math.Float32bits(v) != math.Float32bits(want) {
			t.Fatalf("%q: got %v (%#x), strconv gives %v (%#x)", s, v, math.Float32bits(v), want, math.Float32bits(want))
		}
	})
}

func BenchmarkParseField(b *testing.B) {
	fields := [][]byte{[]byte("76698"), []byte("na"), []byte("2130706438"), []byte("0.5"), []byte("280"), []byte("0")}
	for b.Loop() {
		for _, f := range fields {
			if _, err := parseField(f); err != nil {
				b.Fatal(err)
			}
		}
	}
}
