package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"time"
)

// keepaliveInterval is how often an idle stream sends something, so that
// proxies keep it open and a page part drawn against the clock (a chart's
// time axis) moves on.
const keepaliveInterval = 15 * time.Second

// openStream starts a server-sent events response, within the limit of
// open streams. done must be called when the stream ends; false: the
// answer (503, or 500 without streaming) is sent already.
func (s *Server) openStream(w http.ResponseWriter) (http.Flusher, *http.ResponseController, func(), bool) {
	if n := s.streams.Add(1); n > int64(s.cfg.MaxStreams) {
		s.streams.Add(-1)
		http.Error(w, fmt.Sprintf("too many live pages open (%d); close some", s.cfg.MaxStreams), http.StatusServiceUnavailable)
		return nil, nil, nil, false
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		s.streams.Add(-1)
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return nil, nil, nil, false
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	fl.Flush()
	return fl, rc, func() { s.streams.Add(-1) }, true
}

// liveParts streams parts of a page (the named templates of page, each
// rendered with dataAt's data) as server-sent events: one "parts" message,
// a JSON object of element id (the template's name) to HTML, first with
// every part and then with the parts that changed, UpdateInterval after a
// change of the fleet or of other (the alerts, the chart's history). The
// page's script puts each part in place.
//
// What changed is found by drawing the parts again at the time of the
// last message: the time axes move with the clock, and only a change of
// what the parts show is worth a message. The clock's own progress goes
// out every keepaliveInterval.
func (s *Server) liveParts(w http.ResponseWriter, r *http.Request, dataAt func(now time.Time) (any, bool), page string, parts []string, other func() <-chan struct{}) {
	fl, rc, done, ok := s.openStream(w)
	if !ok {
		return
	}
	defer done()
	render := func(now time.Time) (map[string]string, bool) {
		d, ok := dataAt(now)
		if !ok {
			return nil, false
		}
		out := make(map[string]string, len(parts))
		var b bytes.Buffer
		for _, p := range parts {
			b.Reset()
			if err := s.pages[page].ExecuteTemplate(&b, p, d); err != nil {
				s.cfg.Logger.Error("console: render a live part", "page", page, "part", p, "err", err)
				return nil, false
			}
			out[p] = b.String()
		}
		return out, true
	}
	write := func(text string) bool {
		rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprint(w, text); err != nil {
			return false
		}
		fl.Flush()
		return true
	}
	// send sends the parts that differ from sent, and reports whether the
	// stream is still up.
	var sent map[string]string
	send := func(cur map[string]string) bool {
		msg := map[string]string{}
		for id, html := range cur {
			if old, ok := sent[id]; !ok || old != html {
				msg[id] = html
			}
		}
		sent = cur
		data, _ := json.Marshal(msg)
		return write("event: parts\ndata: " + string(data) + "\n\n")
	}
	lastAt := time.Now()
	cur, ok := render(lastAt)
	if !ok || !send(cur) {
		return
	}
	keepalive := time.NewTicker(keepaliveInterval)
	defer keepalive.Stop()
	for {
		fleetCh, otherCh := s.changedCh(), other()
		select {
		case <-r.Context().Done():
			return
		case <-keepalive.C:
			now := time.Now()
			cur, ok := render(now)
			if !ok {
				return
			}
			if maps.Equal(cur, sent) {
				if !write(": keepalive\n\n") {
					return
				}
				continue
			}
			lastAt = now
			if !send(cur) {
				return
			}
			continue
		case <-fleetCh:
		case <-otherCh:
		}
		// Coalesce: whatever else changes in the next moment goes out in
		// the same message.
		select {
		case <-r.Context().Done():
			return
		case <-time.After(s.cfg.UpdateInterval):
		}
		probe, ok := render(lastAt)
		if !ok {
			return
		}
		if maps.Equal(probe, sent) {
			continue // nothing this page shows (another truck, another model)
		}
		lastAt = time.Now()
		if cur, ok = render(lastAt); !ok || !send(cur) {
			return
		}
	}
}
