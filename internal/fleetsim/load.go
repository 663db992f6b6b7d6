package fleetsim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/linkedge/linkedge/inference/aps"
	"github.com/linkedge/linkedge/internal/topics"
)

// sample rows shared by every truck: synthetic APS-shaped test rows.
var (
	rowsOnce sync.Once
	rowsJSON [][]byte
	rowsCSV  []string
)

func sampleRows() {
	rowsOnce.Do(func() {
		ds := aps.Generate(7, 1000, 0.05)
		for i, x := range ds.X {
			feats := make([]*float64, len(x))
			parts := make([]string, len(x))
			for j, v := range x {
				if v != v {
					parts[j] = "na"
					continue
				}
				f := float64(v)
				feats[j] = &f
				parts[j] = strconv.FormatFloat(f, 'g', -1, 32)
			}
			b, _ := json.Marshal(map[string]any{"id": strconv.Itoa(i), "features": feats})
			rowsJSON = append(rowsJSON, b)
			rowsCSV = append(rowsCSV, strings.Join(parts, ","))
		}
	})
}

// Load is one truck's traffic: sensors publishing readings on the local
// bus, and an application querying the HTTP endpoint without pause.
type Load struct {
	truck *Truck

	Readings    atomic.Int64 // published
	Predictions atomic.Int64 // received on the local predictions topic
	PredErrors  atomic.Int64 // error answers on the local bus
	HTTPOK      atomic.Int64
	HTTPFailed  atomic.Int64
	mu          sync.Mutex
	byVersion   map[string]int64 // HTTP answers by model version
	lastFailure string

	paused atomic.Bool
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mqtt   paho.Client
}

func startLoad(t *Truck, opts Options) *Load {
	sampleRows()
	ctx, cancel := context.WithCancel(context.Background())
	l := &Load{truck: t, cancel: cancel, byVersion: map[string]int64{}}
	model := t.cfg.Model
	o := paho.NewClientOptions().AddBroker("tcp://" + t.Agent.LocalBrokerAddr()).
		SetClientID("sensors-" + t.ID).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(200 * time.Millisecond).SetMaxReconnectInterval(time.Second).
		SetOnConnectHandler(func(c paho.Client) {
			c.Subscribe(topics.LocalPredictions(model), 0, func(_ paho.Client, m paho.Message) {
				if strings.Contains(string(m.Payload()), `"error"`) {
					l.PredErrors.Add(1)
					return
				}
				l.Predictions.Add(1)
			})
		})
	l.mqtt = paho.NewClient(o)
	l.mqtt.Connect()
	l.wg.Add(1)
	go l.sensors(ctx, opts.SensorInterval, model)
	for i := range opts.HTTPClients {
		l.wg.Add(1)
		go l.app(ctx, i)
	}
	return l
}

func (l *Load) sensors(ctx context.Context, every time.Duration, model string) {
	defer l.wg.Done()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if l.paused.Load() || !l.mqtt.IsConnectionOpen() {
			continue
		}
		l.mqtt.Publish(topics.LocalReadings(model), 0, false, rowsJSON[i%len(rowsJSON)])
		l.Readings.Add(1)
	}
}

func (l *Load) app(ctx context.Context, n int) {
	defer l.wg.Done()
	client := &http.Client{Timeout: 10 * time.Second}
	// An application starts asking once the truck has a model; before that
	// every answer is a 503 by design, not a failure worth counting.
	for l.truck.agent().Status().Version == 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
	for i := n * 97; ctx.Err() == nil; i++ {
		if l.paused.Load() {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		url := "http://" + l.truck.agent().HTTPAddr() + "/invocations"
		resp, err := client.Post(url, "text/csv", strings.NewReader(rowsCSV[i%len(rowsCSV)]))
		if err != nil {
			if ctx.Err() == nil {
				l.fail(err.Error())
			}
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			l.fail(fmt.Sprintf("HTTP %d", resp.StatusCode))
			continue
		}
		l.HTTPOK.Add(1)
		l.mu.Lock()
		l.byVersion[resp.Header.Get("X-Linkedge-Model-Version")]++
		l.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
}

func (l *Load) fail(why string) {
	l.HTTPFailed.Add(1)
	l.mu.Lock()
	l.lastFailure = why
	l.mu.Unlock()
}

// LastFailure describes the latest failed HTTP request.
func (l *Load) LastFailure() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastFailure
}

// ByVersion returns the HTTP answers counted per model version.
func (l *Load) ByVersion() map[string]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int64, len(l.byVersion))
	for k, v := range l.byVersion {
		out[k] = v
	}
	return out
}

// Pause stops sending (e.g. while the agent restarts); Resume goes on.
func (l *Load) Pause()  { l.paused.Store(true) }
func (l *Load) Resume() { l.paused.Store(false) }

// Stop ends the traffic.
func (l *Load) Stop() {
	l.cancel()
	l.wg.Wait()
	l.mqtt.Disconnect(100)
}
