package server

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/bundle"
)

const (
	headerModel   = "X-Linkedge-Model"
	headerVersion = "X-Linkedge-Model-Version"
)

// handlePing answers 200 only while the slot's backend can answer: with a
// model container behind the slot, a container that died makes it 503, so
// load balancers and the truck's applications see it rather than a run of
// 500s. Slot.Healthy makes no network call, so /ping stays cheap.
func (s *Server) handlePing(w http.ResponseWriter, r *http.Request) int {
	if !s.slot.Healthy() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return http.StatusServiceUnavailable
	}
	w.WriteHeader(http.StatusOK)
	return http.StatusOK
}

func (s *Server) handleInvocations(w http.ResponseWriter, r *http.Request) int {
	ct := mediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "", "text/csv", "application/json", "text/plain":
	default:
		return writeError(w, http.StatusUnsupportedMediaType, "content type "+strconv.Quote(ct)+" is not supported; send text/csv or application/json")
	}
	accept := mediaType(r.Header.Get("Accept"))
	switch accept {
	case "", "*/*", "application/json", "text/csv":
	default:
		return writeError(w, http.StatusNotAcceptable, "accept "+strconv.Quote(accept)+" is not supported; ask for application/json or text/csv")
	}
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer bufPool.Put(buf)
	if code, err := s.readBody(r, buf); err != nil {
		return writeError(w, code, err.Error())
	}
	lease, err := s.slot.Acquire()
	if err != nil {
		return writeError(w, http.StatusServiceUnavailable, "no model is loaded yet; retry when GET /ping answers 200")
	}
	defer lease.Release()
	eng := lease.Backend()
	m := eng.Meta()
	body := buf.Bytes()
	if ct == "" || ct == "text/plain" {
		ct = sniff(body)
	}
	var rows [][]float32
	if ct == "application/json" {
		rows, err = parseJSON(body, m.Features, s.cfg.MaxRows)
	} else {
		rows, err = parseCSV(body, len(m.Features), s.cfg.MaxRows)
	}
	if err != nil {
		return writeError(w, http.StatusBadRequest, err.Error())
	}
	preds, err := eng.Predict(r.Context(), rows)
	if err != nil {
		return s.predictError(w, err)
	}
	h := w.Header()
	h.Set(headerModel, m.Name)
	h.Set(headerVersion, strconv.FormatInt(m.Version, 10))
	out := buf.Bytes()[:0] // the body is parsed; reuse its memory
	if accept == "text/csv" {
		h.Set("Content-Type", "text/csv")
		for _, p := range preds {
			out = append(out, p.Label...)
			out = append(out, ',')
			out = strconv.AppendFloat(out, float64(p.Score), 'g', -1, 32)
			out = append(out, '\n')
		}
	} else {
		h.Set("Content-Type", "application/json")
		out = appendPredictions(out, m, preds)
	}
	w.Write(out)
	return http.StatusOK
}

// appendPredictions writes the /invocations JSON answer by hand: it is the
// hot path, and reflection-based encoding costs more than the model call.
func appendPredictions(b []byte, m *bundle.Metadata, preds []inference.Prediction) []byte {
	b = append(b, `{"model":`...)
	b = strconv.AppendQuote(b, m.Name)
	b = append(b, `,"model_version":`...)
	b = strconv.AppendInt(b, m.Version, 10)
	b = append(b, `,"predictions":[`...)
	for i, p := range preds {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"label":`...)
		b = strconv.AppendQuote(b, p.Label)
		b = append(b, `,"score":`...)
		b = strconv.AppendFloat(b, float64(p.Score), 'g', -1, 32)
		b = append(b, '}')
	}
	return append(b, "]}\n"...)
}

func sniff(body []byte) string {
	t := bytes.TrimLeft(body, " \t\r\n")
	if len(t) > 0 && (t[0] == '{' || t[0] == '[') {
		return "application/json"
	}
	return "text/csv"
}

func (s *Server) predictError(w http.ResponseWriter, err error) int {
	switch {
	case errors.Is(err, inference.ErrBadInput):
		return writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return writeError(w, http.StatusServiceUnavailable, "request cancelled: "+err.Error())
	default:
		s.cfg.Logger.Error("prediction failed", "err", err)
		s.metrics.errors.WithLabelValues("model").Inc()
		return writeError(w, http.StatusInternalServerError, "prediction failed: "+err.Error())
	}
}

// writeError answers {"error": msg}, the OIP error shape, used everywhere.
func writeError(w http.ResponseWriter, code int, msg string) int {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	b, _ := json.Marshal(map[string]string{"error": msg})
	w.Write(append(b, '\n'))
	return code
}

func writeJSON(w http.ResponseWriter, code int, v any) int {
	b, err := json.Marshal(v)
	if err != nil {
		return writeError(w, http.StatusInternalServerError, "encode answer: "+err.Error())
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
	return code
}

func (s *Server) handleLive(w http.ResponseWriter, r *http.Request) int {
	return writeJSON(w, http.StatusOK, map[string]bool{"live": true})
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) int {
	ready := s.slot.Healthy()
	code := http.StatusOK
	if !ready {
		code = http.StatusServiceUnavailable
	}
	return writeJSON(w, code, map[string]bool{"ready": ready})
}

func (s *Server) handleServerMeta(w http.ResponseWriter, r *http.Request) int {
	_, ver := inference.RuntimeInfo()
	return writeJSON(w, http.StatusOK, map[string]any{
		"name":       "linkedge",
		"version":    "v1",
		"extensions": []string{"sagemaker", "metrics", "onnxruntime-" + ver},
	})
}

// modelFor resolves {name} and {version} against the serving model; on a
// mismatch it has already answered and returns a zero lease and the code.
func (s *Server) modelFor(w http.ResponseWriter, r *http.Request) (inference.Lease, int) {
	lease, err := s.slot.Acquire()
	if err != nil {
		return inference.Lease{}, writeError(w, http.StatusServiceUnavailable, "no model is loaded yet")
	}
	m := lease.Backend().Meta()
	if name := r.PathValue("name"); name != m.Name {
		lease.Release()
		return inference.Lease{}, writeError(w, http.StatusNotFound, "unknown model "+strconv.Quote(name)+"; this server serves "+strconv.Quote(m.Name))
	}
	if v := r.PathValue("version"); v != "" && v != strconv.FormatInt(m.Version, 10) {
		lease.Release()
		return inference.Lease{}, writeError(w, http.StatusNotFound, "model "+m.Name+" version "+strconv.Quote(v)+" is not loaded; version "+strconv.FormatInt(m.Version, 10)+" is")
	}
	return lease, 0
}

type tensorMeta struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

func (s *Server) handleModelMeta(w http.ResponseWriter, r *http.Request) int {
	lease, code := s.modelFor(w, r)
	if code != 0 {
		return code
	}
	defer lease.Release()
	b := lease.Backend()
	meta := b.Meta()
	ver := strconv.FormatInt(meta.Version, 10)
	w.Header().Set(headerModel, meta.Name)
	w.Header().Set(headerVersion, ver)
	return writeJSON(w, http.StatusOK, map[string]any{
		"name":     meta.Name,
		"versions": []string{ver},
		"platform": "onnxruntime_onnx",
		"inputs":   []tensorMeta{{Name: meta.Input, Datatype: "FP32", Shape: []int64{-1, int64(len(meta.Features))}}},
		"outputs": []tensorMeta{
			{Name: meta.Output, Datatype: "FP32", Shape: []int64{-1, 1}},
			{Name: "label", Datatype: "BYTES", Shape: []int64{-1}},
		},
		"parameters": map[string]any{
			"features":  meta.Features,
			"labels":    meta.Labels,
			"threshold": meta.Threshold,
			"sha256":    b.Digest(),
		},
	})
}

func (s *Server) handleModelReady(w http.ResponseWriter, r *http.Request) int {
	lease, code := s.modelFor(w, r)
	if code != 0 {
		return code
	}
	h, remote := lease.Backend().(inference.HealthReporter)
	ready := !remote || h.Healthy()
	lease.Release()
	code = http.StatusOK
	if !ready {
		code = http.StatusServiceUnavailable
	}
	return writeJSON(w, code, map[string]any{"name": r.PathValue("name"), "ready": ready})
}

// oipRequest is the OIP v2 inference request; only what LinkEdge needs.
type oipRequest struct {
	ID         string         `json:"id,omitempty"`
	Parameters map[string]any `json:"parameters,omitempty"`
	Inputs     []oipTensor    `json:"inputs"`
	Outputs    []struct {
		Name string `json:"name"`
	} `json:"outputs,omitempty"`
}

type oipTensor struct {
	Name     string          `json:"name"`
	Shape    []int64         `json:"shape"`
	Datatype string          `json:"datatype"`
	Data     json.RawMessage `json:"data"`
}

func (s *Server) handleInfer(w http.ResponseWriter, r *http.Request) int {
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer bufPool.Put(buf)
	if code, err := s.readBody(r, buf); err != nil {
		return writeError(w, code, err.Error())
	}
	lease, code := s.modelFor(w, r)
	if code != 0 {
		return code
	}
	defer lease.Release()
	eng := lease.Backend()
	m := eng.Meta()
	req, rows, err := parseOIP(buf.Bytes(), m.Input, len(m.Features), s.cfg.MaxRows)
	if err != nil {
		return writeError(w, http.StatusBadRequest, err.Error())
	}
	preds, err := eng.Predict(r.Context(), rows)
	if err != nil {
		return s.predictError(w, err)
	}
	scores := make([]float32, len(preds))
	labels := make([]string, len(preds))
	for i, p := range preds {
		scores[i], labels[i] = p.Score, p.Label
	}
	n := int64(len(preds))
	outs := []map[string]any{
		{"name": m.Output, "datatype": "FP32", "shape": []int64{n, 1}, "data": scores},
		{"name": "label", "datatype": "BYTES", "shape": []int64{n}, "data": labels},
	}
	if len(req.Outputs) > 0 {
		want := map[string]bool{}
		for _, o := range req.Outputs {
			if o.Name != m.Output && o.Name != "label" {
				return writeError(w, http.StatusBadRequest, "unknown output "+strconv.Quote(o.Name)+"; outputs are "+strconv.Quote(m.Output)+" and \"label\"")
			}
			want[o.Name] = true
		}
		kept := outs[:0]
		for _, o := range outs {
			if want[o["name"].(string)] {
				kept = append(kept, o)
			}
		}
		outs = kept
	}
	ver := strconv.FormatInt(m.Version, 10)
	w.Header().Set(headerModel, m.Name)
	w.Header().Set(headerVersion, ver)
	return writeJSON(w, http.StatusOK, map[string]any{
		"model_name": m.Name, "model_version": ver, "id": req.ID, "outputs": outs,
	})
}

// parseOIP decodes an OIP v2 request with one FP32/FP64 input tensor of shape
// [n, features] (or [features] for one row). Data may be flat or nested; null
// is a missing value (a LinkEdge extension, since APS rows have gaps).
func parseOIP(body []byte, input string, nFeat, maxRows int) (*oipRequest, [][]float32, error) {
	var req oipRequest
	if t := bytes.TrimSpace(body); len(t) == 0 || t[0] != '{' {
		// CSV, say: name what is expected rather than how the JSON
		// decoder failed on it.
		return nil, nil, inputErr("the body is not an Open Inference Protocol request: send a JSON object {\"inputs\": [{\"name\": %q, \"shape\": [rows, %d], \"datatype\": \"FP32\", \"data\": [...]}]}, or CSV rows to POST /invocations", input, nFeat)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, nil, inputErr("malformed inference request: %s is %s, want %s", cmp.Or(te.Field, "the body"), te.Value, jsonKind(te.Type))
		}
		return nil, nil, inputErr("malformed inference request: %v", err)
	}
	if len(req.Inputs) != 1 {
		return nil, nil, inputErr("want exactly one input tensor %q, got %d", input, len(req.Inputs))
	}
	t := req.Inputs[0]
	if t.Name != input {
		return nil, nil, inputErr("unknown input %q; the model's input is %q", t.Name, input)
	}
	switch strings.ToUpper(t.Datatype) {
	case "FP32", "FP64", "INT32", "INT64":
	default:
		return nil, nil, inputErr("input datatype %q is not supported; use FP32", t.Datatype)
	}
	var rows int64
	switch {
	case len(t.Shape) == 2 && t.Shape[1] == int64(nFeat) && t.Shape[0] > 0:
		rows = t.Shape[0]
	case len(t.Shape) == 1 && t.Shape[0] == int64(nFeat):
		rows = 1
	default:
		return nil, nil, inputErr("input shape %v does not fit the model; want [n, %d]", t.Shape, nFeat)
	}
	if rows > int64(maxRows) {
		return nil, nil, inputErr("%d rows is more than the limit of %d; split the request", rows, maxRows)
	}
	var raw any
	d2 := json.NewDecoder(bytes.NewReader(t.Data))
	d2.UseNumber()
	if err := d2.Decode(&raw); err != nil {
		return nil, nil, inputErr("input data: %v", err)
	}
	flat := make([]float32, 0, rows*int64(nFeat))
	if err := flatten(raw, &flat, int(rows)*nFeat); err != nil {
		return nil, nil, err
	}
	if len(flat) != int(rows)*nFeat {
		return nil, nil, inputErr("input data has %d values; shape %v needs %d", len(flat), t.Shape, rows*int64(nFeat))
	}
	out := make([][]float32, rows)
	for i := range out {
		out[i] = flat[i*nFeat : (i+1)*nFeat : (i+1)*nFeat]
	}
	return &req, out, nil
}

func flatten(v any, dst *[]float32, limit int) error {
	if list, ok := v.([]any); ok {
		for _, x := range list {
			if err := flatten(x, dst, limit); err != nil {
				return err
			}
		}
		return nil
	}
	if len(*dst) >= limit {
		return inputErr("input data has more values than its shape allows")
	}
	f, err := number(v)
	if err != nil {
		return inputErr("input data value %d: %v", len(*dst)+1, err)
	}
	*dst = append(*dst, f)
	return nil
}

// jsonKind names a Go type as the JSON it is decoded from, for errors that
// must not show Go's own names (server.oipRequest).
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	default:
		return "a number"
	}
}
