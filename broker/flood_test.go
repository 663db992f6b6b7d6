//go:build linux

package broker

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/linkedge/linkedge/internal/testbin"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup() // the linkedge binary TestA5FloodMemory builds
	os.Exit(code)
}

// The A5 attack as it was first run against the broker, with one truck
// login: a 50 MB retained message, then 3,000 retained topics in 2 s, about
// 50 KB each (the 157 MB broker.db it left behind). It took the broker from
// 32 to 303 MB of RSS.
const (
	floodBigPublish = 50 << 20
	floodTopics     = 3000
	floodPayload    = 48 << 10
	floodSpread     = 2 * time.Second
	// floodMaxRSS is the security issue's bound on the broker's peak RSS.
	floodMaxRSS = 100 << 20
)

// TestA5FloodMemory floods the real `linkedge broker` process (users file,
// data dir, default settings but no truck budget) with the A5 attack from two truck logins at
// once and checks that its peak RSS stays under 100 MB, that the flood
// left nothing but the trucks' statuses retained and that the broker still
// serves a fresh client. The numbers are logged (go test -v) for
// docs/security.md.
func TestA5FloodMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds linkedge and floods its broker as a child process")
	}
	users := writeUsersFile(t, map[string]string{
		"t1":  "truck:t1-pw",
		"t2":  "truck:t2-pw",
		"ops": "operator:ops-pw",
	})
	data := filepath.Join(t.TempDir(), "data")
	// Without the truck budget, which would stretch the flood to half an
	// hour: this measures the packet size limit and the retain rules
	// alone (TestEventsFloodMemory measures the budget).
	conf := filepath.Join(t.TempDir(), "broker.yaml")
	if err := os.WriteFile(conf, []byte("truck_messages_per_second: -1\ntruck_bytes_per_second: -1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startBrokerProcess(t, testbin.Linkedge(t),
		"broker", "--config", conf, "--listen", "127.0.0.1:0", "--http", "", "--data", data, "--users", users)
	idle, err := procMemory(p.pid())
	if err != nil {
		t.Fatal(err)
	}
	stopSampling := p.sampleRSS(10 * time.Millisecond)

	start := time.Now()
	trucks := []string{"t1", "t2"}
	errs := make([]error, len(trucks))
	var wg sync.WaitGroup
	for i, truck := range trucks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = floodAsTruck(p.addr, truck)
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	sampled := stopSampling()
	after, err := procMemory(p.pid())
	if err != nil {
		t.Fatal(err)
	}
	dataBytes := dirSize(t, data)
	t.Logf("A5 flood, 2 trucks (each: a %d MB retained publish, then %d retained publishes of %d KB in %s): took %s",
		floodBigPublish>>20, floodTopics, floodPayload>>10, floodSpread, took.Round(10*time.Millisecond))
	t.Logf("broker RSS: idle %.1f MB, after %.1f MB, peak sampled %.1f MB, VmHWM %.1f MB; data dir %.2f MB",
		mb(idle.rss), mb(after.rss), mb(sampled), mb(after.hwm), mb(dataBytes))
	// The kernel updates VmHWM lazily; a sample can be a little higher.
	if peak := max(after.hwm, sampled); peak >= floodMaxRSS {
		t.Errorf("broker peak RSS %.1f MB, want under %.0f MB", mb(peak), mb(floodMaxRSS))
	}

	// A fresh client is served, and finds the trucks' statuses retained
	// and nothing else the flood sent.
	var mu sync.Mutex
	got := map[string]int{}
	var other atomic.Int64
	ops := connect(t, clientOpts(p.addr).SetUsername("ops").SetPassword("ops-pw"))
	await(t, "subscribe", ops.Subscribe("linkedge/v1/#", 1, func(_ paho.Client, m paho.Message) {
		if !m.Retained() {
			// A flood publish still being fanned out (mochi acknowledges
			// before it delivers) arrives live; only retained ones count.
			return
		}
		if !strings.HasSuffix(m.Topic(), "/status") {
			other.Add(1)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		got[m.Topic()] = len(m.Payload())
	}))
	deadline := time.Now().Add(waitFor)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == len(trucks) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // anything else retained arrives with them
	mu.Lock()
	defer mu.Unlock()
	for _, truck := range trucks {
		if n, ok := got["linkedge/v1/trucks/"+truck+"/status"]; !ok || n != len("online") {
			t.Errorf("retained status of %s: %d bytes (present %v), want %q", truck, n, ok, "online")
		}
	}
	if n := other.Load(); n > 0 {
		t.Errorf("a fresh subscriber got %d retained messages besides the statuses", n)
	}
	// Nothing of the flood was stored: the file holds two statuses and a
	// session or two.
	if dataBytes > 8<<20 {
		t.Errorf("data dir holds %.1f MB after the flood", mb(dataBytes))
	}
}

// floodAsTruck runs the A5 attack as one truck: the oversized retained
// status (which must cost it the connection), then floodTopics retained
// publishes on distinct topics of its own tree spread over floodSpread,
// then its real status.
func floodAsTruck(addr, truck string) error {
	opts := func() *paho.ClientOptions {
		return clientOpts(addr).SetClientID(truckClientPrefix + truck).SetUsername(truck).SetPassword(truck + "-pw")
	}
	status := topicTrucks + truck + "/status"

	lost := make(chan struct{})
	var once sync.Once
	c := paho.NewClient(opts().SetConnectionLostHandler(func(paho.Client, error) { once.Do(func() { close(lost) }) }))
	if err := waitToken("connect", c.Connect()); err != nil {
		return err
	}
	c.Publish(status, 1, true, make([]byte, floodBigPublish))
	select {
	case <-lost:
	case <-time.After(waitFor):
		c.Disconnect(0)
		return fmt.Errorf("still connected %s after a %d MB publish", waitFor, floodBigPublish>>20)
	}

	c = paho.NewClient(opts())
	if err := waitToken("reconnect", c.Connect()); err != nil {
		return err
	}
	defer c.Disconnect(250)
	payload := bytes.Repeat([]byte{'x'}, floodPayload)
	toks := make([]paho.Token, 0, floodTopics)
	begin := time.Now()
	for i := range floodTopics {
		toks = append(toks, c.Publish(fmt.Sprintf("%s%s/predictions/m%d", topicTrucks, truck, i), 1, true, payload))
		if i%100 == 99 {
			time.Sleep(time.Until(begin.Add(floodSpread * time.Duration(i+1) / floodTopics)))
		}
	}
	for i, tok := range toks {
		if err := waitToken(fmt.Sprintf("flood publish %d", i), tok); err != nil {
			return err
		}
	}
	return waitToken("status", c.Publish(status, 1, true, "online"))
}

// waitToken waits for a paho token, at most waitFor.
func waitToken(what string, tok paho.Token) error {
	if !tok.WaitTimeout(waitFor) {
		return fmt.Errorf("%s: timed out after %s", what, waitFor)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// brokerProc is `linkedge broker` running as a child process.
type brokerProc struct {
	cmd  *exec.Cmd
	addr string // the MQTT address it logged
	done chan struct{}

	mu  sync.Mutex
	log bytes.Buffer // its stderr
}

var mqttAddrRE = regexp.MustCompile(`mqtt_addr=(\S+)`)

// startBrokerProcess runs bin with args, waits for it to log its MQTT
// address, and stops it (SIGTERM, then SIGKILL) when the test ends. Its
// log is shown if the test fails.
func startBrokerProcess(t *testing.T, bin string, args ...string) *brokerProc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	// Dies with the test process, should a test timeout kill that.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	p := &brokerProc{cmd: cmd, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			if m := mqttAddrRE.FindStringSubmatch(line); m != nil && strings.Contains(line, "mqtt broker started") {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(waitFor):
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			p.mu.Lock()
			t.Logf("broker log:\n%s", p.log.String())
			p.mu.Unlock()
		}
	})
	select {
	case p.addr = <-addr:
	case <-p.done:
		t.Fatal("the broker exited before it started")
	case <-time.After(waitFor):
		t.Fatalf("the broker did not log its address within %s", waitFor)
	}
	return p
}

func (p *brokerProc) pid() int { return p.cmd.Process.Pid }

// sampleRSS polls the process's VmRSS every interval until the returned
// function is called, which returns the highest value seen.
func (p *brokerProc) sampleRSS(interval time.Duration) func() int64 {
	stop, done := make(chan struct{}), make(chan struct{})
	var peak int64
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			if m, err := procMemory(p.pid()); err == nil {
				peak = max(peak, m.rss)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return func() int64 {
		close(stop)
		<-done
		return peak
	}
}

// memory is what /proc/{pid}/status says, in bytes: the resident set
// now (VmRSS) and its peak over the process's life (VmHWM).
type memory struct{ rss, hwm int64 }

func procMemory(pid int) (memory, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, fmt.Errorf("read memory of process %d: %w", pid, err)
	}
	var m memory
	for line := range strings.Lines(string(data)) {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *int64
		switch key {
		case "VmRSS":
			dst = &m.rss
		case "VmHWM":
			dst = &m.hwm
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			return memory{}, fmt.Errorf("process %d: %s: %w", pid, strings.TrimSpace(line), err)
		}
		*dst = kb << 10
	}
	return m, nil
}

// dirSize sums the sizes of the files under dir.
func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		n += info.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mb(n int64) float64 { return float64(n) / (1 << 20) }

// The events flood: one truck login publishing as fast as it can on its
// own events topic, which the publisher reads at QoS 1 with a persistent
// session. Before the truck budget and the session queue cap it took the
// broker to 0.8 GB of RSS with the publisher reading and 1.4 GB with it
// offline (docs/security.md).
const (
	// eventsFloodFor bounds the flood in time, eventsFloodBytes in volume
	// (the broker without a bound took it all in about 3 s).
	eventsFloodFor   = 10 * time.Second
	eventsFloodBytes = 600 << 20
	eventsPayload    = 200 << 10
	// eventsReadDelay is how long the reading publisher spends on one
	// message: the real one decodes and judges each event.
	eventsReadDelay = 50 * time.Millisecond
)

// TestEventsFloodMemory floods the real `linkedge broker` process (users
// file, data dir, default settings) from one truck login on its events
// topic, with the publisher's persistent session reading slowly and with
// it offline, and checks that the broker's peak RSS stays under 100 MB and
// that it still serves the publisher afterwards. The numbers are logged
// (go test -v) for docs/security.md.
func TestEventsFloodMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds linkedge and floods its broker as a child process")
	}
	for _, reading := range []bool{true, false} {
		name := map[bool]string{true: "publisher reading", false: "publisher offline"}[reading]
		t.Run(name, func(t *testing.T) {
			users := writeUsersFile(t, map[string]string{
				"t1":  "truck:t1-pw",
				"t2":  "truck:t2-pw",
				"pub": "publisher:pub-pw",
			})
			data := filepath.Join(t.TempDir(), "data")
			p := startBrokerProcess(t, testbin.Linkedge(t),
				"broker", "--listen", "127.0.0.1:0", "--http", "", "--data", data, "--users", users)

			// The publisher's persistent session, subscribed to every
			// truck's events at QoS 1.
			var got atomic.Int64
			pubOpts := clientOpts(p.addr).SetClientID("linkedge-publisher").SetUsername("pub").SetPassword("pub-pw").
				SetCleanSession(false)
			var handler paho.MessageHandler = func(_ paho.Client, m paho.Message) {
				got.Add(1)
				time.Sleep(eventsReadDelay)
			}
			pub := connect(t, pubOpts)
			await(t, "subscribe", pub.Subscribe("linkedge/v1/trucks/+/events", 1, handler))
			if !reading {
				pub.Disconnect(250)
			}

			idle, err := procMemory(p.pid())
			if err != nil {
				t.Fatal(err)
			}
			stopSampling := p.sampleRSS(10 * time.Millisecond)
			sent, took, err := rawFlood(p.addr, "t1", topicTrucks+"t1/events", eventsPayload, eventsFloodBytes, eventsFloodFor)
			if err != nil {
				t.Fatal(err)
			}
			// What the broker took in is still being delivered (or
			// stored): keep sampling a little while.
			time.Sleep(2 * time.Second)
			sampled := stopSampling()
			after, err := procMemory(p.pid())
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("events flood, %s: 1 truck sent %.1f MB in %d KB publishes in %s; the publisher read %d",
				name, mb(sent), eventsPayload>>10, took.Round(10*time.Millisecond), got.Load())
			t.Logf("broker RSS: idle %.1f MB, after %.1f MB, peak sampled %.1f MB, VmHWM %.1f MB; data dir %.2f MB",
				mb(idle.rss), mb(after.rss), mb(sampled), mb(after.hwm), mb(dirSize(t, data)))
			if peak := max(after.hwm, sampled); peak >= floodMaxRSS {
				t.Errorf("broker peak RSS %.1f MB, want under %.0f MB", mb(peak), mb(floodMaxRSS))
			}

			// The broker still serves the publisher: its session resumes,
			// and another truck's event reaches it.
			if reading {
				pub.Disconnect(250)
			}
			in := newInbox()
			fromT2 := func(_ paho.Client, m paho.Message) {
				if strings.HasPrefix(m.Topic(), topicTrucks+"t2/") {
					in <- m
				}
			}
			pub = connect(t, pubOpts.SetDefaultPublishHandler(fromT2))
			await(t, "subscribe again", pub.Subscribe("linkedge/v1/trucks/+/events", 1, fromT2))
			t2 := connect(t, clientOpts(p.addr).SetClientID(truckClientPrefix+"t2").SetUsername("t2").SetPassword("t2-pw"))
			publish(t, t2, topicTrucks+"t2/events", 1, false, `{"event":"update_failed"}`)
			if m := in.next(t); string(m.Payload()) != `{"event":"update_failed"}` {
				t.Errorf("the publisher got %q from t2, want its event", m.Payload())
			}
		})
	}
}

// rawFlood logs in as truck and writes QoS 1 publishes of size bytes on
// topic as fast as the connection takes them, until limit bytes are sent or
// d has passed. It writes raw packets rather than through paho, whose
// Publish blocks without a bound once the broker stops reading; the
// broker's PUBACKs are read and discarded. It returns the bytes written and
// how long that took.
func rawFlood(addr, truck, topic string, size, limit int, d time.Duration) (int64, time.Duration, error) {
	conn, err := net.DialTimeout("tcp", addr, waitFor)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	var buf bytes.Buffer
	connectPk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60,
			ClientIdentifier: truckClientPrefix + truck,
			UsernameFlag:     true, Username: []byte(truck),
			PasswordFlag: true, Password: []byte(truck + "-pw"),
		},
	}
	if err := connectPk.ConnectEncode(&buf); err != nil {
		return 0, 0, err
	}
	_ = conn.SetDeadline(time.Now().Add(waitFor))
	if _, err := conn.Write(buf.Bytes()); err != nil {
		return 0, 0, fmt.Errorf("write connect: %w", err)
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(conn, ack); err != nil {
		return 0, 0, fmt.Errorf("read connack: %w", err)
	}
	if ack[0] != 0x20 || ack[3] != 0 {
		return 0, 0, fmt.Errorf("connect refused: connack % x", ack)
	}
	_ = conn.SetDeadline(time.Time{})
	go func() { _, _ = io.Copy(io.Discard, conn) }() // PUBACKs; ends with the conn

	payload := bytes.Repeat([]byte{'x'}, size)
	start := time.Now()
	end := start.Add(d)
	_ = conn.SetWriteDeadline(end)
	var sent int64
	for id := 0; sent < int64(limit) && time.Now().Before(end); id++ {
		buf.Reset()
		pk := packets.Packet{
			FixedHeader:     packets.FixedHeader{Type: packets.Publish, Qos: 1},
			ProtocolVersion: 4,
			TopicName:       topic,
			PacketID:        uint16(id%65535 + 1),
			Payload:         payload,
		}
		if err := pk.PublishEncode(&buf); err != nil {
			return sent, time.Since(start), err
		}
		n, err := conn.Write(buf.Bytes())
		sent += int64(n)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			break // the broker stopped reading, as it should
		}
		if err != nil {
			return sent, time.Since(start), fmt.Errorf("publish %d: %w", id, err)
		}
	}
	return sent, time.Since(start), nil
}
