package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/linkedge/linkedge/internal/netsim"
)

// Capture is a running tcpdump on the loopback interface, limited to some
// TCP ports: the proxies' listening ports, so that it sees exactly the
// truck's side of the link.
type Capture struct {
	cmd    *exec.Cmd
	file   string
	ports  map[uint16]bool
	mu     sync.Mutex
	stderr bytes.Buffer
	done   chan error
}

// StartCapture starts tcpdump on lo for TCP on ports, writing to a file in
// dir, and returns once tcpdump says it is listening. It needs tcpdump and
// the right to capture (root, or CAP_NET_RAW).
func StartCapture(ctx context.Context, dir string, ports ...int) (*Capture, error) {
	bin, err := exec.LookPath("tcpdump")
	if err != nil {
		return nil, fmt.Errorf("--tcpdump: %w (on Debian: apt-get install tcpdump)", err)
	}
	c := &Capture{file: filepath.Join(dir, fmt.Sprintf("link-%d.pcap", time.Now().UnixNano())), ports: map[uint16]bool{}, done: make(chan error, 1)}
	var filter []string
	for _, p := range ports {
		c.ports[uint16(p)] = true
		filter = append(filter, "port "+strconv.Itoa(p))
	}
	// -s 200 keeps every header (Ethernet 14 + IPv4 up to 60 + TCP up to
	// 60); -U writes each packet as it comes; -Z root keeps the right to
	// write into dir.
	c.cmd = exec.Command(bin, "-i", "lo", "-n", "-U", "-s", "200", "-B", "4096", "-Z", "root", "-w", c.file,
		"tcp and ("+strings.Join(filter, " or ")+")")
	pr, pw := io.Pipe()
	c.cmd.Stderr = pw
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("tcpdump: %w", err)
	}
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			c.mu.Lock()
			c.stderr.WriteString(sc.Text() + "\n")
			c.mu.Unlock()
			if strings.Contains(sc.Text(), "listening on") {
				once.Do(func() { close(listening) })
			}
		}
	}()
	go func() {
		err := c.cmd.Wait()
		pw.Close()
		c.done <- err
	}()
	select {
	case <-listening:
		return c, nil
	case err := <-c.done:
		return nil, fmt.Errorf("tcpdump ended at start (%v): %s", err, c.output())
	case <-ctx.Done():
		c.cmd.Process.Kill()
		<-c.done
		return nil, ctx.Err()
	case <-time.After(15 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
		return nil, fmt.Errorf("tcpdump did not start listening within 15s: %s", c.output())
	}
}

func (c *Capture) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.TrimSpace(c.stderr.String())
}

// dropsRE finds tcpdump's "N packets dropped by kernel" line.
var dropsRE = regexp.MustCompile(`(\d+) packets? dropped by kernel`)

// Stop ends the capture and reads its packets. dropped is what the kernel
// reported it could not hand to tcpdump (the figures are then low).
func (c *Capture) Stop() (pkts []Packet, dropped int, err error) {
	c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
	defer os.Remove(c.file)
	if m := dropsRE.FindStringSubmatch(c.output()); m != nil {
		dropped, _ = strconv.Atoi(m[1])
	}
	f, err := os.Open(c.file)
	if err != nil {
		return nil, dropped, err
	}
	defer f.Close()
	pkts, err = ReadPcap(bufio.NewReader(f))
	return pkts, dropped, err
}

// Ports are the ports the capture listens to (the proxies'): a packet to
// one of them goes up, from the truck.
func (c *Capture) Ports() map[uint16]bool { return c.ports }

// Packet is one captured IPv4 TCP packet.
type Packet struct {
	Time             time.Time
	SrcPort, DstPort uint16
	// IPLen is the IPv4 total length; Payload the TCP payload in it.
	IPLen, Payload int
	Flags          uint8
	Seq            uint32
}

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// ReadPcap reads the IPv4 TCP packets of a classic pcap file (not pcapng),
// link types Ethernet, Linux cooked (v1 and v2) and raw IP; others are
// skipped.
func ReadPcap(r io.Reader) ([]Packet, error) {
	var gh [24]byte
	if _, err := io.ReadFull(r, gh[:]); err != nil {
		return nil, fmt.Errorf("pcap: header: %w", err)
	}
	var bo binary.ByteOrder
	nanos := false
	switch binary.LittleEndian.Uint32(gh[:4]) {
	case 0xa1b2c3d4:
		bo = binary.LittleEndian
	case 0xa1b23c4d:
		bo, nanos = binary.LittleEndian, true
	case 0xd4c3b2a1:
		bo = binary.BigEndian
	case 0x4d3cb2a1:
		bo, nanos = binary.BigEndian, true
	default:
		return nil, errors.New("pcap: not a pcap file")
	}
	linkType := bo.Uint32(gh[20:24]) & 0x0fffffff
	var out []Packet
	var rh [16]byte
	buf := make([]byte, 0, 256)
	for {
		if _, err := io.ReadFull(r, rh[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return out, nil // a capture cut short ends mid-record
			}
			return out, err
		}
		sec, frac := int64(bo.Uint32(rh[0:4])), int64(bo.Uint32(rh[4:8]))
		incl := int(bo.Uint32(rh[8:12]))
		if incl > 1<<20 {
			return out, fmt.Errorf("pcap: record of %d bytes", incl)
		}
		buf = grow(buf, incl)
		if _, err := io.ReadFull(r, buf); err != nil {
			return out, nil
		}
		if !nanos {
			frac *= 1000
		}
		p, ok := parsePacket(linkType, buf)
		if !ok {
			continue
		}
		p.Time = time.Unix(sec, frac)
		out = append(out, p)
	}
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// parsePacket reads an IPv4 TCP packet's headers behind a link-layer
// header of linkType.
func parsePacket(linkType uint32, b []byte) (Packet, bool) {
	var ip []byte
	switch linkType {
	case 1: // Ethernet
		if len(b) < 14 || binary.BigEndian.Uint16(b[12:14]) != 0x0800 {
			return Packet{}, false
		}
		ip = b[14:]
	case 113: // Linux cooked v1
		if len(b) < 16 || binary.BigEndian.Uint16(b[14:16]) != 0x0800 {
			return Packet{}, false
		}
		ip = b[16:]
	case 276: // Linux cooked v2
		if len(b) < 20 || binary.BigEndian.Uint16(b[0:2]) != 0x0800 {
			return Packet{}, false
		}
		ip = b[20:]
	case 101, 12: // raw IP
		ip = b
	default:
		return Packet{}, false
	}
	if len(ip) < 20 || ip[0]>>4 != 4 || ip[9] != 6 {
		return Packet{}, false
	}
	ihl := int(ip[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	if len(ip) < ihl+20 {
		return Packet{}, false
	}
	tcp := ip[ihl:]
	doff := int(tcp[12]>>4) * 4
	return Packet{
		SrcPort: binary.BigEndian.Uint16(tcp[0:2]), DstPort: binary.BigEndian.Uint16(tcp[2:4]),
		IPLen: total, Payload: max(total-ihl-doff, 0), Flags: tcp[13], Seq: binary.BigEndian.Uint32(tcp[4:8]),
	}, true
}

// Captured is what tcpdump saw of some traffic, by netsim.Direction.
type Captured struct {
	// Bytes are IP bytes; Packets the packets behind them. Both are
	// re-segmented to the model's MSS (see WireModel.Captured).
	Bytes, Packets [2]int64
	// Keepalive is the bytes of keepalive probes and their answers, both
	// ways.
	Keepalive int64
	// Open is set when a selected connection had not ended when the capture
	// stopped, so its tail is missing.
	Open bool
}

// Total is the bytes both ways.
func (c Captured) Total() int64 { return c.Bytes[0] + c.Bytes[1] }

// Add adds o to c.
func (c *Captured) Add(o Captured) {
	for d := range 2 {
		c.Bytes[d] += o.Bytes[d]
		c.Packets[d] += o.Packets[d]
	}
	c.Keepalive += o.Keepalive
	c.Open = c.Open || o.Open
}

// Captured sums the selected packets. up holds the proxies' ports. The
// loopback interface has a 64 KiB MTU, so a packet with more than MSS
// bytes of payload is counted as the ceil(payload/MSS) segments a
// 1500-byte-MTU link would carry, plus a pure ACK for every second one of
// them beyond the first (the one ACK the capture shows already stands for
// the first two).
func (m WireModel) Captured(pkts []Packet, up map[uint16]bool, sel Selection) Captured {
	type key struct{ proxy, truck uint16 }
	keyOf := func(p Packet) (key, netsim.Direction, bool) {
		switch {
		case up[p.DstPort]:
			return key{p.DstPort, p.SrcPort}, netsim.Up, true
		case up[p.SrcPort]:
			return key{p.SrcPort, p.DstPort}, netsim.Down, true
		}
		return key{}, 0, false
	}
	// Whole selections need each connection's SYN time and end.
	syn := map[key]time.Time{}
	fins := map[key]int{}
	reset := map[key]bool{}
	for _, p := range pkts {
		k, _, ok := keyOf(p)
		if !ok {
			continue
		}
		if p.Flags&tcpSYN != 0 && p.Flags&tcpACK == 0 {
			syn[k] = p.Time
		}
		if p.Flags&tcpFIN != 0 {
			fins[k]++
		}
		if p.Flags&tcpRST != 0 {
			reset[k] = true
		}
	}
	var c Captured
	// Keepalive probes are told apart from pure ACKs by their sequence
	// number: one below the next one the sender will use. The pure ACK
	// that next goes the other way answers the probe.
	next := map[key]*[2]uint32{}
	awaiting := map[key]*[2]bool{} // a probe sent in that direction waits for its answer
	for _, p := range pkts {
		k, d, ok := keyOf(p)
		if !ok {
			continue
		}
		n, aw := next[k], awaiting[k]
		if n == nil {
			n, aw = &[2]uint32{}, &[2]bool{}
			next[k], awaiting[k] = n, aw
		}
		bare := p.Payload <= 1 && p.Flags&(tcpSYN|tcpFIN|tcpRST) == 0
		keepalive := false
		switch {
		case bare && n[d] != 0 && p.Seq == n[d]-1:
			keepalive = true
			aw[d] = true
		case aw[d.Opposite()] && bare && p.Payload == 0:
			keepalive = true
			aw[d.Opposite()] = false
		}
		if !keepalive {
			end := p.Seq + uint32(p.Payload)
			if p.Flags&(tcpSYN|tcpFIN) != 0 {
				end++
			}
			if n[d] == 0 || int32(end-n[d]) > 0 {
				n[d] = end
			}
		}
		if sel.Whole {
			if s, ok := syn[k]; !ok || !sel.covers(s) {
				continue
			}
			if fins[k] < 2 && !reset[k] {
				c.Open = true
			}
		} else if !sel.covers(p.Time) {
			continue
		}
		segs := int64(1)
		bytes := int64(p.IPLen)
		if p.Payload > m.MSS {
			segs = int64((p.Payload + m.MSS - 1) / m.MSS)
			bytes += (segs - 1) * int64(m.Header)
			acks := (segs+1)/2 - 1
			c.Bytes[d.Opposite()] += acks * int64(m.Header)
			c.Packets[d.Opposite()] += acks
		}
		c.Bytes[d] += bytes
		c.Packets[d] += segs
		if keepalive {
			c.Keepalive += bytes
		}
	}
	return c
}
