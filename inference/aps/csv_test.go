package aps

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var header = ClassColumn + "," + strings.Join(Columns, ",")

// row builds a data line: label, then 170 values, all "0" unless set.
func row(label string, set map[int]string) string {
	vals := make([]string, len(Columns))
	for i := range vals {
		vals[i] = "0"
		if v, ok := set[i]; ok {
			vals[i] = v
		}
	}
	return label + "," + strings.Join(vals, ",")
}

func TestLoadUCI(t *testing.T) {
	licence := strings.Repeat("This file is part of APS Failure and Operational Data for Scania Trucks, \"quoted\", commas\n", 20)
	in := licence + header + "\r\n" +
		row("neg", map[int]string{0: "76698", 1: "na", 2: "2130706438"}) + "\r\n" +
		"\n" +
		row("pos", map[int]string{5: "59.53", 169: "na"}) + "\n"
	ds, err := LoadUCI(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if ds.Len() != 2 || ds.Y[0] || !ds.Y[1] || len(ds.Features) != 170 {
		t.Fatalf("got %d rows, labels %v", ds.Len(), ds.Y)
	}
	if ds.X[0][0] != 76698 || !math.IsNaN(float64(ds.X[0][1])) || ds.X[0][2] != float32(2130706438) {
		t.Errorf("row 1 = %v", ds.X[0][:3])
	}
	if ds.X[1][5] != float32(59.53) || !math.IsNaN(float64(ds.X[1][169])) {
		t.Errorf("row 2 values wrong: %v %v", ds.X[1][5], ds.X[1][169])
	}
}

func TestLoadUCIRejects(t *testing.T) {
	pre := "licence line\n"
	tests := []struct {
		name, in, want string
	}{
		{"no header", pre + row("neg", nil) + "\n", "no header"},
		{"empty", "", "no header"},
		{"header too short", "class,aa_000,ab_000\n", "header has 3 columns"},
		{"header renamed", strings.Replace(header, "am_0", "am_000", 1) + "\n", `header column 23 is "am_000", want "am_0"`},
		{"header only", header + "\n", "no data rows"},
		{"bad label", pre + header + "\n" + row("maybe", nil) + "\n", `line 3: class is "maybe"`},
		{"short row", pre + header + "\n" + row("neg", nil) + "\nneg,1,2\n", "line 4: row has 3 fields"},
		{"not a number", pre + header + "\n" + row("neg", map[int]string{3: "abc"}) + "\n", `line 3: column ad_000: "abc"`},
		{"nan spelled out", pre + header + "\n" + row("pos", map[int]string{0: "NaN"}) + "\n", "aa_000"},
		{"infinity", pre + header + "\n" + row("pos", map[int]string{0: "inf"}) + "\n", "aa_000"},
		{"out of float32 range", pre + header + "\n" + row("pos", map[int]string{1: "1e39"}) + "\n", "ab_000"},
		{"empty value", pre + header + "\n" + row("neg", map[int]string{7: ""}) + "\n", "ag_001"},
		{"hex", pre + header + "\n" + row("neg", map[int]string{0: "0x10"}) + "\n", "aa_000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadUCI(strings.NewReader(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one containing %q", err, tc.want)
			}
			if !errors.Is(err, ErrFormat) {
				t.Errorf("error %v is not ErrFormat", err)
			}
		})
	}
}

func TestWriteCSVRoundTrip(t *testing.T) {
	ds := Generate(11, 500, 0.05)
	var buf bytes.Buffer
	if err := WriteCSV(&buf, ds, SyntheticPreamble(11, ds.Len(), ds.Positives())); err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitN(buf.String(), "\n", 22)
	if !strings.HasPrefix(lines[0], "SYNTHETIC") || lines[20] != header {
		t.Errorf("want a SYNTHETIC notice and the header on line 21; line 1 %q, line 21 %.40q", lines[0], lines[20])
	}
	if strings.Contains(buf.String(), "Copyright") {
		t.Error("the synthetic preamble must not carry a licence text")
	}
	p := filepath.Join(t.TempDir(), "aps.csv")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	back, err := LoadUCIFile(p)
	if err != nil {
		t.Fatal(err)
	}
	assertSameData(t, ds, back)
}

func TestWriteCSVRejects(t *testing.T) {
	ds := Generate(1, 3, 0)
	var buf bytes.Buffer
	if err := WriteCSV(&buf, ds, []string{"a\nb"}); err == nil {
		t.Error("preamble with a newline accepted")
	}
	if err := WriteCSV(&buf, ds, []string{"class,x"}); err == nil {
		t.Error("preamble that looks like the header accepted")
	}
	other := &Dataset{Features: []string{"x"}, X: [][]float32{{1}}, Y: []bool{true}}
	if err := WriteCSV(&buf, other, nil); err == nil {
		t.Error("non-APS columns accepted")
	}
}

func assertSameData(t *testing.T, a, b *Dataset) {
	t.Helper()
	if a.Len() != b.Len() {
		t.Fatalf("%d rows vs %d", a.Len(), b.Len())
	}
	for i := range a.X {
		if a.Y[i] != b.Y[i] {
			t.Fatalf("row %d label differs", i)
		}
		for j := range a.X[i] {
			x, y := a.X[i][j], b.X[i][j]
			if math.Float32bits(x) != math.Float32bits(y) && !(x != x && y != y) {
				t.Fatalf("row %d column %s: %v vs %v", i, Columns[j], x, y)
			}
		}
	}
}
