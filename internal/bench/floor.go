package bench

import (
	"io"
	"net/http"
)

// FloorHandler answers like `linkedge serve` does on POST /invocations (the
// same headers, a JSON answer of the same size) without parsing the body or
// running a model. Loaded exactly like the real server, it measures the floor
// of HTTP/1.1 serving on this machine: what the server would cost if the
// model, the CSV parser and the metrics were free. GET /ping answers 200 so
// that the bench can wait for it as for the real server.
func FloorHandler() http.Handler {
	answer := []byte(`{"model":"aps-failure","model_version":2,"predictions":[{"label":"neg","score":0.0012345678}]}` + "\n")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.WriteHeader(http.StatusOK)
			return
		}
		io.Copy(io.Discard, r.Body)
		h := w.Header()
		h.Set("X-Linkedge-Model", "aps-failure")
		h.Set("X-Linkedge-Model-Version", "2")
		h.Set("Content-Type", "application/json")
		w.Write(answer)
	})
}
