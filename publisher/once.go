package publisher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkedge/linkedge/internal/release"
)

// PublishOnce announces one approved model version now and returns only
// once the broker acknowledged it: the pipeline hook ("this version was
// just approved; tell the fleet"). It follows the publisher's rules (state
// file, serial rule, the same [Announcer]) and always signs a new document,
// even if the version was announced before.
//
// It refuses, before connecting, a version the registry does not have
// ([ErrUnknownVersion]), one that is not approved ([ErrNotApproved]), and
// one below the model's highest approved version ([ErrSuperseded]), since a
// running publisher would immediately announce that one instead. It waits
// for the broker until ctx is done ([ErrBrokerUnreachable]).
//
// It serves no artifacts: the URL it announces is cfg.ArtifactBaseURL (or
// http://{cfg.ArtifactListen}), where a running publisher service, or a
// mirror, must serve them.
func PublishOnce(ctx context.Context, cfg Config, model string, version int64) (*release.Release, error) {
	key, reg, dist, err := oncePrepare(&cfg)
	if err != nil {
		return nil, err
	}
	v, err := findVersion(ctx, reg, model, version)
	if err != nil {
		return nil, err
	}
	promReg := cfg.Metrics
	if promReg == nil {
		promReg = prometheus.NewRegistry()
	}
	m, err := newMetrics(promReg)
	if err != nil {
		return nil, err
	}
	conn, err := dialOnce(ctx, &cfg, cfg.ClientID+"-once-"+randomSuffix())
	if err != nil {
		return nil, err
	}
	defer conn.close()
	a := &Announcer{Key: key, Distributor: dist, State: NewStateFile(cfg.StateFile), Sender: conn, Replica: cfg.Replica,
		TTL: cfg.ReleaseTTL, Logger: cfg.Logger, OnAnnounce: cfg.OnAnnounce, metrics: m}
	return a.Announce(ctx, v, Always)
}

// findVersion returns model's version from reg if it is the one to
// announce, or says why not.
func findVersion(ctx context.Context, reg Registry, model string, version int64) (Version, error) {
	vs, err := reg.Versions(ctx)
	if err != nil {
		return Version{}, fmt.Errorf("read registry %s: %w", reg.Name(), err)
	}
	var have []int64
	var found *Version
	for i := range vs {
		if vs[i].Model != model {
			continue
		}
		have = append(have, vs[i].Version)
		if vs[i].Version == version {
			found = &vs[i]
		}
	}
	switch {
	case len(have) == 0:
		return Version{}, fmt.Errorf("%w: registry %s has no model %q", ErrUnknownVersion, reg.Name(), model)
	case found == nil:
		slices.Sort(have)
		return Version{}, fmt.Errorf("%w: model %s has no version %d (it has %v)", ErrUnknownVersion, model, version, have)
	case found.Status != StatusApproved:
		return Version{}, fmt.Errorf("%w: %s version %d is %s", ErrNotApproved, model, version, found.Status)
	}
	best, _ := targets(vs)
	if b := best[model]; b.Version > version {
		return Version{}, fmt.Errorf("%w: %s version %d is approved, and so is the higher version %d, which the publisher announces instead; reject version %d to roll back to %d",
			ErrSuperseded, model, version, b.Version, b.Version, version)
	}
	return *found, nil
}

// onceBaseURL is the artifact base URL PublishOnce announces: the running
// service's, which it cannot ask, so it must be derivable from cfg.
func onceBaseURL(cfg *Config) (string, error) {
	if cfg.ArtifactBaseURL != "" {
		return cfg.ArtifactBaseURL, nil
	}
	if _, port, _ := net.SplitHostPort(cfg.ArtifactListen); port == "0" {
		return "", fmt.Errorf("%w: artifact_listen %s has port 0, so the artifact URL is unknown; set artifact_base_url to the running publisher's",
			ErrInvalidConfig, cfg.ArtifactListen)
	}
	return "http://" + cfg.ArtifactListen, nil
}

func randomSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}
