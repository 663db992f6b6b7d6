package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/inference/client"
	"github.com/linkedge/linkedge/inference/server"
)

func engine(t *testing.T, data []byte, observe inference.BatchObserver) *inference.Engine {
	t.Helper()
	if err := inference.Init(context.Background(), ""); err != nil {
		t.Fatalf("ONNX Runtime: %v", err)
	}
	b, err := bundle.Read(bytes.NewReader(data), bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := inference.Load(context.Background(), b, inference.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return inference.NewEngine(m, inference.BatchConfig{}, observe)
}

// newServer serves APS v1 through a real HTTP server on loopback.
func newServer(t *testing.T) (*httptest.Server, *inference.Slot, *server.Server) {
	t.Helper()
	slot := &inference.Slot{}
	srv := server.New(server.Config{MaxBodyBytes: 64 << 10}, slot, nil)
	slot.Swap(engine(t, apsmodels.V1(), srv.ObserveBatch), 0)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ts.Close()
		slot.Close()
	})
	return ts, slot, srv
}

func goldenCSV(t *testing.T, slot *inference.Slot) (string, bundle.Golden) {
	g := slot.Current().Meta().Golden
	// The sample with a missing value, so the CSV carries "na".
	for _, s := range g {
		var sb strings.Builder
		hasNA := false
		for i, v := range s.Features {
			if i > 0 {
				sb.WriteByte(',')
			}
			if v != v {
				sb.WriteString("na")
				hasNA = true
			} else {
				sb.WriteString(strconv.FormatFloat(float64(v), 'g', -1, 32))
			}
		}
		if hasNA {
			return sb.String(), s
		}
	}
	t.Fatal("no golden sample has a missing value")
	return "", bundle.Golden{}
}

func do(t *testing.T, method, url, ctype, body string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestPing(t *testing.T) {
	slot := &inference.Slot{}
	srv := server.New(server.Config{}, slot, nil)
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	resp, body := do(t, "GET", ts.URL+"/ping", "", "")
	if resp.StatusCode != 503 {
		t.Fatalf("ping before a model: %d, want 503", resp.StatusCode)
	}
	slot.Swap(engine(t, apsmodels.V1(), nil), 0)
	defer slot.Close()
	resp, body = do(t, "GET", ts.URL+"/ping", "", "")
	if resp.StatusCode != 200 || len(body) != 0 {
		t.Fatalf("ping: %d %q, want 200 with an empty body", resp.StatusCode, body)
	}
}

// modelServer stands for a model container: `linkedge serve` of APS v1 on
// addr ("127.0.0.1:0" for any port). stop kills it as `docker kill` would
// (its listener closes; the caller's connections to it fail).
func modelServer(t *testing.T, addr string) (url string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	slot := &inference.Slot{}
	srv := server.New(server.Config{}, slot, nil)
	slot.Swap(engine(t, apsmodels.V1(), nil), 0)
	ts := httptest.NewUnstartedServer(srv.Handler())
	ts.Listener.Close()
	ts.Listener = ln
	ts.Start()
	stop = func() {
		ts.CloseClientConnections()
		ts.Close()
		slot.Close()
	}
	t.Cleanup(stop)
	return ts.URL, stop
}

// TestReadinessFollowsRemoteBackend: the agent's endpoint serves through a
// client.Client for a model server, which then dies. Predictions fail, and
// /ping and the OIP readiness endpoints must say so (503) instead of 200,
// while /v2/health/live stays 200: the agent itself is fine. When the model
// server is back on the same address they are 200 again, with nobody
// calling the model meanwhile.
func TestReadinessFollowsRemoteBackend(t *testing.T) {
	inner, stop := modelServer(t, "127.0.0.1:0")
	slot := &inference.Slot{}
	srv := server.New(server.Config{}, slot, nil)
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	b, err := bundle.Read(bytes.NewReader(apsmodels.V1()), bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	cl := client.New(inner, b.Meta, "v1")
	slot.Swap(cl, 0)
	defer slot.Close()
	row, _ := goldenCSV(t, slot)
	ready := []string{"/ping", "/v2/health/ready", "/v2/models/aps-failure/ready", "/v2/models/aps-failure/versions/1/ready"}
	expect := func(want int) {
		t.Helper()
		for _, path := range ready {
			if resp, body := do(t, "GET", ts.URL+path, "", ""); resp.StatusCode != want {
				t.Errorf("%s: %d %s, want %d", path, resp.StatusCode, body, want)
			}
		}
		if resp, _ := do(t, "GET", ts.URL+"/v2/health/live", "", ""); resp.StatusCode != 200 {
			t.Errorf("/v2/health/live: %d, want 200", resp.StatusCode)
		}
	}
	// waitPing polls /ping, as a load balancer would, until it answers want.
	waitPing := func(want int) {
		t.Helper()
		limit := time.Duration(client.UnhealthyAfter+3) * client.ProbeInterval
		deadline := time.Now().Add(limit)
		for {
			resp, _ := do(t, "GET", ts.URL+"/ping", "", "")
			if resp.StatusCode == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("/ping still %d after %s, want %d", resp.StatusCode, limit, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if resp, body := do(t, "POST", ts.URL+"/invocations", "text/csv", row); resp.StatusCode != 200 {
		t.Fatalf("through the model server: %d %s", resp.StatusCode, body)
	}
	expect(200)

	stop()
	if resp, _ := do(t, "POST", ts.URL+"/invocations", "text/csv", row); resp.StatusCode != 500 {
		t.Fatalf("with the model server gone: %d, want 500", resp.StatusCode)
	}
	waitPing(503)
	expect(503)

	modelServer(t, strings.TrimPrefix(inner, "http://"))
	waitPing(200)
	expect(200)
	if resp, body := do(t, "POST", ts.URL+"/invocations", "text/csv", row); resp.StatusCode != 200 {
		t.Fatalf("after the model server came back: %d %s", resp.StatusCode, body)
	}
}

func TestInvocations(t *testing.T) {
	ts, slot, _ := newServer(t)
	row, g := goldenCSV(t, slot)
	type answer struct {
		Model        string `json:"model"`
		ModelVersion int64  `json:"model_version"`
		Predictions  []struct {
			Label string  `json:"label"`
			Score float64 `json:"score"`
		} `json:"predictions"`
	}
	for _, tc := range []struct{ name, ctype, body string }{
		{"csv with na", "text/csv", row},
		{"csv two rows", "text/csv; charset=utf-8", row + "\n" + row + "\n"},
		{"no content type", "", row},
		{"json", "application/json", `{"instances":[` + mustJSON(g.Features) + `]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, "POST", ts.URL+"/invocations", tc.ctype, tc.body)
			if resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			if resp.Header.Get("X-Linkedge-Model-Version") != "1" || resp.Header.Get("X-Linkedge-Model") != "aps-failure" {
				t.Fatalf("headers %v", resp.Header)
			}
			var a answer
			if err := json.Unmarshal(body, &a); err != nil {
				t.Fatal(err)
			}
			if a.Model != "aps-failure" || a.ModelVersion != 1 || len(a.Predictions) == 0 {
				t.Fatalf("answer %s", body)
			}
			p := a.Predictions[0]
			if p.Label != g.Label || p.Score-g.Score > 1e-4 || g.Score-p.Score > 1e-4 {
				t.Fatalf("prediction %+v, want %s %v", p, g.Label, g.Score)
			}
		})
	}
	req, _ := http.NewRequest("POST", ts.URL+"/invocations", strings.NewReader(row))
	req.Header.Set("Content-Type", "text/csv")
	req.Header.Set("Accept", "text/csv")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(b), g.Label+",") {
		t.Fatalf("csv answer %q", b)
	}
}

func mustJSON(r bundle.Row) string {
	b, _ := r.MarshalJSON()
	return string(b)
}

func TestBadRequests(t *testing.T) {
	ts, slot, _ := newServer(t)
	row, _ := goldenCSV(t, slot)
	tests := []struct {
		name, method, path, ctype, body string
		code                            int
		msg                             string
	}{
		{"wrong feature count", "POST", "/invocations", "text/csv", "1,2,3", 400, "has 3 fields; the model takes 170"},
		{"non-numeric", "POST", "/invocations", "text/csv", strings.Replace(row, "na", "abc", 1), 400, `"abc" is not a number`},
		{"empty body", "POST", "/invocations", "text/csv", "", 400, "empty body"},
		{"oversized body", "POST", "/invocations", "text/csv", strings.Repeat(row+"\n", 1000), 413, "over the limit"},
		{"malformed json", "POST", "/invocations", "application/json", `{"instances":[1,2`, 400, "malformed JSON"},
		{"unsupported type", "POST", "/invocations", "application/xml", "<a/>", 415, "not supported"},
		{"wrong method", "GET", "/invocations", "", "", 405, "takes POST"},
		{"unknown model", "GET", "/v2/models/nope", "", "", 404, `unknown model "nope"`},
		{"unknown version", "GET", "/v2/models/aps-failure/versions/9", "", "", 404, `version "9" is not loaded`},
		{"infer unknown model", "POST", "/v2/models/nope/infer", "application/json", `{"inputs":[]}`, 404, "unknown model"},
		{"infer bad shape", "POST", "/v2/models/aps-failure/infer", "application/json", `{"inputs":[{"name":"features","shape":[1,2],"datatype":"FP32","data":[1,2]}]}`, 400, "does not fit"},
		// Issue 12 #9: what is wrong, in the protocol's words, not Go's.
		{"infer with CSV", "POST", "/v2/models/aps-failure/infer", "text/csv", "1,2,3", 400, "not an Open Inference Protocol request"},
		{"infer with inputs of the wrong kind", "POST", "/v2/models/aps-failure/infer", "application/json", `{"inputs":{"name":"features"}}`, 400, "inputs is object, want an array"},
		{"unknown path", "GET", "/nope", "", "", 404, "no such endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, tt.method, ts.URL+tt.path, tt.ctype, tt.body)
			if resp.StatusCode != tt.code {
				t.Fatalf("%d %s, want %d", resp.StatusCode, body, tt.code)
			}
			var e struct{ Error string }
			if err := json.Unmarshal(body, &e); err != nil || !strings.Contains(e.Error, tt.msg) {
				t.Fatalf("body %s, want a JSON error mentioning %q", body, tt.msg)
			}
		})
	}
	// And it still serves.
	if resp, body := do(t, "POST", ts.URL+"/invocations", "text/csv", row); resp.StatusCode != 200 {
		t.Fatalf("after bad requests: %d %s", resp.StatusCode, body)
	}
}

func TestOpenInferenceProtocol(t *testing.T) {
	ts, slot, _ := newServer(t)
	g := slot.Current().Meta().Golden[0]
	for _, path := range []string{"/v2/health/live", "/v2/health/ready", "/v2/models/aps-failure/ready", "/v2/models/aps-failure/versions/1/ready", "/v2"} {
		if resp, body := do(t, "GET", ts.URL+path, "", ""); resp.StatusCode != 200 {
			t.Errorf("%s: %d %s", path, resp.StatusCode, body)
		}
	}
	resp, body := do(t, "GET", ts.URL+"/v2/models/aps-failure", "", "")
	var meta struct {
		Name     string   `json:"name"`
		Versions []string `json:"versions"`
		Inputs   []struct {
			Name  string  `json:"name"`
			Shape []int64 `json:"shape"`
		} `json:"inputs"`
	}
	if err := json.Unmarshal(body, &meta); err != nil || resp.StatusCode != 200 || meta.Inputs[0].Shape[1] != 170 || meta.Versions[0] != "1" {
		t.Fatalf("metadata %d %s", resp.StatusCode, body)
	}
	req := `{"id":"q1","inputs":[{"name":"features","shape":[1,170],"datatype":"FP32","data":` + mustJSON(g.Features) + `}]}`
	resp, body = do(t, "POST", ts.URL+"/v2/models/aps-failure/versions/1/infer", "application/json", req)
	var out struct {
		ModelName    string `json:"model_name"`
		ModelVersion string `json:"model_version"`
		ID           string `json:"id"`
		Outputs      []struct {
			Name string          `json:"name"`
			Data json.RawMessage `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(body, &out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("infer %d %s", resp.StatusCode, body)
	}
	if out.ModelName != "aps-failure" || out.ModelVersion != "1" || out.ID != "q1" || len(out.Outputs) != 2 {
		t.Fatalf("infer answer %s", body)
	}
	if !strings.Contains(string(out.Outputs[1].Data), g.Label) {
		t.Fatalf("label output %s, want %s", out.Outputs[1].Data, g.Label)
	}
}

func TestMetrics(t *testing.T) {
	ts, slot, _ := newServer(t)
	row, _ := goldenCSV(t, slot)
	do(t, "POST", ts.URL+"/invocations", "text/csv", row)
	do(t, "POST", ts.URL+"/invocations", "text/csv", "1,2")
	_, body := do(t, "GET", ts.URL+"/metrics", "", "")
	for _, want := range []string{
		`linkedge_inference_requests_total{code="200",endpoint="invocations"} 1`,
		`linkedge_inference_requests_total{code="400",endpoint="invocations"} 1`,
		"linkedge_inference_request_duration_seconds_bucket",
		"linkedge_inference_batch_rows_bucket",
		`linkedge_model_info{model="aps-failure",sha256=`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestShutdownFinishesInFlight starts requests, shuts down, and expects
// every started request to succeed.
func TestShutdownFinishesInFlight(t *testing.T) {
	slot := &inference.Slot{}
	srv := server.New(server.Config{Addr: "127.0.0.1:0"}, slot, nil)
	slot.Swap(engine(t, apsmodels.V1(), nil), 0)
	defer slot.Close()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	row, _ := goldenCSV(t, slot)
	url := "http://" + srv.Addr() + "/invocations"
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	started := make(chan struct{}, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := strings.Repeat(row+"\n", 200) // a big request keeps the server busy a while
			req, _ := http.NewRequest("POST", url, strings.NewReader(body))
			req.Header.Set("Content-Type", "text/csv")
			started <- struct{}{}
			resp, err := http.DefaultClient.Do(req)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				codes[-1]++
				return
			}
			resp.Body.Close()
			codes[resp.StatusCode]++
		}()
	}
	for range 8 {
		<-started
	}
	time.Sleep(20 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	// Requests that reached the server finish with 200; ones that had not
	// connected yet are refused at connect (-1), never cut half-way.
	if codes[200] == 0 || codes[200]+codes[-1] != 8 {
		t.Fatalf("status counts %v", codes)
	}
	srv.Shutdown(ctx) // idempotent
}

// BenchmarkInvocationsHandler measures the handler's own cost per
// single-row CSV request, without sockets.
func BenchmarkInvocationsHandler(b *testing.B) {
	t := &testing.T{}
	_ = t
	slot := &inference.Slot{}
	srv := server.New(server.Config{}, slot, nil)
	if err := inference.Init(context.Background(), ""); err != nil {
		b.Fatal(err)
	}
	bun, _ := bundle.Read(bytes.NewReader(apsmodels.V2()), bundle.Limits{})
	m, err := inference.Load(context.Background(), bun, inference.Options{})
	if err != nil {
		b.Fatal(err)
	}
	slot.Swap(inference.NewEngine(m, inference.BatchConfig{}, srv.ObserveBatch), 0)
	defer slot.Close()
	var sb strings.Builder
	for i, v := range bun.Meta.Golden[0].Features {
		if i > 0 {
			sb.WriteByte(',')
		}
		if v != v {
			sb.WriteString("na")
		} else {
			sb.WriteString(strconv.FormatFloat(float64(v), 'g', -1, 32))
		}
	}
	row := sb.String()
	h := srv.Handler()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest("POST", "/invocations", strings.NewReader(row))
			req.Header.Set("Content-Type", "text/csv")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != 200 {
				b.Fatal(w.Code)
			}
		}
	})
}

// A11: a client trickling its body is cut off after ReadTimeout instead of
// holding the connection as long as it likes.
func TestSlowBodyIsCutOff(t *testing.T) {
	slot := &inference.Slot{}
	srv := server.New(server.Config{Addr: "127.0.0.1:0", ReadTimeout: time.Second}, slot, nil)
	slot.Swap(engine(t, apsmodels.V1(), nil), 0)
	defer slot.Close()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	c, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 100000\r\n\r\n")
	start := time.Now()
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		io.Copy(io.Discard, c) // returns once the server closes the connection
	}()
	for {
		select {
		case <-closed:
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("cut off after %s, want about the 1 s read timeout", d)
			}
			return
		case <-time.After(200 * time.Millisecond):
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("a body trickling a byte every 200 ms is still being read after 10 s")
		}
		c.Write([]byte("n"))
	}
}
