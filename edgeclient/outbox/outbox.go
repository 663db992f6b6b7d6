// Package outbox is the truck's store-and-forward queue: messages for the
// fleet that must survive a lost link and an agent restart. They are kept in
// order on disk, and the queue is bounded: when full, the oldest message is
// dropped, and the drops are counted.
//
// On disk a queue is a folder with a log and a cursor. The log,
// log-{generation}, holds one message per line, appended and synced on each
// Push. The cursor, cursor.json, says which generation is current and how
// many of its lines were delivered (acknowledged by the broker). Delivery is
// at least once: a crash between the broker's acknowledgement and the cursor
// write sends that message again.
//
// When the delivered lines outnumber the pending ones (and there are enough
// of them to be worth it), the pending lines are written to the next
// generation's log, the cursor is switched to it, and the old log is
// removed. A crash at any point leaves either the old log and cursor, or the
// new ones; a log the cursor does not name is removed at Open.
package outbox

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/linkedge/linkedge/internal/atomicfile"
)

// Errors.
var (
	// ErrClosed: the queue was closed.
	ErrClosed = errors.New("outbox: closed")
	// ErrBadMessage: a message is empty or holds a newline (the log's
	// record separator); JSON from encoding/json never does.
	ErrBadMessage = errors.New("outbox: message is empty or spans lines")
)

// compactAfter is how many delivered lines a log must hold before it is
// rewritten without them.
const compactAfter = 1024

// Queue is a bounded FIFO of messages on disk. It is safe for concurrent
// use; Peek and Ack are meant for one consumer.
type Queue struct {
	dir string
	max int

	mu      sync.Mutex
	log     *os.File
	gen     int64
	done    int64    // delivered lines at the head of the log
	pending [][]byte // the rest, in order
	head    uint64   // how many messages left the head since Open; names the head for Ack
	dropped int64
	closed  bool
	notify  chan struct{}
}

type cursor struct {
	Generation int64 `json:"generation"`
	Delivered  int64 `json:"delivered"`
}

// Open opens (or creates) the queue in dir, holding at most max messages
// (at least 1).
func Open(dir string, max int) (*Queue, error) {
	if max < 1 {
		max = 1
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	q := &Queue{dir: dir, max: max, notify: make(chan struct{}, 1)}
	var c cursor
	switch data, err := os.ReadFile(q.cursorPath()); {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("outbox: %w", err)
	default:
		if err := json.Unmarshal(data, &c); err != nil || c.Generation < 0 || c.Delivered < 0 {
			return nil, fmt.Errorf("outbox: %s is corrupt (%v); move the folder away to start an empty queue", q.cursorPath(), err)
		}
	}
	q.gen, q.done = c.Generation, c.Delivered
	lines, err := readLines(q.logPath(q.gen))
	if err != nil {
		return nil, err
	}
	if int64(len(lines)) < q.done {
		q.done = int64(len(lines)) // a log cut short: nothing left to send from it
	}
	q.pending = lines[q.done:]
	// A queue that was opened with a larger max: keep the newest.
	if over := len(q.pending) - q.max; over > 0 {
		q.pending = q.pending[over:]
		q.done += int64(over)
		q.dropped += int64(over)
	}
	// Logs of other generations are left-overs of an interrupted compaction.
	if olds, _ := filepath.Glob(filepath.Join(dir, "log-*")); len(olds) > 0 {
		for _, p := range olds {
			if p != q.logPath(q.gen) {
				os.Remove(p)
			}
		}
	}
	if q.log, err = os.OpenFile(q.logPath(q.gen), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	return q, nil
}

// readLines reads a log. A last line without its newline is a write that a
// crash cut short, and is dropped.
func readLines(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	var lines [][]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, len(data)+1)
	for sc.Scan() {
		lines = append(lines, bytes.Clone(sc.Bytes()))
	}
	if len(data) > 0 && data[len(data)-1] != '\n' && len(lines) > 0 {
		lines = lines[:len(lines)-1]
		// Cut the torn tail, or the next append would glue onto it.
		if err := os.Truncate(path, int64(bytes.LastIndexByte(data, '\n')+1)); err != nil {
			return nil, fmt.Errorf("outbox: %w", err)
		}
	}
	return lines, nil
}

func (q *Queue) cursorPath() string { return filepath.Join(q.dir, "cursor.json") }

func (q *Queue) logPath(gen int64) string {
	return filepath.Join(q.dir, "log-"+strconv.FormatInt(gen, 10))
}

// Push appends msg, synced to disk before it returns. A full queue drops its
// oldest message to make room.
func (q *Queue) Push(msg []byte) error {
	if len(msg) == 0 || bytes.IndexByte(msg, '\n') >= 0 {
		return ErrBadMessage
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrClosed
	}
	if len(q.pending) >= q.max {
		q.pending = q.pending[1:]
		q.head++
		q.dropped++
		if err := q.advance(1); err != nil {
			return err
		}
	}
	line := append(bytes.Clone(msg), '\n')
	if _, err := q.log.Write(line); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	if err := q.log.Sync(); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	q.pending = append(q.pending, msg)
	select {
	case q.notify <- struct{}{}:
	default:
	}
	return nil
}

// Head names the oldest message for Ack.
type Head uint64

// Peek returns the oldest message without removing it, and its name.
func (q *Queue) Peek() ([]byte, Head, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) == 0 {
		return nil, 0, false
	}
	return q.pending[0], Head(q.head), true
}

// Ack removes the message h names, if it is still the oldest: the broker
// has it. If a full queue dropped it meanwhile, the new oldest message was
// never sent and stays.
func (q *Queue) Ack(h Head) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrClosed
	}
	if len(q.pending) == 0 || Head(q.head) != h {
		return nil
	}
	q.pending = q.pending[1:]
	q.head++
	return q.advance(1)
}

// PeekN returns up to n of the oldest messages without removing them, and
// the name of the first, for AckN.
func (q *Queue) PeekN(n int) ([][]byte, Head) {
	q.mu.Lock()
	defer q.mu.Unlock()
	n = min(max(n, 1), len(q.pending))
	return append([][]byte(nil), q.pending[:n]...), Head(q.head)
}

// AckN removes the k messages from the one h names on: the broker has them.
// Those a full queue dropped meanwhile are gone already, and a message
// queued after them was never sent and stays.
func (q *Queue) AckN(h Head, k int) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrClosed
	}
	end := uint64(h) + uint64(k)
	if uint64(h) > q.head || end <= q.head {
		return nil // not this batch, or every one of it was dropped
	}
	n := min(int(end-q.head), len(q.pending))
	q.pending = q.pending[n:]
	q.head += uint64(n)
	return q.advance(int64(n))
}

// advance records n more delivered (or dropped) lines, and compacts the log
// when that pays off. q.mu is held.
func (q *Queue) advance(n int64) error {
	q.done += n
	if q.done >= compactAfter && q.done > int64(len(q.pending)) {
		return q.compact()
	}
	return atomicfile.WriteJSON(q.cursorPath(), cursor{Generation: q.gen, Delivered: q.done}, 0o600)
}

func (q *Queue) compact() error {
	var buf bytes.Buffer
	for _, m := range q.pending {
		buf.Write(m)
		buf.WriteByte('\n')
	}
	next := q.gen + 1
	if err := atomicfile.WriteFile(q.logPath(next), buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("outbox: compact: %w", err)
	}
	if err := atomicfile.WriteJSON(q.cursorPath(), cursor{Generation: next}, 0o600); err != nil {
		os.Remove(q.logPath(next))
		return fmt.Errorf("outbox: compact: %w", err)
	}
	f, err := os.OpenFile(q.logPath(next), os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("outbox: compact: %w", err)
	}
	q.log.Close()
	os.Remove(q.logPath(q.gen))
	q.log, q.gen, q.done = f, next, 0
	return nil
}

// Len is the number of messages waiting.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending)
}

// Dropped counts the messages dropped because the queue was full, since
// Open.
func (q *Queue) Dropped() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}

// Notify receives a value after a Push (coalesced), for a consumer waiting
// on an empty queue.
func (q *Queue) Notify() <-chan struct{} { return q.notify }

// Close closes the log. It is idempotent.
func (q *Queue) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil
	}
	q.closed = true
	return q.log.Close()
}
