package publisher

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/topics"
)

// Pin tells one truck to run one approved version of a model, whatever the
// fleet's release says: a signed document (the release format, stable
// target only) retained on linkedge/v1/trucks/{truck}/desired. Use it to
// hold a truck back, or to try a version on a test truck first. It returns
// once the broker acknowledged it.
//
// Pins are a stream of their own: their serial is the signing time in
// milliseconds, and the truck tracks it apart from the model's releases.
// The publisher service does not re-sign pins: a pin is valid for
// cfg.ReleaseTTL (and never longer than its artifact URL); pin again to
// extend it, or Unpin to hand the truck back to the fleet release.
func Pin(ctx context.Context, cfg Config, truck, model string, version int64) (*release.Release, error) {
	if err := topics.ValidID(truck); err != nil {
		return nil, fmt.Errorf("%w: truck: %w", ErrInvalidConfig, err)
	}
	key, reg, dist, err := oncePrepare(&cfg)
	if err != nil {
		return nil, err
	}
	vs, err := reg.Versions(ctx)
	if err != nil {
		return nil, fmt.Errorf("read registry %s: %w", reg.Name(), err)
	}
	var v *Version
	for i := range vs {
		if vs[i].Model == model && vs[i].Version == version {
			v = &vs[i]
		}
	}
	switch {
	case v == nil:
		return nil, fmt.Errorf("%w: registry %s has no %s version %d", ErrUnknownVersion, reg.Name(), model, version)
	case v.Status != StatusApproved:
		return nil, fmt.Errorf("%w: %s version %d is %s; only approved versions are served to trucks", ErrNotApproved, model, version, v.Status)
	}
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		return nil, err
	}
	a := &Announcer{Key: key, Distributor: dist, TTL: cfg.ReleaseTTL, Logger: cfg.Logger, metrics: m}
	rel, doc, err := a.sign(ctx, Plan{Stable: *v, Truck: truck}, 0, a.now())
	if err != nil {
		return nil, err
	}
	if err := sendOnce(ctx, &cfg, topics.TruckDesired(truck), doc); err != nil {
		return nil, fmt.Errorf("pin %s to %s version %d: %w", truck, model, version, err)
	}
	cfg.Logger.Info("pinned truck", "truck", truck, "model", model, "version", version, "serial", rel.Serial, "expires_at", rel.ExpiresAt)
	return rel, nil
}

// Unpin clears a truck's pin of model, so it follows the model's release
// again: a signed clearing pin (no targets, "clear": true) bound to the
// truck, retained in place of the pin. Clearing takes a signature for the
// same reason pinning does: no one else with access to the broker may hand
// a truck back. It returns once the broker acknowledged it.
func Unpin(ctx context.Context, cfg Config, truck, model string) (*release.Release, error) {
	if err := topics.ValidID(truck); err != nil {
		return nil, fmt.Errorf("%w: truck: %w", ErrInvalidConfig, err)
	}
	if err := topics.ValidID(model); err != nil {
		return nil, fmt.Errorf("%w: model: %w", ErrInvalidConfig, err)
	}
	cfg.setDefaults()
	if cfg.KeyFile == "" {
		return nil, fmt.Errorf("%w: key_file: required (clearing a pin is signed like the pin)", ErrInvalidConfig)
	}
	key, err := release.ReadPrivateKeyFile(cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	issued := now.UTC().Truncate(time.Millisecond)
	rel := &release.Release{Schema: release.Schema, Model: model, Serial: nextSerial(0, now, 0), IssuedAt: issued,
		ExpiresAt: issued.Add(cfg.ReleaseTTL), Truck: truck, Clear: true}
	doc, err := release.Sign(rel, key)
	if err != nil {
		return nil, err
	}
	if err := sendOnce(ctx, &cfg, topics.TruckDesired(truck), doc); err != nil {
		return nil, fmt.Errorf("unpin %s: %w", truck, err)
	}
	cfg.Logger.Info("cleared the pin of truck", "truck", truck, "model", model, "serial", rel.Serial)
	return rel, nil
}

// oncePrepare defaults and checks cfg for a one-shot command and returns
// its signing key, registry and distributor.
func oncePrepare(cfg *Config) (ed25519.PrivateKey, Registry, Distributor, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, nil, nil, err
	}
	key, err := release.ReadPrivateKeyFile(cfg.KeyFile)
	if err != nil {
		return nil, nil, nil, err
	}
	reg, dist, err := onceBackends(cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	return key, reg, dist, nil
}

// onceBackends returns the registry and distributor a one-shot command uses.
func onceBackends(cfg *Config) (Registry, Distributor, error) {
	reg := cfg.Registry
	if reg == nil {
		r, err := NewLocalRegistry(cfg.RegistryDir)
		if err != nil {
			return nil, nil, err
		}
		reg = r
	}
	dist := cfg.Distributor
	if dist == nil {
		base, err := onceBaseURL(cfg)
		if err != nil {
			return nil, nil, err
		}
		dist = BaseURLDistributor{Base: base}
	}
	return reg, dist, nil
}

// sendOnce connects, publishes one retained QoS 1 message and waits for the
// acknowledgement.
func sendOnce(ctx context.Context, cfg *Config, topic string, payload []byte) error {
	conn, err := dialOnce(ctx, cfg, cfg.ClientID+"-once-"+randomSuffix())
	if err != nil {
		return err
	}
	defer conn.close()
	return conn.Send(ctx, topic, payload)
}
