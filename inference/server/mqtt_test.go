package server_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/linkedge/linkedge/broker"
	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/inference/server"
)

// TestMQTTBridge scores readings arriving over a real broker on loopback and
// checks the predictions and the error answers.
func TestMQTTBridge(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := startTestBroker(ctx, t)
	slot := &inference.Slot{}
	slot.Swap(engine(t, apsmodels.V1(), nil), 0)
	defer slot.Close()
	var seen []server.PredictionMessage
	got := make(chan server.PredictionMessage, 16)
	br, err := server.StartMQTT(ctx, server.MQTTConfig{Broker: url, ReadingsTopic: "t/readings", PredictionsTopic: "t/predictions",
		ErrorsTopic: "t/errors", OnPrediction: func(p server.PredictionMessage) { got <- p }}, slot)
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	br.Close() // idempotent
	br, err = server.StartMQTT(ctx, server.MQTTConfig{Broker: url, ReadingsTopic: "t/readings", PredictionsTopic: "t/predictions",
		ErrorsTopic: "t/errors", OnPrediction: func(p server.PredictionMessage) { got <- p }}, slot)
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()

	sn := newSensor(t, url, "test-sensor")
	c := sn.c
	onPrediction := func(what string) server.PredictionMessage {
		t.Helper()
		select {
		case p := <-got:
			return p
		case <-ctx.Done():
			t.Fatalf("OnPrediction not called for %s", what)
			return server.PredictionMessage{}
		}
	}

	g := slot.Current().Meta().Golden[0]
	feats, _ := g.Features.MarshalJSON()
	c.Publish("t/readings", 0, false, `{"id":"r-1","features":`+string(feats)+`}`)
	if p := sn.nextPrediction(ctx, t, "r-1"); p.ID != "r-1" || p.Model != "aps-failure" || p.ModelVersion != 1 || p.Label != g.Label || p.Time == "" {
		t.Fatalf("prediction %+v, want id r-1, v1, %s", p, g.Label)
	}
	seen = append(seen, onPrediction("r-1"))

	for _, tc := range []struct{ payload, want string }{
		{`{"id":"r-2","features":[1,2]}`, "reading has 2 features"},
		{`{"id":"r-3","values":{"zz_999":1}}`, `unknown feature "zz_999"`},
		{`{"id":"r-4","bogus":1}`, "malformed reading"},
		{`{"id":"r-4b","features":"not an array"}`, "malformed reading"},
		{`not,a,number`, "not a number"},
		{"1,2,3\n4,5,6", "a reading is one CSV line, this one has 2"}, // issue 12 #8: not "line 1 has 6 fields"
		// Issue 12 #6: the values follow the HTTP JSON rules.
		{`{"id":"r-6","values":{"aa_000":1e40}}`, "out of float32 range"},
		{`{"id":"r-7","features":[true]}`, "not a number"},
		{`{"id":"r-8","csv":"1,2","values":{"aa_000":1}}`, "send one of features, values or csv"},
		{`{"id":"r-9","csv":"1,2"}`, "reading has 2 features"},
	} {
		c.Publish("t/readings", 0, false, tc.payload)
		e := sn.nextError(ctx, t, tc.payload)
		if !strings.Contains(e["error"], tc.want) {
			t.Fatalf("error %q, want it to mention %q", e["error"], tc.want)
		}
		// The reading's own id, whenever it has one (issue 12 #4).
		var sent struct {
			ID string `json:"id"`
		}
		if json.Unmarshal([]byte(tc.payload), &sent) == nil && sent.ID != "" && e["id"] != sent.ID {
			t.Fatalf("error for %s carries id %q, want %q", tc.payload, e["id"], sent.ID)
		}
	}
	// A CSV row with an id of its own (issue 12 #5: plain CSV readings are
	// numbered in the order they are scored, which under a burst is not
	// the order they arrived in).
	c.Publish("t/readings", 0, false, `{"id":"csv-1","csv":"`+strings.TrimSuffix(strings.Repeat("na,", len(slot.Current().Meta().Features)), ",")+`"}`)
	if p := sn.nextPrediction(ctx, t, "a CSV reading with an id"); p.ID != "csv-1" {
		t.Fatalf("prediction %+v, want csv-1", p)
	}
	onPrediction("csv-1")
	// Still serving after the bad readings, by feature name this time, with
	// the value forms JSON over HTTP takes too ("na", "60", null).
	c.Publish("t/readings", 0, false, `{"id":"r-5","values":{"aa_000":"60","ab_000":"na","ac_000":null}}`)
	if p := sn.nextPrediction(ctx, t, "r-5, after the bad readings"); p.ID != "r-5" {
		t.Fatalf("prediction %+v", p)
	}
	if len(seen) != 1 {
		t.Fatalf("OnPrediction saw %d", len(seen))
	}
}

// TestMQTTOnPredictionBeforeAnswer: OnPrediction (where the truck agent
// queues a prediction for the fleet) runs before the answer is on the bus,
// so a crash in between cannot lose a prediction an application already
// has. The callback waits a while for the answer to show up at a
// subscriber: with the answer published first, it shows up at once.
func TestMQTTOnPredictionBeforeAnswer(t *testing.T) {
	b, err := broker.New(broker.Config{Listen: "127.0.0.1:0", HTTPListen: ""})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	url := "tcp://" + b.Addr()
	slot := &inference.Slot{}
	slot.Swap(engine(t, apsmodels.V1(), nil), 0)
	defer slot.Close()

	var mu sync.Mutex
	answered := map[string]chan struct{}{} // closed when the app has the answer
	answer := func(id string, arrived bool) chan struct{} {
		mu.Lock()
		defer mu.Unlock()
		ch := answered[id]
		if ch == nil {
			ch = make(chan struct{})
			answered[id] = ch
		}
		if arrived {
			select {
			case <-ch: // a QoS 1 duplicate
			default:
				close(ch)
			}
		}
		return ch
	}
	app := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("test-app"))
	if tok := app.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer app.Disconnect(100)
	if tok := app.Subscribe("t/predictions", 1, func(_ paho.Client, m paho.Message) {
		var p server.PredictionMessage
		if json.Unmarshal(m.Payload(), &p) == nil {
			answer(p.ID, true)
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	type call struct {
		id            string
		answeredFirst bool
	}
	calls := make(chan call, 4)
	br, err := server.StartMQTT(ctx, server.MQTTConfig{Broker: url, ReadingsTopic: "t/readings", PredictionsTopic: "t/predictions", QoS: 1,
		OnPrediction: func(p server.PredictionMessage) {
			// Long enough for an answer already published to arrive,
			// bounded so that the test ends either way.
			select {
			case <-answer(p.ID, false):
				calls <- call{p.ID, true}
			case <-time.After(500 * time.Millisecond):
				calls <- call{p.ID, false}
			}
		}}, slot)
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()

	feats, _ := slot.Current().Meta().Golden[0].Features.MarshalJSON()
	sensor := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("test-sensor"))
	if tok := sensor.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer sensor.Disconnect(100)
	for _, id := range []string{"r-1", "r-2"} {
		sensor.Publish("t/readings", 1, false, `{"id":"`+id+`","features":`+string(feats)+`}`)
		select {
		case c := <-calls:
			if c.id != id {
				t.Fatalf("OnPrediction saw %q, want %q", c.id, id)
			}
			if c.answeredFirst {
				t.Fatalf("prediction %s was on the bus before OnPrediction saw it", id)
			}
		case <-ctx.Done():
			t.Fatalf("OnPrediction not called for %s", id)
		}
		// And the answer does follow.
		select {
		case <-answer(id, false):
		case <-ctx.Done():
			t.Fatalf("no answer for %s", id)
		}
	}
}

// Issue 12 #7: a reading over the size limit gets an error, and readings
// past MaxInflight are shed at once with an error naming them, not queued
// on goroutines without end.
func TestMQTTBridgeLimits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := startTestBroker(ctx, t)
	slot := &inference.Slot{}
	slot.Swap(engine(t, apsmodels.V1(), nil), 0)
	defer slot.Close()
	release, entered := make(chan struct{}), make(chan string, 4)
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	defer unblock()
	br, err := server.StartMQTT(ctx, server.MQTTConfig{Broker: url, ReadingsTopic: "t/readings", PredictionsTopic: "t/predictions",
		ErrorsTopic: "t/errors", MaxInflight: 1, MaxReadingBytes: 8 << 10,
		OnPrediction: func(p server.PredictionMessage) { entered <- p.ID; <-release }}, slot)
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	sn := newSensor(t, url, "test-burst")
	c := sn.c
	next := func(what string) map[string]string { t.Helper(); return sn.nextError(ctx, t, what) }

	big := `{"id":"big","values":{"aa_000":1},"pad":"` + strings.Repeat("x", 9<<10) + `"}`
	c.Publish("t/readings", 0, false, big)
	if e := next("the big reading"); !strings.Contains(e["error"], "over the 8192-byte limit") {
		t.Fatalf("big reading: %v", e)
	}

	c.Publish("t/readings", 0, false, `{"id":"first","values":{"aa_000":1}}`)
	select { // the first is scored, and held in OnPrediction
	case <-entered:
	case <-ctx.Done():
		t.Fatal("the first reading was not scored")
	}
	for _, id := range []string{"second", "third"} {
		c.Publish("t/readings", 0, false, `{"id":"`+id+`","values":{"aa_000":1}}`)
		if e := next(id); e["id"] != id || !strings.Contains(e["error"], "overloaded") {
			t.Fatalf("%s while one is scored: %v", id, e)
		}
	}
	unblock()
	if p := sn.nextPrediction(ctx, t, "the first reading"); p.ID != "first" {
		t.Fatalf("prediction %+v, want the first reading's", p)
	}
}

// startTestBroker starts a broker on a free port for the test's life and
// returns its URL.
func startTestBroker(ctx context.Context, t *testing.T) string {
	t.Helper()
	b, err := broker.New(broker.Config{Listen: "127.0.0.1:0", HTTPListen: ""})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return "tcp://" + b.Addr()
}

// sensor is a client on the readings side: what it publishes, and the
// errors and predictions it gets back.
type sensor struct {
	c     paho.Client
	errs  chan map[string]string
	preds chan server.PredictionMessage
}

func newSensor(t *testing.T, url, id string) *sensor {
	t.Helper()
	s := &sensor{errs: make(chan map[string]string, 16), preds: make(chan server.PredictionMessage, 16)}
	s.c = paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(id))
	if tok := s.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	t.Cleanup(func() { s.c.Disconnect(100) })
	s.c.Subscribe("t/errors", 0, func(_ paho.Client, m paho.Message) {
		var e map[string]string
		json.Unmarshal(m.Payload(), &e)
		s.errs <- e
	}).Wait()
	s.c.Subscribe("t/predictions", 0, func(_ paho.Client, m paho.Message) {
		var p server.PredictionMessage
		json.Unmarshal(m.Payload(), &p)
		s.preds <- p
	}).Wait()
	return s
}

// nextError waits (until ctx ends) for the next error answer.
func (s *sensor) nextError(ctx context.Context, t *testing.T, what string) map[string]string {
	t.Helper()
	select {
	case e := <-s.errs:
		return e
	case <-ctx.Done():
		t.Fatalf("no error answer for %s", what)
		return nil
	}
}

// nextPrediction waits (until ctx ends) for the next prediction.
func (s *sensor) nextPrediction(ctx context.Context, t *testing.T, what string) server.PredictionMessage {
	t.Helper()
	select {
	case p := <-s.preds:
		return p
	case <-ctx.Done():
		t.Fatalf("no prediction for %s", what)
		return server.PredictionMessage{}
	}
}
