package server_test

import (
	"context"
	"encoding/json"
	"strings"
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

	errs := make(chan map[string]string, 16)
	preds := make(chan server.PredictionMessage, 16)
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("test-sensor"))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(100)
	c.Subscribe("t/errors", 0, func(_ paho.Client, m paho.Message) {
		var e map[string]string
		json.Unmarshal(m.Payload(), &e)
		errs <- e
	}).Wait()
	c.Subscribe("t/predictions", 0, func(_ paho.Client, m paho.Message) {
		var p server.PredictionMessage
		json.Unmarshal(m.Payload(), &p)
		preds <- p
	}).Wait()

	g := slot.Current().Meta().Golden[0]
	feats, _ := g.Features.MarshalJSON()
	c.Publish("t/readings", 0, false, `{"id":"r-1","features":`+string(feats)+`}`)
	select {
	case p := <-preds:
		if p.ID != "r-1" || p.Model != "aps-failure" || p.ModelVersion != 1 || p.Label != g.Label || p.Time == "" {
			t.Fatalf("prediction %+v, want id r-1, v1, %s", p, g.Label)
		}
	case <-ctx.Done():
		t.Fatal("no prediction")
	}
	select {
	case p := <-got:
		seen = append(seen, p)
	case <-ctx.Done():
		t.Fatal("OnPrediction not called")
	}

	for _, tc := range []struct{ payload, want string }{
		{`{"id":"r-2","features":[1,2]}`, "reading has 2 features"},
		{`{"id":"r-3","values":{"zz_999":1}}`, `unknown feature "zz_999"`},
		{`{"id":"r-4","bogus":1}`, "malformed reading"},
		{`not,a,number`, "not a number"},
	} {
		c.Publish("t/readings", 0, false, tc.payload)
		select {
		case e := <-errs:
			if !strings.Contains(e["error"], tc.want) {
				t.Fatalf("error %q, want it to mention %q", e["error"], tc.want)
			}
		case <-ctx.Done():
			t.Fatalf("no error answer for %s", tc.payload)
		}
	}
	// Still serving after the bad readings, by feature name this time.
	c.Publish("t/readings", 0, false, `{"id":"r-5","values":{"aa_000":1}}`)
	select {
	case p := <-preds:
		if p.ID != "r-5" {
			t.Fatalf("prediction %+v", p)
		}
	case <-ctx.Done():
		t.Fatal("no prediction after bad readings")
	}
	if len(seen) != 1 {
		t.Fatalf("OnPrediction saw %d", len(seen))
	}
}
