package edgeclient

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestHoldAPILogin: with local_broker.users, the hold API on the agent's
// HTTP endpoint takes only an app login of that file, and an app sets and
// releases only its own hold; the inference endpoints stay open. Without
// users, the hold API stays open (TestHoldAPIOpenWithoutUsers).
func TestHoldAPILogin(t *testing.T) {
	users := writeLocalUsers(t, map[string]string{"can-gw": "sensor", "nav": "app", "crane": "app"})
	a := startBusAgent(t, LocalBrokerConfig{Listen: "127.0.0.1:0", Users: users})
	base := "http://" + a.HTTPAddr()

	tests := []struct {
		name, method, path, user, pass string
		want                           int
		wantErr                        string
	}{
		{"no login", http.MethodPut, "/v1/hold/nav", "", "", http.StatusUnauthorized, "needs a login"},
		{"no login, state", http.MethodGet, "/v1/hold", "", "", http.StatusUnauthorized, "needs a login"},
		{"wrong password", http.MethodPut, "/v1/hold/nav", "nav", "crane-pw", http.StatusUnauthorized, "bad username or password"},
		{"unknown user", http.MethodPut, "/v1/hold/nobody", "nobody", "nobody-pw", http.StatusUnauthorized, "bad username or password"},
		{"a sensor", http.MethodPut, "/v1/hold/can-gw", "can-gw", "can-gw-pw", http.StatusUnauthorized, "not an app login"},
		{"another app's hold", http.MethodPut, "/v1/hold/crane", "nav", "nav-pw", http.StatusForbidden, "only its own hold"},
		{"its own hold", http.MethodPut, "/v1/hold/nav", "nav", "nav-pw", http.StatusOK, ""},
		{"again, remembered", http.MethodPut, "/v1/hold/nav", "nav", "nav-pw", http.StatusOK, ""},
		{"releasing another's", http.MethodDelete, "/v1/hold/nav", "crane", "crane-pw", http.StatusForbidden, "only its own hold"},
		{"the state", http.MethodGet, "/v1/hold", "crane", "crane-pw", http.StatusOK, ""},
		{"then the wrong password", http.MethodPut, "/v1/hold/nav", "nav", "nav-pw2", http.StatusUnauthorized, "bad username or password"},
	}
	for _, tc := range tests {
		req, err := http.NewRequest(tc.method, base+tc.path, bytes.NewBufferString(`{"reason":"moving"}`))
		if err != nil {
			t.Fatal(err)
		}
		if tc.user != "" {
			req.SetBasicAuth(tc.user, tc.pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %s %s: %d %s, want %d", tc.name, tc.method, tc.path, resp.StatusCode, body, tc.want)
			continue
		}
		if tc.want == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", tc.name)
		}
		if tc.wantErr != "" {
			var e struct{ Error string }
			if json.Unmarshal(body, &e) != nil || !strings.Contains(e.Error, tc.wantErr) {
				t.Errorf("%s: body %s, want an error saying %q", tc.name, body, tc.wantErr)
			}
		}
	}
	if held, reason := a.holdState(); !held || !strings.Contains(reason, "nav") {
		t.Errorf("hold state %v %q, want nav's hold only", held, reason)
	}
	if _, reason := a.holdState(); strings.Contains(reason, "crane") {
		t.Errorf("crane holds (%q): another app's login set it", reason)
	}

	// Inference stays open.
	resp, err := http.Get(base + "/ping")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /ping without a login: %d, want 200", resp.StatusCode)
	}
}

// TestHoldAPIOpenWithoutUsers: without local_broker.users the hold API
// takes requests without a login, as the local bus does.
func TestHoldAPIOpenWithoutUsers(t *testing.T) {
	a := startBusAgent(t, LocalBrokerConfig{Listen: "127.0.0.1:0"})
	req, _ := http.NewRequest(http.MethodPut, "http://"+a.HTTPAddr()+"/v1/hold/nav", bytes.NewBufferString(`{"reason":"moving"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("PUT /v1/hold/nav without users: %d, want 200", resp.StatusCode)
	}
}
