package server

import (
	"errors"
	"math"
	"strings"
	"testing"
)

var feats3 = []string{"aa_000", "ab_000", "ac_000"}

func TestParseCSV(t *testing.T) {
	tests := []struct {
		name string
		body string
		rows int
		nan  []int // indexes into the first row that must be NaN
		err  string
	}{
		{"one row", "1,2,3", 1, nil, ""},
		{"na values", "1,na,\n", 1, []int{1, 2}, ""},
		{"crlf and blank lines", "1,2,3\r\n\r\n4,5,6\r\n", 2, nil, ""},
		{"quoted", `"1","na",3`, 1, []int{1}, ""},
		{"spaces", " 1 , 2 ,3 ", 1, nil, ""},
		{"too few", "1,2", 0, nil, "line 1 has 2 fields; the model takes 3"},
		{"too many", "1,2,3,4", 0, nil, "more than 3 fields"},
		{"text", "1,abc,3", 0, nil, `field 2: "abc" is not a number`},
		{"second line bad", "1,2,3\n1,2", 0, nil, "line 2 has 2 fields"},
		{"empty", "\n\n", 0, nil, "no rows"},
		{"overflow", "1,1e99,3", 0, nil, "out of float32 range"},
		{"row limit", "1,2,3\n1,2,3\n1,2,3", 0, nil, "more than 2 rows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := parseCSV([]byte(tt.body), 3, 2)
			if tt.err != "" {
				if !errors.Is(err, errInput) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != tt.rows {
				t.Fatalf("%d rows, want %d", len(rows), tt.rows)
			}
			for _, i := range tt.nan {
				if !math.IsNaN(float64(rows[0][i])) {
					t.Fatalf("value %d = %v, want NaN", i, rows[0][i])
				}
			}
		})
	}
}

func TestParseJSON(t *testing.T) {
	tests := []struct {
		name string
		body string
		rows int
		err  string
	}{
		{"flat row", `[1,2,null]`, 1, ""},
		{"rows", `[[1,2,3],[4,5,6]]`, 2, ""},
		{"instances", `{"instances":[[1,2,3]]}`, 1, ""},
		{"instances by name", `{"instances":[{"aa_000":1,"ac_000":null}]}`, 1, ""},
		{"features", `{"features":[1,2,3]}`, 1, ""},
		{"object by name", `{"ab_000":2}`, 1, ""},
		{"strings as numbers", `["1","na","3"]`, 1, ""},
		{"malformed", `{"instances":[1,2`, 0, "malformed JSON"},
		{"trailing", `[1,2,3] x`, 0, "trailing"},
		{"wrong width", `[1,2]`, 0, "row has 2 values; the model takes 3"},
		{"unknown name", `{"zz_999":1}`, 0, `unknown feature "zz_999"`},
		{"bool", `[1,true,3]`, 0, "a boolean is not a number"},
		{"scalar", `42`, 0, "must be a row"},
		{"empty", ``, 0, "empty body"},
		{"instances not list", `{"instances":3}`, 0, "list of rows"},
		{"row limit", `[[1,2,3],[1,2,3],[1,2,3]]`, 0, "3 rows is more than the limit of 2"},
		{"bad row in list", `[[1,2,3],[1,"x",3]]`, 0, "row 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := parseJSON([]byte(tt.body), feats3, 2)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != tt.rows {
				t.Fatalf("%d rows, want %d", len(rows), tt.rows)
			}
			for _, r := range rows {
				if len(r) != 3 {
					t.Fatalf("row width %d", len(r))
				}
			}
		})
	}
}

func TestParseOIP(t *testing.T) {
	tests := []struct {
		name string
		body string
		rows int
		err  string
	}{
		{"flat", `{"inputs":[{"name":"features","shape":[2,3],"datatype":"FP32","data":[1,2,3,4,5,null]}]}`, 2, ""},
		{"nested", `{"id":"x","inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[[1,2,3]]}]}`, 1, ""},
		{"1-d", `{"inputs":[{"name":"features","shape":[3],"datatype":"FP64","data":[1,2,3]}]}`, 1, ""},
		{"wrong name", `{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}`, 0, `unknown input "x"`},
		{"wrong shape", `{"inputs":[{"name":"features","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`, 0, "does not fit"},
		{"short data", `{"inputs":[{"name":"features","shape":[2,3],"datatype":"FP32","data":[1,2,3]}]}`, 0, "has 3 values"},
		{"long data", `{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1,2,3,4]}]}`, 0, "more values"},
		{"bytes", `{"inputs":[{"name":"features","shape":[1,3],"datatype":"BYTES","data":["a","b","c"]}]}`, 0, "not supported"},
		{"two inputs", `{"inputs":[]}`, 0, "exactly one input"},
		{"unknown member", `{"inputs":[],"foo":1}`, 0, "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, rows, err := parseOIP([]byte(tt.body), "features", 3, 10)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != tt.rows {
				t.Fatalf("%d rows, want %d", len(rows), tt.rows)
			}
		})
	}
}

func checkRows(t *testing.T, rows [][]float32, err error, width int) {
	if err != nil {
		if !errors.Is(err, errInput) {
			t.Fatalf("parser error is not a 400-class input error: %v", err)
		}
		return
	}
	if len(rows) == 0 {
		t.Fatal("no error and no rows")
	}
	for _, r := range rows {
		if len(r) != width {
			t.Fatalf("row width %d, want %d", len(r), width)
		}
	}
}

func FuzzParseCSV(f *testing.F) {
	for _, s := range []string{"1,2,3", "na,na,na\n1,2,3", "\"1\",,3\r\n", "1e40,2,3", ",,"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rows, err := parseCSV(body, 3, 100)
		checkRows(t, rows, err, 3)
	})
}

func FuzzParseJSON(f *testing.F) {
	for _, s := range []string{`[1,2,3]`, `{"instances":[[1,null,3]]}`, `{"aa_000":1}`, `[[1,2,3],[4,5,6]]`, `{"features":["na",1,2]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rows, err := parseJSON(body, feats3, 100)
		checkRows(t, rows, err, 3)
	})
}

func FuzzParseOIP(f *testing.F) {
	f.Add([]byte(`{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		_, rows, err := parseOIP(body, "features", 3, 100)
		checkRows(t, rows, err, 3)
	})
}
