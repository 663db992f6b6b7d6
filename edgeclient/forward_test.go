package edgeclient

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/linkedge/linkedge/inference/server"
)

// TestForwardedBatchFitsIoTCore: a forwarded message stays under AWS IoT
// Core's 128 KB payload limit whatever the predictions weigh, since a
// larger one would cut the truck's link on every try, and the queue
// behind it would never drain.
func TestForwardedBatchFitsIoTCore(t *testing.T) {
	const iotCorePayload = 128 << 10
	pred := func(idLen int) []byte {
		data, _ := json.Marshal(server.PredictionMessage{ID: string(bytes.Repeat([]byte{'\x01'}, idLen)), Model: "aps-failure", ModelVersion: 2, Label: "pos", Score: 0.97})
		return data
	}
	tests := []struct {
		name string
		msgs [][]byte
		want int // how many go in the first message
	}{
		{"ordinary", repeat(pred(8), 100), 100},
		{"long ids", repeat(pred(128), 100), 100},
		{"heavy", repeat(pred(2000), 100), maxForwardBytes / (len(pred(2000)) + 1)},
		{"one over the limit goes alone", [][]byte{make([]byte, maxForwardBytes+1), pred(8)}, 1},
		{"empty", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := fitBatch(tt.msgs, maxForwardBytes)
			if n != tt.want {
				t.Fatalf("fitBatch = %d, want %d", n, tt.want)
			}
			if size := len(joinBatch(tt.msgs[:n])); n > 1 && size > maxForwardBytes {
				t.Fatalf("a batch of %d is %d bytes, over %d", n, size, maxForwardBytes)
			}
		})
	}
	if maxForwardBytes+len("linkedge/v1/trucks//predictions/")+128 > iotCorePayload {
		t.Fatalf("maxForwardBytes %d leaves no room under IoT Core's %d", maxForwardBytes, iotCorePayload)
	}
}

func repeat(m []byte, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = m
	}
	return out
}
