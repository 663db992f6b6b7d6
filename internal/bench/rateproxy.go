package bench

import "github.com/linkedge/linkedge/internal/netsim"

// rateProxy stands between the simulated trucks and the artifact server,
// each connection limited to the same rate: every truck on a link of its
// own.
type rateProxy struct{ *netsim.Proxy }

func newRateProxy(target string, bytesPerSecond int64) (*rateProxy, error) {
	p, err := netsim.New(target, netsim.PerConnection())
	if err != nil {
		return nil, err
	}
	p.SetRate(int(bytesPerSecond))
	return &rateProxy{p}, nil
}
