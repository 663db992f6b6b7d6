package aps

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// MissingValue is how the files write a missing value.
const MissingValue = "na"

// ErrFormat marks input that is not in the UCI APS CSV format.
var ErrFormat = errors.New("not an APS CSV file")

// maxLine bounds one line; a real row is under 2 KB.
const maxLine = 1 << 20

// ReadRows reads a file in the UCI APS format and calls fn once per data
// row, with its 1-based line number, its label (true = "pos") and a fresh
// slice of its 170 values (NaN where the file says "na").
//
// Lines before the header are skipped, however many there are: the real
// files open with a 20-line licence block, LinkEdge's synthetic files with a
// 20-line notice. The header is the first line starting with "class," and
// must name exactly the 171 columns "class" + Columns, in order, so a file
// with shifted or renamed columns fails loudly instead of feeding a model
// the wrong features. Blank lines are skipped; anything else that is not a
// well-formed row is an error naming its line.
func ReadRows(r io.Reader, fn func(line int, label bool, x []float32) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	line := 0
	header := false
	for sc.Scan() {
		line++
		text := strings.TrimRight(sc.Text(), "\r")
		if line == 1 {
			text = strings.TrimPrefix(text, "\uFEFF")
		}
		if !header {
			if strings.HasPrefix(text, ClassColumn+",") {
				if err := checkHeader(text); err != nil {
					return fmt.Errorf("%w: line %d: %w", ErrFormat, line, err)
				}
				header = true
			}
			continue
		}
		if strings.TrimSpace(text) == "" {
			continue
		}
		label, x, err := parseRow(text)
		if err != nil {
			return fmt.Errorf("%w: line %d: %w", ErrFormat, line, err)
		}
		if err := fn(line, label, x); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%w: after line %d: %w", ErrFormat, line, err)
	}
	if !header {
		return fmt.Errorf("%w: no header line starting with %q in %d lines", ErrFormat, ClassColumn+",", line)
	}
	return nil
}

func checkHeader(text string) error {
	fields := strings.Split(text, ",")
	if len(fields) != len(Columns)+1 {
		return fmt.Errorf("header has %d columns, want %d (class + %d features)", len(fields), len(Columns)+1, len(Columns))
	}
	for i, name := range Columns {
		if got := strings.TrimSpace(fields[i+1]); got != name {
			return fmt.Errorf("header column %d is %q, want %q", i+2, got, name)
		}
	}
	return nil
}

func parseRow(text string) (bool, []float32, error) {
	fields := strings.Split(text, ",")
	if len(fields) != len(Columns)+1 {
		return false, nil, fmt.Errorf("row has %d fields, want %d", len(fields), len(Columns)+1)
	}
	var label bool
	switch strings.TrimSpace(fields[0]) {
	case LabelNeg:
	case LabelPos:
		label = true
	default:
		return false, nil, fmt.Errorf("class is %q, want %q or %q", fields[0], LabelNeg, LabelPos)
	}
	x := make([]float32, len(Columns))
	for i, f := range fields[1:] {
		f = strings.TrimSpace(f)
		if f == MissingValue {
			x[i] = float32(math.NaN())
			continue
		}
		v, err := strconv.ParseFloat(f, 32)
		if err != nil || !isPlainNumber(f) {
			return false, nil, fmt.Errorf("column %s: %q is not a number or %q", Columns[i], f, MissingValue)
		}
		if math.IsInf(v, 0) || math.IsNaN(v) {
			return false, nil, fmt.Errorf("column %s: %q is out of float32 range", Columns[i], f)
		}
		x[i] = float32(v)
	}
	return label, x, nil
}

// isPlainNumber rejects spellings ParseFloat accepts but the files never
// use: "nan", "inf", hexadecimal, underscores.
func isPlainNumber(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && c != '.' && c != '-' && c != '+' && c != 'e' && c != 'E' {
			return false
		}
	}
	return s != ""
}

// LoadUCI reads a whole file in the UCI APS format (see ReadRows).
func LoadUCI(r io.Reader) (*Dataset, error) {
	ds := &Dataset{Features: append([]string(nil), Columns...)}
	err := ReadRows(r, func(_ int, label bool, x []float32) error {
		ds.X = append(ds.X, x)
		ds.Y = append(ds.Y, label)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if ds.Len() == 0 {
		return nil, fmt.Errorf("%w: header but no data rows", ErrFormat)
	}
	return ds, nil
}

// LoadUCIFile is LoadUCI on a file, e.g. aps_failure_training_set.csv.
func LoadUCIFile(path string) (*Dataset, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load aps data: %w", err)
	}
	defer f.Close()
	ds, err := LoadUCI(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	return ds, nil
}

// WriteCSV writes ds in the UCI APS format: the preamble lines, the header
// "class,aa_000,…", then one row per line with "na" for missing values and
// the shortest decimal that reads back to the same float32. ds must have the
// APS columns in order, so that LoadUCI reads the file back unchanged.
func WriteCSV(w io.Writer, ds *Dataset, preamble []string) error {
	if err := ds.Validate(); err != nil {
		return fmt.Errorf("write aps csv: %w", err)
	}
	if len(ds.Features) != len(Columns) {
		return fmt.Errorf("write aps csv: dataset has %d features, want the %d APS columns", len(ds.Features), len(Columns))
	}
	for i, name := range Columns {
		if ds.Features[i] != name {
			return fmt.Errorf("write aps csv: feature %d is %q, want %q", i, ds.Features[i], name)
		}
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	for i, p := range preamble {
		if strings.ContainsAny(p, "\r\n") || strings.HasPrefix(p, ClassColumn+",") {
			return fmt.Errorf("write aps csv: preamble line %d would break the format", i+1)
		}
		bw.WriteString(p)
		bw.WriteByte('\n')
	}
	bw.WriteString(ClassColumn)
	for _, name := range Columns {
		bw.WriteByte(',')
		bw.WriteString(name)
	}
	bw.WriteByte('\n')
	buf := make([]byte, 0, 2048)
	for i, row := range ds.X {
		buf = buf[:0]
		if ds.Y[i] {
			buf = append(buf, LabelPos...)
		} else {
			buf = append(buf, LabelNeg...)
		}
		for _, v := range row {
			buf = append(buf, ',')
			if math.IsNaN(float64(v)) {
				buf = append(buf, MissingValue...)
				continue
			}
			buf = strconv.AppendFloat(buf, float64(v), 'f', -1, 32)
		}
		buf = append(buf, '\n')
		if _, err := bw.Write(buf); err != nil {
			return fmt.Errorf("write aps csv: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write aps csv: %w", err)
	}
	return nil
}

// SyntheticPreamble is the 20-line notice that opens a file of SYNTHETIC
// data, in place of the real files' licence block (so the header is on line
// 21 in both). It says plainly that the rows are made up.
func SyntheticPreamble(seed int64, rows, positives int) []string {
	return []string{
		"SYNTHETIC DATA - NOT THE SCANIA APS DATA SET",
		"",
		"This file was generated by LinkEdge (github.com/linkedge/linkedge), package inference/aps.",
		fmt.Sprintf("Generator: aps.Generate, seed %d: %d rows, %d positive (pos), %d negative (neg).", seed, rows, positives, rows-positives),
		"",
		"Every value in it is invented by a seeded random process. It contains no",
		"measurement from any vehicle and is not derived from the real data set.",
		"It only imitates the layout and shape of the 'APS Failure at Scania Trucks'",
		"files of the UCI Machine Learning Repository (dataset 421), so that the same",
		"loader and trainer run on both: the same 171 columns, 'na' for missing values,",
		"'neg'/'pos' labels, and this 20-line block before the header.",
		"",
		"Models trained on this file say nothing about real trucks.",
		"To work with the real data, obtain the original files from the UCI repository",
		"under their own licence and load them with aps.LoadUCIFile.",
		"",
		"Challenge cost metric (same as the real task): cost = 10*FP + 500*FN.",
		"",
		"Regenerate: linkedge toolkit gen-aps --seed N --rows N --out FILE.csv",
		"",
	}
}
