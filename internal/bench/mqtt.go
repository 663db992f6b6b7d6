package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/linkedge/linkedge/broker"
)

// MQTTResult is the outcome of the MQTT run.
type MQTTResult struct {
	Predictions int64
	Elapsed     time.Duration
	CPU         float64 // server CPU, cores
}

// Rate is predictions per second.
func (r MQTTResult) Rate() float64 { return float64(r.Predictions) / r.Elapsed.Seconds() }

// runMQTT measures readings→predictions through `linkedge serve --mqtt` and
// an embedded broker: a sensor publishes readings (QoS 0) keeping at most
// window of them unanswered, and a subscriber counts the predictions.
func runMQTT(ctx context.Context, bin, model string, reading []byte, window int64, d, warmup time.Duration) (MQTTResult, error) {
	b, err := broker.New(broker.Config{Listen: "127.0.0.1:0", HTTPListen: ""})
	if err != nil {
		return MQTTResult{}, err
	}
	if err := b.Start(ctx); err != nil {
		return MQTTResult{}, err
	}
	defer b.Close()
	url := "tcp://" + b.Addr()
	addr, err := freeAddr()
	if err != nil {
		return MQTTResult{}, err
	}
	cmd := exec.CommandContext(ctx, bin, "serve", "--log-level", "warn", "--model", model, "--http", addr, "--mqtt", url, "--topic-prefix", "bench")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return MQTTResult{}, err
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}()
	if err := waitReady(ctx, "http://"+addr+"/ping", 60*time.Second); err != nil {
		return MQTTResult{}, err
	}
	var got atomic.Int64
	sub := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("bench-sub").SetOrderMatters(false))
	if t := sub.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return MQTTResult{}, fmt.Errorf("bench: subscriber: %v", t.Error())
	}
	defer sub.Disconnect(100)
	if t := sub.Subscribe("bench/predictions", 0, func(paho.Client, paho.Message) { got.Add(1) }); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return MQTTResult{}, fmt.Errorf("bench: subscribe: %v", t.Error())
	}
	pub := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("bench-pub"))
	if t := pub.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return MQTTResult{}, fmt.Errorf("bench: publisher: %v", t.Error())
	}
	defer pub.Disconnect(100)
	// The bridge subscribes asynchronously after /ping turns 200; give it a
	// moment before counting.
	time.Sleep(500 * time.Millisecond)
	var sent int64
	run := func(until time.Time) {
		for time.Now().Before(until) && ctx.Err() == nil {
			if sent-got.Load() >= window {
				time.Sleep(50 * time.Microsecond)
				continue
			}
			pub.Publish("bench/readings", 0, false, reading)
			sent++
		}
	}
	run(time.Now().Add(warmup))
	n0 := got.Load()
	cpu0, _ := CPUTime(cmd.Process.Pid)
	t0 := time.Now()
	run(t0.Add(d))
	elapsed := time.Since(t0)
	cpu1, _ := CPUTime(cmd.Process.Pid)
	return MQTTResult{Predictions: got.Load() - n0, Elapsed: elapsed, CPU: (cpu1 - cpu0).Seconds() / elapsed.Seconds()}, nil
}
