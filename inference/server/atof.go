package server

import "math"

// parseDecimal32 converts the common shapes of a CSV number — an optional
// sign, digits, an optional fraction and an optional exponent — to the
// float32 strconv.ParseFloat(s, 32) gives, without a string copy. It reports
// ok=false for anything else or anything it cannot round exactly, and the
// caller then falls back to strconv, so the result never differs from it.
//
// It exists because parsing 170 fields is a large share of a single-row
// request's cost; the fast path covers the APS data (integers and short
// decimals) with one correctly rounded operation per field:
//   - an integer below 2^64 (exponent folded in) converts with one rounding;
//   - a mantissa below 2^24 divided by an exact power of ten up to 1e10 is
//     one IEEE division of two exact float32 values, so one rounding too.
func parseDecimal32(b []byte) (v float32, ok bool) {
	i, neg := 0, false
	if len(b) > 0 && (b[0] == '+' || b[0] == '-') {
		neg = b[0] == '-'
		i++
	}
	var mant uint64
	digits, exp := 0, 0
	sawDot := false
	for ; i < len(b); i++ {
		c := b[i]
		switch {
		case c >= '0' && c <= '9':
			if mant > (math.MaxUint64-9)/10 {
				return 0, false
			}
			mant = mant*10 + uint64(c-'0')
			digits++
			if sawDot {
				exp--
			}
		case c == '.' && !sawDot:
			sawDot = true
		case c == 'e' || c == 'E':
			if digits == 0 {
				return 0, false
			}
			e, ok := parseExp(b[i+1:])
			if !ok {
				return 0, false
			}
			exp += e
			i = len(b)
		default:
			return 0, false
		}
	}
	if digits == 0 {
		return 0, false
	}
	switch {
	case mant == 0:
		v = 0
	case exp >= 0:
		for ; exp > 0; exp-- {
			if mant > math.MaxUint64/10 {
				return 0, false
			}
			mant *= 10
		}
		v = float32(mant)
	case mant < 1<<24 && exp >= -10:
		v = float32(mant) / pow10f32[-exp]
	default:
		return 0, false
	}
	if neg {
		v = -v
	}
	return v, true
}

// parseExp reads an exponent's optional sign and at most three digits.
func parseExp(b []byte) (int, bool) {
	neg := false
	if len(b) > 0 && (b[0] == '+' || b[0] == '-') {
		neg = b[0] == '-'
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 3 {
		return 0, false
	}
	e := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		e = e*10 + int(c-'0')
	}
	if neg {
		e = -e
	}
	return e, true
}

var pow10f32 = [...]float32{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10}
