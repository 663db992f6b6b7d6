package edgeclient

import (
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// loginRefusals logs and counts the fleet broker's refusals of the truck's
// login. paho keeps retrying a refused connect, and says nothing about it:
// without this a truck with a wrong password, or whose client id another
// user's session holds, would look merely offline.
type loginRefusals struct {
	total *prometheus.CounterVec

	mu       sync.Mutex
	lastCode byte
	lastLog  time.Time
	missed   int // refusals not logged since lastLog
}

// loginRefusedLogEvery is how often the same refusal is logged at most, as
// paho retries every second at first.
const loginRefusedLogEvery = time.Minute

// refusal is what one MQTT 3.1.1 CONNACK return code means for a truck,
// and what to do about it.
type refusal struct{ reason, fix string }

var refusals = map[byte]refusal{
	1: {"unsupported_protocol", "the broker does not speak MQTT 3.1.1; check fleet.broker"},
	2: {"client_id_rejected", "the broker refused the client id; check truck (and fleet.client_id) in truck.yaml"},
	3: {"server_unavailable", "the broker is shutting down or overloaded; the agent keeps retrying"},
	4: {"bad_credentials", loginFix},
	// LinkEdge's broker (mochi) answers every refused login with this
	// code, whatever the reason.
	5: {"not_authorized", loginFix},
}

// loginFix is what to check when the broker refuses the login itself.
const loginFix = "check fleet.username and fleet.password in truck.yaml against the broker's users file (role truck); " +
	"the broker also refuses a client id or TLS certificate that is not this user's; its log names the reason (\"mqtt connection refused\")"

func newLoginRefusals() *loginRefusals {
	return &loginRefusals{total: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "linkedge_agent_fleet_login_refused_total",
		Help: "Logins the fleet broker refused, by reason (its CONNACK return code): bad_credentials, not_authorized, client_id_rejected, server_unavailable, unsupported_protocol, other.",
	}, []string{"reason"})}
}

// loginRefused is fleetDialer.refused: it counts a refused login and logs
// it at Error, naming what to fix; the same refusal again within
// loginRefusedLogEvery is counted only.
func (a *Agent) loginRefused(code byte) {
	r, ok := refusals[code]
	if !ok {
		r = refusal{"other", fmt.Sprintf("return code %d; the broker's log says why", code)}
	}
	l := a.refusals
	l.total.WithLabelValues(r.reason).Inc()
	l.mu.Lock()
	now := time.Now()
	if code == l.lastCode && now.Sub(l.lastLog) < loginRefusedLogEvery {
		l.missed++
		l.mu.Unlock()
		return
	}
	missed := l.missed
	l.lastCode, l.lastLog, l.missed = code, now, 0
	l.mu.Unlock()
	a.log.Error("the fleet broker refused the truck's login; retrying", "broker", a.cfg.Fleet.Broker,
		"username", a.cfg.Fleet.Username, "client_id", a.cfg.Fleet.ClientID, "code", code,
		"reason", r.reason, "fix", r.fix, "refused_since_last_log", missed)
}
