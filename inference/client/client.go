// Package client calls a LinkEdge inference server (`linkedge serve`, in a
// container or elsewhere) over its HTTP API, and presents it as an
// inference.Backend: the truck agent puts a model container behind its own
// HTTP and MQTT front ends with it.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/bundle"
)

// Client is a Backend served by a remote server.
type Client struct {
	base     string // e.g. http://127.0.0.1:18080
	meta     *bundle.Metadata
	digest   string
	http     *http.Client
	failures atomic.Int64
	closed   atomic.Bool
}

var _ inference.Backend = (*Client)(nil)

// New returns a client for the server at base, which must serve the model
// meta describes; digest identifies it (the bundle's sha256 will do).
func New(base string, meta *bundle.Metadata, digest string) *Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64 // the front ends call concurrently
	return &Client{base: base, meta: meta, digest: digest, http: &http.Client{Transport: t, Timeout: 60 * time.Second}}
}

// Meta is the model's metadata.
func (c *Client) Meta() *bundle.Metadata { return c.meta }

// Digest identifies the model.
func (c *Client) Digest() string { return c.digest }

// Failures counts calls that failed for a reason other than bad input.
func (c *Client) Failures() int64 { return c.failures.Load() }

// Close drops idle connections; it is idempotent.
func (c *Client) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.http.CloseIdleConnections()
	}
	return nil
}

// Ready reports whether the server answers /ping with 200.
func (c *Client) Ready(ctx context.Context) bool {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/ping", nil)
	resp, err := c.http.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// PredictOne scores one row.
func (c *Client) PredictOne(ctx context.Context, row []float32) (inference.Prediction, error) {
	out, err := c.Predict(ctx, [][]float32{row})
	if err != nil {
		return inference.Prediction{}, err
	}
	return out[0], nil
}

// Predict sends rows to /invocations as JSON and checks that the answer
// comes from the expected model and version.
func (c *Client) Predict(ctx context.Context, rows [][]float32) ([]inference.Prediction, error) {
	if c.closed.Load() {
		return nil, inference.ErrClosed
	}
	for i, r := range rows {
		if len(r) != len(c.meta.Features) {
			return nil, fmt.Errorf("%w: row %d has %d features, model %s expects %d", inference.ErrBadInput, i+1, len(r), c.meta.Name, len(c.meta.Features))
		}
	}
	body, err := json.Marshal(map[string]any{"instances": encodeRows(rows)})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/invocations", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		c.failures.Add(1)
		return nil, fmt.Errorf("model server %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		c.failures.Add(1)
		return nil, fmt.Errorf("model server %s: %w", c.base, err)
	}
	if resp.StatusCode == http.StatusBadRequest {
		return nil, fmt.Errorf("%w: model server: %s", inference.ErrBadInput, bytes.TrimSpace(data))
	}
	if resp.StatusCode != http.StatusOK {
		c.failures.Add(1)
		return nil, fmt.Errorf("model server %s answered %d: %s", c.base, resp.StatusCode, bytes.TrimSpace(data))
	}
	var ans struct {
		Model        string                 `json:"model"`
		ModelVersion int64                  `json:"model_version"`
		Predictions  []inference.Prediction `json:"predictions"`
	}
	if err := json.Unmarshal(data, &ans); err != nil || len(ans.Predictions) != len(rows) {
		c.failures.Add(1)
		return nil, fmt.Errorf("model server %s: malformed answer (%v)", c.base, err)
	}
	if ans.Model != c.meta.Name || ans.ModelVersion != c.meta.Version {
		c.failures.Add(1)
		return nil, errors.New("model server " + c.base + " serves " + ans.Model + " v" + strconv.FormatInt(ans.ModelVersion, 10) +
			", expected " + c.meta.Name + " v" + strconv.FormatInt(c.meta.Version, 10))
	}
	return ans.Predictions, nil
}

// encodeRows writes NaN as null, which JSON cannot otherwise carry.
func encodeRows(rows [][]float32) []bundle.Row {
	out := make([]bundle.Row, len(rows))
	for i, r := range rows {
		out[i] = r
	}
	return out
}
