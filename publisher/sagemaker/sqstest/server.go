// Package sqstest is an Amazon SQS server for tests, just big enough for
// the publisher's event consumer. It speaks the protocol that
// aws-sdk-go-v2/service/sqs (v1.53) uses: AWS JSON 1.0, POST / with
// X-Amz-Target "AmazonSQS.ReceiveMessage" or "AmazonSQS.DeleteMessage",
// errors as {"__type": "com.amazonaws.sqs#Code", "message": ...} plus the
// x-amzn-query-error header of this query-compatible service. It honours
// long polling (WaitTimeSeconds), visibility timeouts (a received message
// that is not deleted comes back) and receipt handles, and returns
// MD5OfBody, which the SDK checks.
package sqstest

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Account is the test account in queue URLs.
const Account = "123456789012"

// Server is a running SQS server with one queue.
type Server struct {
	// URL is the endpoint (BaseEndpoint); QueueURL the one queue's URL.
	URL, QueueURL string

	srv *httptest.Server

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced when a message is sent
	messages []*message
	seq      int
	faults   []*Fault
	calls    map[string]int
	deleted  int
}

type message struct {
	id, body, receipt string
	visibleAt         time.Time
	receives          int
	sent              time.Time
}

// Fault makes matching requests fail.
type Fault struct {
	// Op is "ReceiveMessage" or "DeleteMessage"; empty matches both.
	Op string
	// Code is the error shape's name, e.g. "QueueDoesNotExist" or
	// "RequestThrottled"; QueryCode the legacy code in x-amzn-query-error.
	Code, QueryCode string
	Status          int
	// Times is how many requests fail; below 1 means every one.
	Times int
}

// New starts a server with one queue named name and stops it when tb ends.
func New(tb testing.TB, name string) *Server {
	tb.Helper()
	s := &Server{changed: make(chan struct{}), calls: map[string]int{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	s.QueueURL = s.URL + "/" + Account + "/" + name
	tb.Cleanup(s.srv.Close)
	return s
}

// Send enqueues a message, as EventBridge does when its rule matches.
func (s *Server) Send(body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	s.messages = append(s.messages, &message{id: fmt.Sprintf("msg-%d", s.seq), body: body, sent: time.Now()})
	close(s.changed)
	s.changed = make(chan struct{})
}

// Pending returns how many messages are in the queue (in flight included).
func (s *Server) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.messages)
}

// Deleted returns how many messages were deleted.
func (s *Server) Deleted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deleted
}

// Calls returns how many requests for op were received.
func (s *Server) Calls(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

// Fail adds a fault.
func (s *Server) Fail(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Status == 0 {
		f.Status = http.StatusBadRequest
	}
	s.faults = append(s.faults, &f)
}

type apiError struct {
	status          int
	code, queryCode string
	message         string
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	resp, err := s.handle(r)
	w.Header().Set("x-amzn-RequestId", "sqstest-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	if err != nil {
		if err.queryCode != "" {
			w.Header().Set("x-amzn-query-error", err.queryCode)
		}
		w.WriteHeader(err.status)
		_ = json.NewEncoder(w).Encode(map[string]string{"__type": "com.amazonaws.sqs#" + err.code, "message": err.message})
		return
	}
	_ = json.NewEncoder(w).Encode(resp)
}

type receiveInput struct {
	QueueUrl                    string
	AttributeNames              []string
	MessageSystemAttributeNames []string
	MessageAttributeNames       []string
	MaxNumberOfMessages         int
	VisibilityTimeout           *int
	WaitTimeSeconds             int
	ReceiveRequestAttemptId     string
}

type wireMessage struct {
	MessageId     string
	ReceiptHandle string
	MD5OfBody     string
	Body          string
	Attributes    map[string]string `json:",omitempty"`
}

type deleteInput struct {
	QueueUrl      string
	ReceiptHandle string
}

func (s *Server) handle(r *http.Request) (any, *apiError) {
	op, ok := strings.CutPrefix(r.Header.Get("X-Amz-Target"), "AmazonSQS.")
	if r.Method != http.MethodPost || !ok {
		return nil, &apiError{status: 400, code: "UnsupportedOperation", message: "POST / with X-Amz-Target AmazonSQS.*"}
	}
	s.mu.Lock()
	s.calls[op]++
	s.mu.Unlock()
	if ct := r.Header.Get("Content-Type"); ct != "application/x-amz-json-1.0" {
		return nil, &apiError{status: 400, code: "InvalidParameterValue", message: "Content-Type " + ct}
	}
	if a := r.Header.Get("Authorization"); !strings.Contains(a, "/sqs/aws4_request") {
		return nil, &apiError{status: 403, code: "MissingAuthenticationToken", message: "no SigV4 signature for sqs"}
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	dec := func(v any) *apiError {
		d := json.NewDecoder(bytes.NewReader(body))
		d.DisallowUnknownFields()
		if err := d.Decode(v); err != nil {
			return &apiError{status: 400, code: "InvalidParameterValue", message: err.Error()}
		}
		return nil
	}
	if err := s.fault(op); err != nil {
		return nil, err
	}
	switch op {
	case "ReceiveMessage":
		var in receiveInput
		if err := dec(&in); err != nil {
			return nil, err
		}
		return s.receive(r, in)
	case "DeleteMessage":
		var in deleteInput
		if err := dec(&in); err != nil {
			return nil, err
		}
		return s.delete(in)
	}
	return nil, &apiError{status: 400, code: "UnsupportedOperation", message: op + " is not served by sqstest"}
}

func (s *Server) fault(op string) *apiError {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.faults {
		if f.Op == "" || f.Op == op {
			if f.Times > 0 {
				f.Times--
				if f.Times == 0 {
					s.faults = slices.Delete(s.faults, i, i+1)
				}
			}
			return &apiError{status: f.Status, code: f.Code, queryCode: f.QueryCode, message: "injected " + f.Code}
		}
	}
	return nil
}

func (s *Server) checkQueue(u string) *apiError {
	if u != s.QueueURL {
		return &apiError{status: 400, code: "QueueDoesNotExist", queryCode: "AWS.SimpleQueueService.NonExistentQueue;Sender",
			message: "The specified queue does not exist."}
	}
	return nil
}

func (s *Server) receive(r *http.Request, in receiveInput) (any, *apiError) {
	if err := s.checkQueue(in.QueueUrl); err != nil {
		return nil, err
	}
	max := in.MaxNumberOfMessages
	if max == 0 {
		max = 1
	}
	if max < 1 || max > 10 || in.WaitTimeSeconds < 0 || in.WaitTimeSeconds > 20 {
		return nil, &apiError{status: 400, code: "InvalidParameterValue", message: "MaxNumberOfMessages 1-10, WaitTimeSeconds 0-20"}
	}
	visibility := 30 * time.Second
	if in.VisibilityTimeout != nil {
		visibility = time.Duration(*in.VisibilityTimeout) * time.Second
	}
	deadline := time.NewTimer(time.Duration(in.WaitTimeSeconds) * time.Second)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		now := time.Now()
		var out []wireMessage
		next := time.Time{} // when an in-flight message becomes visible
		for _, m := range s.messages {
			if len(out) == max {
				break
			}
			if m.visibleAt.After(now) {
				if next.IsZero() || m.visibleAt.Before(next) {
					next = m.visibleAt
				}
				continue
			}
			m.receives++
			m.visibleAt = now.Add(visibility)
			m.receipt = fmt.Sprintf("%s#%d", m.id, m.receives)
			sum := md5.Sum([]byte(m.body))
			out = append(out, wireMessage{MessageId: m.id, ReceiptHandle: m.receipt, MD5OfBody: hex.EncodeToString(sum[:]), Body: m.body,
				Attributes: map[string]string{"ApproximateReceiveCount": strconv.Itoa(m.receives), "SentTimestamp": strconv.FormatInt(m.sent.UnixMilli(), 10)}})
		}
		changed := s.changed
		s.mu.Unlock()
		if len(out) > 0 {
			return map[string]any{"Messages": out}, nil
		}
		var wake <-chan time.Time
		var visible *time.Timer
		if !next.IsZero() {
			visible = time.NewTimer(time.Until(next))
			wake = visible.C
		}
		timedOut := false
		select {
		case <-changed:
		case <-wake:
		case <-deadline.C:
			timedOut = true
		case <-r.Context().Done():
			timedOut = true
		}
		if visible != nil {
			visible.Stop()
		}
		if timedOut {
			return struct{}{}, nil // an empty receive is "{}"
		}
	}
}

func (s *Server) delete(in deleteInput) (any, *apiError) {
	if err := s.checkQueue(in.QueueUrl); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, m := range s.messages {
		if m.receipt != "" && m.receipt == in.ReceiptHandle {
			s.messages = slices.Delete(s.messages, i, i+1)
			s.deleted++
			return struct{}{}, nil
		}
	}
	return nil, &apiError{status: 400, code: "ReceiptHandleIsInvalid", queryCode: "ReceiptHandleIsInvalid;Sender",
		message: "The input receipt handle \"" + in.ReceiptHandle + "\" is not a valid receipt handle."}
}
