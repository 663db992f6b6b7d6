package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// errInput marks a request body the server cannot turn into rows; the
// message says what was wrong and goes back to the client with a 400.
var errInput = errors.New("bad request")

func inputErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errInput, fmt.Sprintf(format, args...))
}

var nan32 = float32(math.NaN())

// parseCSV reads rows of comma-separated numbers, one row per line. Empty
// fields and "na"/"NA"/"nan"/"null" are missing values (NaN), as in the APS
// data set. Every row must have exactly nFeat fields.
func parseCSV(body []byte, nFeat, maxRows int) ([][]float32, error) {
	rows := make([][]float32, 0, 1)
	line := 0
	for len(body) > 0 {
		var ln []byte
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			ln, body = body[:i], body[i+1:]
		} else {
			ln, body = body, nil
		}
		line++
		ln = bytes.TrimSuffix(ln, []byte{'\r'})
		if len(bytes.TrimSpace(ln)) == 0 {
			continue
		}
		if len(rows) == maxRows {
			return nil, inputErr("more than %d rows; split the request", maxRows)
		}
		row := make([]float32, 0, nFeat)
		field := 0
		for {
			field++
			var f []byte
			i := bytes.IndexByte(ln, ',')
			if i >= 0 {
				f, ln = ln[:i], ln[i+1:]
			} else {
				f = ln
			}
			if len(row) == nFeat {
				return nil, inputErr("line %d has more than %d fields; the model takes %d features", line, nFeat, nFeat)
			}
			v, err := parseField(f)
			if err != nil {
				return nil, inputErr("line %d field %d: %v", line, field, err)
			}
			row = append(row, v)
			if i < 0 {
				break
			}
		}
		if len(row) != nFeat {
			return nil, inputErr("line %d has %d fields; the model takes %d features", line, len(row), nFeat)
		}
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		return nil, inputErr("no rows in the body; send one row of %d comma-separated values per line", nFeat)
	}
	return rows, nil
}

func parseField(f []byte) (float32, error) {
	f = bytes.TrimSpace(f)
	if len(f) >= 2 && f[0] == '"' && f[len(f)-1] == '"' {
		f = f[1 : len(f)-1]
	}
	switch string(f) {
	case "", "na", "NA", "nan", "NaN", "null":
		return nan32, nil
	}
	if v, ok := parseDecimal32(f); ok {
		return v, nil
	}
	v, err := strconv.ParseFloat(string(f), 32)
	if errors.Is(err, strconv.ErrRange) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%q is out of float32 range", truncate(f, 40))
	}
	if err != nil {
		return 0, fmt.Errorf("%q is not a number (use na for a missing value)", truncate(f, 40))
	}
	return float32(v), nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// parseJSON accepts the shapes people send to a SageMaker endpoint:
//
//	[1, 2, null, ...]                        one row
//	[[...], [...]]                           many rows
//	{"instances": [[...], ...]}              many rows (TensorFlow Serving style)
//	{"instances": [{"aa_000": 1, ...}, ...]} rows by feature name
//	{"features": [...]}                      one row
//	{"aa_000": 1, "ab_000": null, ...}       one row by feature name
//
// null is a missing value. Named features may be left out (missing), but an
// unknown name is an error, since it is usually a typo.
func parseJSON(body []byte, features []string, maxRows int) ([][]float32, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, inputErr("empty body")
	}
	var raw any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return nil, inputErr("malformed JSON: %v", err)
	}
	if dec.More() {
		return nil, inputErr("malformed JSON: trailing data after the value")
	}
	switch v := raw.(type) {
	case []any:
		if len(v) > 0 {
			if _, isRow := v[0].([]any); isRow {
				return rowsFromList(v, features, maxRows)
			}
			if _, isObj := v[0].(map[string]any); isObj {
				return rowsFromList(v, features, maxRows)
			}
		}
		row, err := rowFromValue(v, features)
		if err != nil {
			return nil, err
		}
		return [][]float32{row}, nil
	case map[string]any:
		if inst, ok := v["instances"]; ok {
			list, ok := inst.([]any)
			if !ok {
				return nil, inputErr(`"instances" must be a list of rows`)
			}
			return rowsFromList(list, features, maxRows)
		}
		if f, ok := v["features"]; ok {
			row, err := rowFromValue(f, features)
			if err != nil {
				return nil, err
			}
			return [][]float32{row}, nil
		}
		row, err := rowFromValue(v, features)
		if err != nil {
			return nil, err
		}
		return [][]float32{row}, nil
	default:
		return nil, inputErr("JSON body must be a row, a list of rows or an object; see the docs for the accepted shapes")
	}
}

func rowsFromList(list []any, features []string, maxRows int) ([][]float32, error) {
	if len(list) == 0 {
		return nil, inputErr("no rows in the body")
	}
	if len(list) > maxRows {
		return nil, inputErr("%d rows is more than the limit of %d; split the request", len(list), maxRows)
	}
	rows := make([][]float32, len(list))
	for i, item := range list {
		r, err := rowFromValue(item, features)
		if err != nil {
			return nil, fmt.Errorf("row %d: %w", i+1, err)
		}
		rows[i] = r
	}
	return rows, nil
}

func rowFromValue(v any, features []string) ([]float32, error) {
	switch r := v.(type) {
	case []any:
		if len(r) != len(features) {
			return nil, inputErr("row has %d values; the model takes %d features", len(r), len(features))
		}
		row := make([]float32, len(r))
		for i, x := range r {
			f, err := number(x)
			if err != nil {
				return nil, inputErr("value %d (%s): %v", i+1, features[i], err)
			}
			row[i] = f
		}
		return row, nil
	case map[string]any:
		row := make([]float32, len(features))
		for i := range row {
			row[i] = nan32
		}
		idx := make(map[string]int, len(features))
		for i, f := range features {
			idx[f] = i
		}
		for k, x := range r {
			i, ok := idx[k]
			if !ok {
				return nil, inputErr("unknown feature %q; GET /v2/models/{name} lists the features", truncate([]byte(k), 40))
			}
			f, err := number(x)
			if err != nil {
				return nil, inputErr("feature %s: %v", k, err)
			}
			row[i] = f
		}
		return row, nil
	default:
		return nil, inputErr("a row must be a list of numbers or an object of feature values")
	}
}

func number(x any) (float32, error) {
	switch n := x.(type) {
	case nil:
		return nan32, nil
	case json.Number:
		v, err := strconv.ParseFloat(string(n), 32)
		if err != nil || math.IsInf(v, 0) {
			return 0, fmt.Errorf("%s is out of float32 range", n)
		}
		return float32(v), nil
	case string:
		return parseField([]byte(n))
	default:
		return 0, fmt.Errorf("%s is not a number (use null for a missing value)", describe(x))
	}
}

func describe(x any) string {
	switch x.(type) {
	case bool:
		return "a boolean"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	default:
		return fmt.Sprintf("%T", x)
	}
}
