package inference

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// BatchConfig tunes the micro-batcher, in the spirit of Triton's dynamic
// batcher. The zero value takes the defaults.
type BatchConfig struct {
	// MaxBatch is the most rows one runtime call takes. Default 64.
	MaxBatch int `json:"max_batch" yaml:"max_batch"`
	// MaxDelay is how long a batch with fewer than MaxBatch rows waits for
	// more before it runs. Default 0: a batch takes whatever is queued at
	// that moment and runs at once, so a lone request never waits and
	// batches grow by themselves exactly when requests queue up.
	MaxDelay time.Duration `json:"max_delay" yaml:"max_delay"`
	// Workers is how many runtime calls may run at once. Default 2: one
	// batch runs while the next one gathers.
	Workers int `json:"workers" yaml:"workers"`
	// QueueSize bounds the rows waiting for a runtime call. Default 4096; a
	// full queue makes callers wait (back-pressure), bounded by their
	// context.
	QueueSize int `json:"queue_size" yaml:"queue_size"`
	// Disabled runs every call on its own, without batching. For comparison.
	Disabled bool `json:"disabled" yaml:"disabled"`
}

func (c BatchConfig) withDefaults() BatchConfig {
	if c.MaxBatch <= 0 {
		c.MaxBatch = 64
	}
	if c.Workers <= 0 {
		c.Workers = 2
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 4096
	}
	if c.MaxDelay < 0 {
		c.MaxDelay = 0
	}
	return c
}

// BatchObserver hears about every runtime call: its row count and duration.
// The server feeds its Prometheus histograms from it.
type BatchObserver func(rows int, took time.Duration)

// Engine serves one model through the micro-batcher.
//
// The batcher has no goroutines of its own. A caller queues its row and then
// waits either for its answer or for a runner, the right to make one runtime
// call (there are Workers of them). A caller that gets a runner scores a
// batch of whatever is queued, its own row and other callers' rows alike,
// answers them all and gives the runner back. With few requests the caller
// scores its own row at once, without handing it to another goroutine and
// waiting to be woken; under load, rows queue while the runners are busy and
// the next batch takes them together. No row is stranded: a caller with an
// unanswered row keeps waiting for a runner, and every runner comes back.
type Engine struct {
	model   *Model
	cfg     BatchConfig
	observe BatchObserver

	failures atomic.Int64

	queue   chan *call
	runners chan *runner

	// gate keeps Close from draining the queue while a caller is between
	// its closed check and its enqueue: a row queued after the drain would
	// never be answered.
	gate   sync.RWMutex
	closed bool

	closeOnce sync.Once
	closeErr  error
}

type call struct {
	row   []float32
	score float32
	err   error
	done  chan struct{}
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

// runner is what one runtime call at a time needs, kept between calls.
type runner struct {
	sc     *scratch
	batch  []*call
	scores []float32
	timer  *time.Timer
}

// NewEngine makes an engine for m. The engine owns m from now on: Close
// closes it.
func NewEngine(m *Model, cfg BatchConfig, observe BatchObserver) *Engine {
	cfg = cfg.withDefaults()
	e := &Engine{model: m, cfg: cfg, observe: observe, queue: make(chan *call, cfg.QueueSize), runners: make(chan *runner, cfg.Workers)}
	for range cfg.Workers {
		e.runners <- &runner{sc: m.newScratch(cfg.MaxBatch), batch: make([]*call, 0, cfg.MaxBatch), scores: make([]float32, cfg.MaxBatch)}
	}
	return e
}

// Failures counts the rows whose runtime call failed (not bad input): the
// truck's probation period watches it after a switch.
func (e *Engine) Failures() int64 { return e.failures.Load() }

// Model returns the engine's model.
func (e *Engine) Model() *Model { return e.model }

// PredictOne scores one row, batched with whatever else is in flight.
func (e *Engine) PredictOne(ctx context.Context, row []float32) (Prediction, error) {
	if len(row) != e.model.nFeat {
		return Prediction{}, fmt.Errorf("%w: %d features, model %s expects %d", ErrBadInput, len(row), e.model.meta.Name, e.model.nFeat)
	}
	if e.cfg.Disabled {
		var out [1]float32
		start := time.Now()
		if err := e.model.Scores(row, out[:]); err != nil {
			e.failures.Add(1)
			return Prediction{}, err
		}
		if e.observe != nil {
			e.observe(1, time.Since(start))
		}
		return Prediction{Label: e.model.meta.Label(out[0]), Score: out[0]}, nil
	}
	c := callPool.Get().(*call)
	c.row, c.err = row, nil
	e.gate.RLock()
	if e.closed {
		e.gate.RUnlock()
		callPool.Put(c)
		return Prediction{}, ErrClosed
	}
	select {
	case e.queue <- c:
		e.gate.RUnlock()
	case <-ctx.Done():
		e.gate.RUnlock()
		callPool.Put(c)
		return Prediction{}, ctx.Err()
	}
	// Once queued, the row is always answered (by a runner or by Close), so
	// the call is never abandoned while someone still writes to it.
	for waiting := true; waiting; {
		select {
		case <-c.done:
			waiting = false
		case r := <-e.runners:
			e.runBatch(r)
			e.runners <- r
		}
	}
	score, err := c.score, c.err
	c.row = nil
	callPool.Put(c)
	if err != nil {
		return Prediction{}, err
	}
	return Prediction{Label: e.model.meta.Label(score), Score: score}, nil
}

// Predict scores many rows in one runtime call (they already form a batch).
func (e *Engine) Predict(ctx context.Context, rows [][]float32) ([]Prediction, error) {
	if len(rows) == 1 {
		p, err := e.PredictOne(ctx, rows[0])
		if err != nil {
			return nil, err
		}
		return []Prediction{p}, nil
	}
	start := time.Now()
	out, err := e.model.Predict(rows)
	if err != nil && !errors.Is(err, ErrBadInput) {
		e.failures.Add(1)
	}
	if err == nil && e.observe != nil {
		e.observe(len(rows), time.Since(start))
	}
	return out, err
}

// runBatch scores up to MaxBatch queued rows in one runtime call and answers
// them. The queue may be empty by now (another runner took the rows), and
// then it does nothing.
func (e *Engine) runBatch(r *runner) {
	batch := r.batch[:0]
gather:
	for len(batch) < e.cfg.MaxBatch {
		select {
		case c := <-e.queue:
			batch = append(batch, c)
			continue
		default:
		}
		if e.cfg.MaxDelay <= 0 || len(batch) == 0 {
			break
		}
		if r.timer == nil {
			r.timer = time.NewTimer(e.cfg.MaxDelay)
		} else {
			r.timer.Reset(e.cfg.MaxDelay)
		}
		for len(batch) < e.cfg.MaxBatch {
			select {
			case c := <-e.queue:
				batch = append(batch, c)
			case <-r.timer.C:
				break gather
			}
		}
		r.timer.Stop()
		break
	}
	if len(batch) == 0 {
		return
	}
	nf := e.model.nFeat
	flat := r.sc.input(len(batch))
	for i, c := range batch {
		copy(flat[i*nf:(i+1)*nf], c.row)
	}
	start := time.Now()
	err := r.sc.run(len(batch), r.scores)
	if err != nil {
		e.failures.Add(int64(len(batch)))
	}
	if err == nil && e.observe != nil {
		e.observe(len(batch), time.Since(start))
	}
	for i, c := range batch {
		c.score, c.err = r.scores[i], err
		c.done <- struct{}{}
		batch[i] = nil
	}
}

// Close waits for the runtime calls in progress, answers rows still queued
// with ErrClosed, then closes the model. It is idempotent.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		e.gate.Lock()
		e.closed = true
		e.gate.Unlock()
		for range e.cfg.Workers {
			r := <-e.runners
			r.sc.close()
		}
		// No runner is left and nothing can be queued any more: answer
		// what is.
		for {
			select {
			case c := <-e.queue:
				c.err = ErrClosed
				c.done <- struct{}{}
				continue
			default:
			}
			break
		}
		e.closeErr = e.model.Close()
	})
	return e.closeErr
}
