package hold

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Request is the body of PUT /v1/hold/{app} and the payload of a retained
// message on linkedge/v1/local/hold/{app}:
//
//	{"reason": "vehicle moving", "ttl": "30m"}
//
// TTL is a Go duration; Until, an RFC 3339 time, may be given instead. With
// neither, the hold lasts Config.MaxHold, which also caps both.
type Request struct {
	Reason string    `json:"reason"`
	TTL    string    `json:"ttl,omitempty"`
	Until  time.Time `json:"until,omitzero"`
}

// MaxRequest bounds a request body or message payload.
const MaxRequest = 4 << 10

// ParseRequest decodes a request strictly.
func ParseRequest(data []byte) (Request, error) {
	var r Request
	if len(data) > MaxRequest {
		return r, fmt.Errorf("%w: %d bytes; at most %d", ErrInvalid, len(data), MaxRequest)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, fmt.Errorf("%w: want {\"reason\": \"…\", \"ttl\": \"30m\"}: %w", ErrInvalid, err)
	}
	if dec.More() {
		return r, fmt.Errorf("%w: trailing data after the JSON object", ErrInvalid)
	}
	if r.TTL != "" && !r.Until.IsZero() {
		return r, fmt.Errorf("%w: give ttl or until, not both", ErrInvalid)
	}
	return r, nil
}

// Apply sets app's hold from req.
func (c *Controller) Apply(app string, req Request) (Hold, error) {
	var ttl time.Duration
	switch {
	case req.TTL != "":
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			return Hold{}, fmt.Errorf("%w: ttl %q: want a positive duration such as 30m", ErrInvalid, req.TTL)
		}
		ttl = d
	case !req.Until.IsZero():
		ttl = req.Until.Sub(c.now())
		if ttl <= 0 {
			return Hold{}, fmt.Errorf("%w: until %s is in the past", ErrInvalid, req.Until.Format(time.RFC3339))
		}
	}
	return c.Set(app, req.Reason, ttl)
}

// Message applies a message from the local bus: an empty payload (the
// retained message cleared) releases app's hold.
func (c *Controller) Message(app string, payload []byte) (Hold, error) {
	if len(payload) == 0 {
		if err := checkApp(app); err != nil {
			return Hold{}, err
		}
		c.Clear(app)
		return Hold{}, nil
	}
	req, err := ParseRequest(payload)
	if err != nil {
		return Hold{}, err
	}
	return c.Apply(app, req)
}

// Handler serves the hold API on the agent's local HTTP endpoint:
//
//	GET    /v1/hold        the state: {"held": …, "reason": …, "holds": […]}
//	PUT    /v1/hold/{app}  hold for app (body: Request); 200 with the hold
//	DELETE /v1/hold/{app}  release app's hold; 204
func (c *Controller) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/hold", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, c.State())
	})
	mux.HandleFunc("PUT /v1/hold/{app}", func(w http.ResponseWriter, r *http.Request) {
		data, err := io.ReadAll(io.LimitReader(r.Body, MaxRequest+1))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "read body: " + err.Error()})
			return
		}
		var req Request
		if len(bytes.TrimSpace(data)) > 0 {
			if req, err = ParseRequest(data); err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
				return
			}
		}
		h, err := c.Apply(r.PathValue("app"), req)
		if err != nil {
			code := http.StatusBadRequest
			if !errors.Is(err, ErrInvalid) {
				code = http.StatusInternalServerError
			}
			writeJSON(w, code, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, h)
	})
	mux.HandleFunc("DELETE /v1/hold/{app}", func(w http.ResponseWriter, r *http.Request) {
		if err := checkApp(r.PathValue("app")); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		c.Clear(r.PathValue("app"))
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
