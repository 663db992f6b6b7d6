package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/bundle"
)

// MQTTConfig connects the inference engine to an MQTT broker: every reading
// on ReadingsTopic gets one prediction on PredictionsTopic.
type MQTTConfig struct {
	// Broker is the broker URL, e.g. "tcp://127.0.0.1:1883". Required.
	Broker string `json:"broker" yaml:"broker"`
	// ClientID defaults to "linkedge-serve-<pid-ish random>".
	ClientID string `json:"client_id" yaml:"client_id"`
	// Username and Password authenticate to the broker, when it asks.
	Username string `json:"username" yaml:"username"`
	Password string `json:"password" yaml:"password"`
	// ReadingsTopic is where rows arrive (a JSON object or one CSV line).
	ReadingsTopic string `json:"readings_topic" yaml:"readings_topic"`
	// PredictionsTopic is where one JSON prediction per reading goes.
	PredictionsTopic string `json:"predictions_topic" yaml:"predictions_topic"`
	// ErrorsTopic receives {"id","error"} for readings that could not be
	// scored. Empty means PredictionsTopic with an "error" member only.
	ErrorsTopic string `json:"errors_topic" yaml:"errors_topic"`
	// QoS for the subscription and the predictions. Default 0: a reading is
	// a sample of a stream, and the next one follows within a second.
	QoS byte `json:"qos" yaml:"qos"`
	// MaxReadingBytes bounds one reading. Default 64 KiB: a reading is one
	// row (an APS row is about 1 KB); a larger one gets an error.
	MaxReadingBytes int `json:"max_reading_bytes" yaml:"max_reading_bytes"`
	// MaxInflight bounds the readings being scored at once. Default 256.
	// Past it, a reading is answered at once with an error on the errors
	// topic (shed, not queued), so a sensor burst cannot pile up
	// goroutines and memory without end.
	MaxInflight int `json:"max_inflight" yaml:"max_inflight"`
	// OnPrediction, when set, sees every prediction before it is published:
	// the truck agent counts alerts with it and queues predictions on disk
	// for the fleet, and a crash between the answer and the queue would
	// lose a prediction the truck already gave. It runs on the goroutine
	// that scored the reading and delays the answer, so it must be quick
	// and must not wait on the bus.
	OnPrediction func(PredictionMessage) `json:"-" yaml:"-"`
	// Logger defaults to slog.Default().
	Logger *slog.Logger `json:"-" yaml:"-"`
	// Registerer receives the bridge's metrics; nil means none.
	Registerer prometheus.Registerer `json:"-" yaml:"-"`
}

// Reading is the JSON form of one input row on the readings topic. Send
// either Features (in model order, null for missing) or Values (by name).
// On the wire each value may also be a string, read as a CSV field is
// ("na" for missing, "60"): the same rules as a JSON row over HTTP.
type Reading struct {
	ID       string              `json:"id,omitempty"`
	Features []*float64          `json:"features,omitempty"`
	Values   map[string]*float64 `json:"values,omitempty"`
}

// PredictionMessage is what the predictions topic carries.
type PredictionMessage struct {
	ID           string  `json:"id"`
	Model        string  `json:"model"`
	ModelVersion int64   `json:"model_version"`
	Label        string  `json:"label"`
	Score        float32 `json:"score"`
	LatencyMS    float64 `json:"latency_ms"`
	Time         string  `json:"time"`
}

// MaxForwardedBatch bounds the size of a forwarded batch a reader accepts.
const MaxForwardedBatch = 1 << 20

// DecodeForwarded reads a message of linkedge/v1/trucks/{truck}/predictions/
// {model}: a JSON array of predictions, as the agent batches them.
func DecodeForwarded(data []byte) ([]PredictionMessage, error) {
	if len(data) > MaxForwardedBatch {
		return nil, fmt.Errorf("forwarded batch of %d bytes is over %d", len(data), MaxForwardedBatch)
	}
	var batch []PredictionMessage
	if err := json.Unmarshal(data, &batch); err != nil {
		return nil, fmt.Errorf("forwarded batch: want a JSON array of predictions: %w", err)
	}
	return batch, nil
}

// MQTTBridge is a running MQTT front end. Close stops it.
type MQTTBridge struct {
	cfg    MQTTConfig
	slot   *inference.Slot
	client paho.Client
	seq    atomic.Int64
	count  *prometheus.CounterVec
	// inflight is read-held while a reading is scored; Close write-locks it
	// to wait for them and to keep new ones out.
	inflight sync.RWMutex
	closed   bool
	once     sync.Once
	// slots holds one token per reading being scored (MaxInflight).
	slots chan struct{}
}

// StartMQTT connects to the broker and subscribes. It returns once the
// subscription is acknowledged, or with an error by ctx's deadline; after
// that it reconnects and resubscribes on its own.
func StartMQTT(ctx context.Context, cfg MQTTConfig, slot *inference.Slot) (*MQTTBridge, error) {
	if cfg.Broker == "" || cfg.ReadingsTopic == "" || cfg.PredictionsTopic == "" {
		return nil, errors.New("mqtt: broker, readings topic and predictions topic are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "linkedge-serve-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	}
	if cfg.QoS > 1 {
		cfg.QoS = 1
	}
	if cfg.MaxReadingBytes <= 0 {
		cfg.MaxReadingBytes = 64 << 10
	}
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = 256
	}
	b := &MQTTBridge{cfg: cfg, slot: slot, slots: make(chan struct{}, cfg.MaxInflight)}
	b.count = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "linkedge_inference_mqtt_readings_total",
		Help: "Readings received over MQTT, by result (ok, bad_input, no_model, error, shed).",
	}, []string{"result"})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(b.count); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("mqtt metrics: %w", err)
			}
			b.count = are.ExistingCollector.(*prometheus.CounterVec)
		}
	}
	subscribed := make(chan error, 1)
	opts := paho.NewClientOptions().AddBroker(cfg.Broker).SetClientID(cfg.ClientID).
		SetUsername(cfg.Username).SetPassword(cfg.Password).
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).SetMaxReconnectInterval(10 * time.Second).
		// Handlers run concurrently so the micro-batcher can gather readings.
		SetOrderMatters(false).
		SetOnConnectHandler(func(c paho.Client) {
			t := c.Subscribe(cfg.ReadingsTopic, cfg.QoS, b.onReading)
			t.Wait()
			select {
			case subscribed <- t.Error():
			default:
			}
			if t.Error() != nil {
				cfg.Logger.Error("mqtt subscribe failed", "topic", cfg.ReadingsTopic, "err", t.Error())
			}
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			cfg.Logger.Warn("mqtt connection lost; reconnecting", "broker", cfg.Broker, "err", err)
		})
	b.client = paho.NewClient(opts)
	b.client.Connect()
	select {
	case err := <-subscribed:
		if err != nil {
			b.client.Disconnect(0)
			return nil, fmt.Errorf("mqtt: subscribe %s: %w", cfg.ReadingsTopic, err)
		}
	case <-ctx.Done():
		b.client.Disconnect(0)
		return nil, fmt.Errorf("mqtt: connect to %s: %w", cfg.Broker, ctx.Err())
	}
	return b, nil
}

func (b *MQTTBridge) onReading(_ paho.Client, msg paho.Message) {
	b.inflight.RLock()
	defer b.inflight.RUnlock()
	if b.closed {
		return
	}
	if n := len(msg.Payload()); n > b.cfg.MaxReadingBytes {
		b.count.WithLabelValues("bad_input").Inc()
		b.publishError(b.idOr(readingID(msg.Payload(), 4096)), inputErr("reading of %d bytes is over the %d-byte limit; a reading is one row", n, b.cfg.MaxReadingBytes))
		return
	}
	select {
	case b.slots <- struct{}{}:
		defer func() { <-b.slots }()
	default:
		// Shed, not queued: paho gives every message a goroutine of its
		// own, so waiting here would pile them up.
		b.count.WithLabelValues("shed").Inc()
		// Shedding must stay cheap: the id is read from a small reading only.
		b.publishError(b.idOr(readingID(msg.Payload(), 4096)), fmt.Errorf("%w: %d readings are being scored already; this one was dropped: send fewer at once, or rows in batches over HTTP",
			ErrOverloaded, b.cfg.MaxInflight))
		return
	}
	start := time.Now()
	id, row, err := b.decode(msg.Payload())
	id = b.idOr(id)
	if err != nil {
		b.count.WithLabelValues("bad_input").Inc()
		b.publishError(id, err)
		return
	}
	lease, err := b.slot.Acquire()
	if err != nil {
		b.count.WithLabelValues("no_model").Inc()
		b.publishError(id, fmt.Errorf("no model is loaded yet: %w", err))
		return
	}
	eng := lease.Backend()
	m := eng.Meta()
	if row == nil {
		err = fmt.Errorf("%w: reading has no features", inference.ErrBadInput)
	} else if vals, ferr := b.fit(row, m); ferr != nil {
		err = ferr
	} else {
		var p inference.Prediction
		p, err = eng.PredictOne(context.Background(), vals)
		if err == nil {
			lease.Release()
			pm := PredictionMessage{ID: id, Model: m.Name, ModelVersion: m.Version, Label: p.Label, Score: p.Score,
				LatencyMS: float64(time.Since(start).Microseconds()) / 1000, Time: time.Now().UTC().Format(time.RFC3339Nano)}
			data, _ := json.Marshal(pm)
			// Hand the prediction on before answering: once the answer is
			// out, an application may act on it, so the agent's queue
			// must already hold it (see MQTTConfig.OnPrediction).
			if b.cfg.OnPrediction != nil {
				b.cfg.OnPrediction(pm)
			}
			b.client.Publish(b.cfg.PredictionsTopic, b.cfg.QoS, false, data)
			b.count.WithLabelValues("ok").Inc()
			return
		}
	}
	lease.Release()
	if errors.Is(err, inference.ErrBadInput) {
		b.count.WithLabelValues("bad_input").Inc()
	} else {
		b.count.WithLabelValues("error").Inc()
	}
	b.publishError(id, err)
}

// decoded row before it is fitted to a model: either positional values or
// named ones.
type rawRow struct {
	pos   []float32
	named map[string]float32 // NaN for a missing value
}

func (b *MQTTBridge) decode(p []byte) (string, *rawRow, error) {
	t := bytes.TrimSpace(p)
	if len(t) == 0 {
		return "", nil, inputErr("empty reading")
	}
	if t[0] != '{' {
		row, err := csvReading(t)
		return "", row, err
	}
	// The members of Reading, each value read by the same rule as a JSON
	// row over HTTP (number): null or "na" for missing, numbers within
	// float32, numeric strings.
	var r struct {
		ID       string         `json:"id,omitempty"`
		Features []any          `json:"features,omitempty"`
		Values   map[string]any `json:"values,omitempty"`
		CSV      *string        `json:"csv,omitempty"`
	}
	dec := json.NewDecoder(bytes.NewReader(t))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(&r); err != nil {
		// Keep the reading's own id whenever it can be read, so that the
		// sender can tell which reading the error is about.
		return readingID(t, len(t)), nil, inputErr("malformed reading: %v", err)
	}
	if len(r.ID) > 128 {
		r.ID = r.ID[:128]
	}
	switch {
	case (r.Features != nil) && (r.Values != nil) || (r.Features != nil || r.Values != nil) && r.CSV != nil:
		return r.ID, nil, inputErr("send one of features, values or csv")
	case r.CSV != nil:
		row, err := csvReading([]byte(*r.CSV))
		return r.ID, row, err
	case r.Features != nil:
		row := make([]float32, len(r.Features))
		for i, x := range r.Features {
			f, err := number(x)
			if err != nil {
				return r.ID, nil, inputErr("value %d: %v", i+1, err)
			}
			row[i] = f
		}
		return r.ID, &rawRow{pos: row}, nil
	case r.Values != nil:
		named := make(map[string]float32, len(r.Values))
		for k, x := range r.Values {
			f, err := number(x)
			if err != nil {
				return r.ID, nil, inputErr("feature %s: %v", truncate([]byte(k), 40), err)
			}
			named[k] = f
		}
		return r.ID, &rawRow{named: named}, nil
	}
	return r.ID, nil, nil
}

func (b *MQTTBridge) fit(r *rawRow, m *bundle.Metadata) ([]float32, error) {
	feats := m.Features
	if r.named == nil {
		if len(r.pos) != len(feats) {
			return nil, fmt.Errorf("%w: reading has %d features, model %s v%d takes %d", inference.ErrBadInput, len(r.pos), m.Name, m.Version, len(feats))
		}
		return r.pos, nil
	}
	idx := make(map[string]int, len(feats))
	for i, f := range feats {
		idx[f] = i
	}
	row := make([]float32, len(feats))
	for i := range row {
		row[i] = nan32
	}
	for k, v := range r.named {
		i, ok := idx[k]
		if !ok {
			return nil, fmt.Errorf("%w: unknown feature %q", inference.ErrBadInput, k)
		}
		row[i] = v
	}
	return row, nil
}

// ErrOverloaded: more readings arrived at once than MQTTConfig.MaxInflight;
// the reading was dropped with an error answer.
var ErrOverloaded = errors.New("overloaded")

// csvReading reads a reading that is one CSV line. (Counting the fields of
// every line as one row's would report the lines' total against the
// model.)
func csvReading(t []byte) (*rawRow, error) {
	t = bytes.TrimSpace(t)
	if n := bytes.Count(t, []byte{'\n'}); n > 0 {
		return nil, inputErr("a reading is one CSV line, this one has %d; publish each row as a reading of its own", n+1)
	}
	rows, err := parseCSV(t, bytes.Count(t, []byte{','})+1, 1)
	if err != nil {
		return nil, err
	}
	return &rawRow{pos: rows[0]}, nil
}

// idOr returns id, or for a reading without one "r<sequence>".
func (b *MQTTBridge) idOr(id string) string {
	if id == "" {
		return "r" + strconv.FormatInt(b.seq.Add(1), 10)
	}
	return id
}

// readingID returns the id of a JSON reading of at most limit bytes ("" for
// anything else, or without one), cut to 128 bytes.
func readingID(p []byte, limit int) string {
	t := bytes.TrimSpace(p)
	if len(t) == 0 || t[0] != '{' || len(t) > limit {
		return ""
	}
	var r struct {
		ID string `json:"id"`
	}
	json.Unmarshal(t, &r)
	if len(r.ID) > 128 {
		r.ID = r.ID[:128]
	}
	return r.ID
}

func (b *MQTTBridge) publishError(id string, err error) {
	topic := b.cfg.ErrorsTopic
	if topic == "" {
		topic = b.cfg.PredictionsTopic
	}
	data, _ := json.Marshal(map[string]string{"id": id, "error": err.Error()})
	b.client.Publish(topic, b.cfg.QoS, false, data)
	b.cfg.Logger.Debug("reading refused", "id", id, "err", err)
}

// Close unsubscribes, waits for readings being scored, and disconnects. It
// is idempotent.
func (b *MQTTBridge) Close() error {
	b.once.Do(func() {
		if b.client.IsConnectionOpen() {
			b.client.Unsubscribe(b.cfg.ReadingsTopic).WaitTimeout(2 * time.Second)
		}
		b.inflight.Lock()
		b.closed = true
		b.inflight.Unlock()
		b.client.Disconnect(250)
	})
	return nil
}
