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

// ErrUnreachable wraps a call that did not get an answer from the server:
// refused, reset or timed out. It tells a model server that is not there
// (its container died) from one that answered wrongly.
var ErrUnreachable = errors.New("model server unreachable")

// Client is a Backend served by a remote server.
type Client struct {
	base     string // e.g. http://127.0.0.1:18080
	meta     *bundle.Metadata
	digest   string
	http     *http.Client
	failures atomic.Int64
	closed   atomic.Bool

	// What Healthy knows: connection failures in a row (requests and
	// pings), when the server was last heard from or failed (unix ns), and
	// whether a background /ping is in flight.
	connFails atomic.Int64
	lastSeen  atomic.Int64
	probing   atomic.Bool
}

var (
	_ inference.Backend        = (*Client)(nil)
	_ inference.HealthReporter = (*Client)(nil)
)

const (
	// UnhealthyAfter is how many connection failures in a row make Healthy
	// false. One refused or reset connection can be a blip; three in a row,
	// with nothing answering in between, is a server that is not there.
	UnhealthyAfter = 3
	// ProbeInterval bounds how often Healthy pings the server itself when
	// no request has reached it lately: at most one ping in flight, and at
	// most one per interval, whoever polls Healthy and however often.
	ProbeInterval = time.Second
	// probeTimeout bounds a background ping; a server slower than this to
	// answer /ping counts as a failure.
	probeTimeout = 2 * time.Second
)

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
func (c *Client) Ready(ctx context.Context) bool { return c.Ping(ctx) == nil }

// Ping asks the server's /ping and returns why it is not ready, or nil on
// 200. Its outcome feeds Healthy: a 200 makes the client healthy again at
// once, anything else counts as a failure, unless ctx ended first (the
// caller gave up; that says nothing about the server).
func (c *Client) Ping(ctx context.Context) error {
	answered, err := c.ping(ctx)
	c.observe(ctx, err == nil)
	switch {
	case err == nil:
		return nil
	case !answered:
		return c.unreachable(ctx, err)
	default:
		return fmt.Errorf("model server %s: %w", c.base, err)
	}
}

// unreachable wraps err, a call that got no answer, in ErrUnreachable,
// unless ctx ending caused it: then the caller gave up, and the server may
// be fine.
func (c *Client) unreachable(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("model server %s: %w", c.base, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrUnreachable, c.base, err)
}

// ping calls /ping; answered says whether the server sent any answer.
func (c *Client) ping(ctx context.Context) (answered bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/ping", nil)
	if err != nil {
		return false, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return false, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return true, fmt.Errorf("/ping answered %d", resp.StatusCode)
	}
	return true, nil
}

// Healthy reports whether the server can answer, from the recent outcomes
// of requests and pings: false once UnhealthyAfter connection failures
// came in a row, until a ping or request gets through again, and false
// once closed. It never waits on the network: when nothing was heard from
// the server for ProbeInterval it starts one background /ping, whose
// outcome the next call sees. So a dead server shows within a few
// intervals even with no traffic, and a polled /ping costs the server at
// most one ping per interval.
func (c *Client) Healthy() bool {
	if c.closed.Load() {
		return false
	}
	if time.Now().UnixNano()-c.lastSeen.Load() >= int64(ProbeInterval) && c.probing.CompareAndSwap(false, true) {
		go func() {
			defer c.probing.Store(false)
			ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
			defer cancel()
			// Counted as the server's failure even when the timeout
			// ends it: the deadline is ours, not a caller giving up.
			_, err := c.ping(ctx)
			c.observe(context.Background(), err == nil)
		}()
	}
	return c.connFails.Load() < UnhealthyAfter
}

// observe records one exchange with the server for Healthy: ok means the
// server answered (a prediction with any status: a 500 is the model's
// business, which probation watches, not a sign the server is gone; a ping
// with 200). A failure that ctx caused is not the server's and is not
// counted.
func (c *Client) observe(ctx context.Context, ok bool) {
	now := time.Now().UnixNano()
	// Skip the store when it changes little: concurrent requests would
	// otherwise all write the same cache line.
	if now-c.lastSeen.Load() > int64(10*time.Millisecond) {
		c.lastSeen.Store(now)
	}
	switch {
	case ok:
		if c.connFails.Load() != 0 {
			c.connFails.Store(0)
		}
	case ctx.Err() == nil:
		c.connFails.Add(1)
		// Pooled keep-alive connections to a server that went away are
		// dead too; dial afresh next time rather than fail on each.
		c.http.CloseIdleConnections()
	}
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
		c.observe(ctx, false)
		return nil, c.unreachable(ctx, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		c.failures.Add(1)
		c.observe(ctx, false)
		return nil, c.unreachable(ctx, err)
	}
	c.observe(ctx, true)
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
