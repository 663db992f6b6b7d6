package publisher

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const goodHolds = `{"schema":"linkedge.rollout-holds/v1","models":{"aps-failure":{"version":2,"halted_by":"olga","reason":"brake alerts up","halted_at":"2030-01-01T12:00:00Z"}}}`

func TestParseHolds(t *testing.T) {
	for _, tc := range []struct{ name, in, err string }{
		{"ok", goodHolds, ""},
		{"resumed", `{"schema":"linkedge.rollout-holds/v1","models":{"m":{"version":2,"halted_by":"olga","reason":"x","halted_at":"2030-01-01T12:00:00Z","resumed_by":"ivan","resumed_at":"2030-01-01T13:00:00Z"}}}`, ""},
		{"schema", `{"schema":"x","models":{}}`, "schema"},
		{"unknown field", `{"schema":"linkedge.rollout-holds/v1","models":{},"x":1}`, "unknown field"},
		{"trailing", goodHolds + `{}`, "after the JSON"},
		{"bad model", `{"schema":"linkedge.rollout-holds/v1","models":{"a/b":{"version":2,"halted_by":"o","reason":"x","halted_at":"2030-01-01T12:00:00Z"}}}`, "model"},
		{"null hold", `{"schema":"linkedge.rollout-holds/v1","models":{"m":null}}`, "null hold"},
		{"version 0", `{"schema":"linkedge.rollout-holds/v1","models":{"m":{"version":0,"halted_by":"o","reason":"x","halted_at":"2030-01-01T12:00:00Z"}}}`, "version 0"},
		{"nobody", `{"schema":"linkedge.rollout-holds/v1","models":{"m":{"version":2,"halted_by":"","reason":"x","halted_at":"2030-01-01T12:00:00Z"}}}`, "halted_by"},
		{"control", `{"schema":"linkedge.rollout-holds/v1","models":{"m":{"version":2,"halted_by":"o","reason":"a\u001bb","halted_at":"2030-01-01T12:00:00Z"}}}`, "control character"},
		{"long reason", `{"schema":"linkedge.rollout-holds/v1","models":{"m":{"version":2,"halted_by":"o","reason":"` + strings.Repeat("x", MaxHoldReason+1) + `","halted_at":"2030-01-01T12:00:00Z"}}}`, "limit 256"},
		{"no time", `{"schema":"linkedge.rollout-holds/v1","models":{"m":{"version":2,"halted_by":"o","reason":"x"}}}`, "halted_at"},
		{"resumed by nobody at no time", `{"schema":"linkedge.rollout-holds/v1","models":{"m":{"version":2,"halted_by":"o","reason":"x","halted_at":"2030-01-01T12:00:00Z","resumed_by":"ivan"}}}`, "resumed_by without resumed_at"},
		{"too big", strings.Repeat(" ", maxHoldsSize+1), "limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseHolds([]byte(tc.in))
			if tc.err == "" {
				if err != nil || len(h.Models) != 1 {
					t.Fatalf("%v, %+v", err, h)
				}
				return
			}
			if !errors.Is(err, ErrCorruptHolds) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want ErrCorruptHolds about %q", err, tc.err)
			}
		})
	}
}

// TestHaltResume: halting needs a running rollout in the state file; a
// corrupt holds file is an error naming it, and is left as it was.
func TestHaltResume(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dir := t.TempDir()
	cfg := Config{RegistryDir: dir}
	if _, err := HaltRollout(ctx, cfg, "m", "olga", ""); !errors.Is(err, ErrNoRollout) {
		t.Fatalf("halt with no state: %v", err)
	}
	st := &State{Schema: StateSchema, Models: map[string]*ModelState{"m": {Rollout: &Rollout{Version: 2, SHA256: strings.Repeat("ab", 32)}}}}
	if err := NewStateFile(filepath.Join(dir, DefaultStateFileName)).save(st); err != nil {
		t.Fatal(err)
	}
	h, err := HaltRollout(ctx, cfg, "m", "olga", "")
	if err != nil || h.Version != 2 || h.Reason != defaultHoldWhy || !h.Active() {
		t.Fatalf("halt: %+v, %v", h, err)
	}
	if _, err := HaltRollout(ctx, cfg, "m", "olga", "again"); !errors.Is(err, ErrAlreadyHeld) {
		t.Fatalf("second halt: %v", err)
	}
	if h, err := ResumeRollout(ctx, cfg, "m", "ivan"); err != nil || h.ResumedBy != "ivan" || h.Active() {
		t.Fatalf("resume: %+v, %v", h, err)
	}
	if _, err := ResumeRollout(ctx, cfg, "m", "ivan"); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("second resume: %v", err)
	}
	if h, err := HaltRollout(ctx, cfg, "m", "olga", "once more"); err != nil || h.Reason != "once more" {
		t.Fatalf("halt after resume: %+v, %v", h, err)
	}
	st.Models["m"].Rollout.HaltedAt, st.Models["m"].Rollout.HaltReason = time.Now(), "canary failed"
	NewStateFile(filepath.Join(dir, DefaultStateFileName)).save(st)
	if _, err := HaltRollout(ctx, cfg, "m", "olga", ""); !errors.Is(err, ErrNoRollout) || !strings.Contains(err.Error(), "canary failed") {
		t.Fatalf("halt of a rollout the publisher halted: %v", err)
	}
	holds := filepath.Join(dir, DefaultHoldsFileName)
	os.WriteFile(holds, []byte("{"), 0o600)
	if _, err := ResumeRollout(ctx, cfg, "m", "ivan"); !errors.Is(err, ErrCorruptHolds) || !strings.Contains(err.Error(), holds) {
		t.Fatalf("resume with a corrupt holds file: %v", err)
	}
	if data, _ := os.ReadFile(holds); string(data) != "{" {
		t.Fatalf("the corrupt holds file was rewritten: %q", data)
	}
}

// FuzzParseHolds: ParseHolds must never panic, and whatever it accepts
// must survive a write and a re-read unchanged.
func FuzzParseHolds(f *testing.F) {
	for _, s := range []string{goodHolds, `{"schema":"linkedge.rollout-holds/v1","models":{}}`, `{"schema":"linkedge.rollout-holds/v1"}`, `{}`, `null`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseHolds(data)
		if err != nil {
			return
		}
		out, err := json.Marshal(h)
		if err != nil {
			t.Fatalf("accepted holds do not encode: %v", err)
		}
		h2, err := ParseHolds(out)
		if err != nil {
			t.Fatalf("re-reading accepted holds failed: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(h, h2) {
			t.Fatalf("holds changed across a write and re-read:\n%+v\n%+v", h, h2)
		}
	})
}
