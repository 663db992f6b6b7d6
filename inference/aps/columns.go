// Package aps holds the "APS Failure at Scania Trucks" data set as LinkEdge
// uses it: the column schema of the real UCI files, a loader and writer for
// that CSV format, the challenge cost, and a seeded generator of SYNTHETIC
// data in the same shape.
//
// The real files cannot be shipped or fetched here, so the project's demo
// models are trained on SYNTHETIC data made by [Generate]. That data only
// imitates the real set's shape (heavy-tailed counters, histogram bins,
// missing values, 1.7% positives); it carries no information about real
// trucks. Users who have the UCI files load them with [LoadUCIFile].
package aps

// ClassColumn is the label column, the first column of every file.
const ClassColumn = "class"

// The two class labels, as written in the files.
const (
	LabelNeg = "neg"
	LabelPos = "pos"
)

// Labels are the negative and positive label in that order, the shape
// bundle.Metadata.Labels wants.
var Labels = [2]string{LabelNeg, LabelPos}

// Columns lists the 170 anonymised feature names in the order of the real
// file header (after "class"). The names keep the real set's quirks: "am_0"
// and "ec_00" are short, and no prefix ends in "w" (there is no aw_000,
// bw_000, cw_000 or dw_000). Seven prefixes are 10-bin histograms
// (ag, ay, az, ba, cn, cs, ee).
var Columns = buildColumns()

// HistogramGroups are the prefixes whose columns xx_000..xx_009 are the bins
// of one histogram.
var HistogramGroups = []string{"ag", "ay", "az", "ba", "cn", "cs", "ee"}

// columnLayout is the header written compactly: a prefix alone is "xx_000",
// a prefix with "*" is the ten bins xx_000..xx_009, and a full name with an
// underscore is taken as is.
var columnLayout = []string{
	"aa", "ab", "ac", "ad", "ae", "af", "ag*", "ah", "ai", "aj", "ak", "al", "am_0",
	"an", "ao", "ap", "aq", "ar", "as", "at", "au", "av", "ax", "ay*", "az*", "ba*",
	"bb", "bc", "bd", "be", "bf", "bg", "bh", "bi", "bj", "bk", "bl", "bm", "bn", "bo",
	"bp", "bq", "br", "bs", "bt", "bu", "bv", "bx", "by", "bz",
	"ca", "cb", "cc", "cd", "ce", "cf", "cg", "ch", "ci", "cj", "ck", "cl", "cm", "cn*",
	"co", "cp", "cq", "cr", "cs*", "ct", "cu", "cv", "cx", "cy", "cz",
	"da", "db", "dc", "dd", "de", "df", "dg", "dh", "di", "dj", "dk", "dl", "dm", "dn",
	"do", "dp", "dq", "dr", "ds", "dt", "du", "dv", "dx", "dy", "dz",
	"ea", "eb", "ec_00", "ed", "ee*", "ef", "eg",
}

func buildColumns() []string {
	var out []string
	for _, c := range columnLayout {
		switch {
		case len(c) == 3 && c[2] == '*':
			for i := 0; i < 10; i++ {
				out = append(out, c[:2]+"_00"+string(rune('0'+i)))
			}
		case len(c) == 2:
			out = append(out, c+"_000")
		default:
			out = append(out, c)
		}
	}
	return out
}

// ColumnIndex returns the position of a feature name in Columns, or -1.
func ColumnIndex(name string) int {
	for i, c := range Columns {
		if c == name {
			return i
		}
	}
	return -1
}
