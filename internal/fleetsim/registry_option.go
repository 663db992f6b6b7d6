package fleetsim

import (
	"context"
	"errors"
	"time"

	"github.com/linkedge/linkedge/edgeclient"
	"github.com/linkedge/linkedge/publisher"
)

// PublisherOptions plug another registry into the fleet's publisher: a
// SageMaker backend, say, instead of the local folder registry.
type PublisherOptions struct {
	// Registry and Distributor replace the local registry and its artifact
	// server; both are required.
	Registry    publisher.Registry
	Distributor publisher.Distributor
	// StateFile is the publisher's state; required (the local registry's
	// folder is not used).
	StateFile string
	// PollInterval of the publisher; default the fleet's.
	PollInterval time.Duration
	// OnAnnounce is called after every acknowledged announcement.
	OnAnnounce func(model string, version, serial int64)
}

// StartPublisherWith stops the fleet's publisher, if one runs, and starts
// one over o.Registry. StopPublisher stops it; StartPublisher goes back to
// the local registry. The publisher polls on its own ticker; a registry
// that answers from memory between its own refreshes (the SageMaker
// backend) makes a short PollInterval cheap, so an event reaches the fleet
// within one.
func (f *Fleet) StartPublisherWith(ctx context.Context, o PublisherOptions) error {
	if o.Registry == nil || o.Distributor == nil || o.StateFile == "" {
		return errors.New("fleetsim: a custom publisher needs a registry, a distributor and a state file")
	}
	if err := f.StopPublisher(); err != nil {
		return err
	}
	poll := o.PollInterval
	if poll <= 0 {
		poll = f.opts.PollInterval
	}
	p, err := publisher.New(publisher.Config{
		Broker: f.BrokerURL, KeyFile: f.keyFile, StateFile: o.StateFile, Registry: o.Registry, Distributor: o.Distributor,
		PollInterval: poll, ArtifactListen: "127.0.0.1:0", Logger: f.opts.Logger.With("part", "publisher"), OnAnnounce: o.OnAnnounce,
		TLS: f.opts.clientTLS("publisher"),
	})
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.Publisher, f.pubCancel, f.pubDone = p, cancel, make(chan error, 1)
	go func() { f.pubDone <- p.Run(runCtx) }()
	return nil
}

// RestartWith stops the truck's agent and starts it again on the same
// state and ports, with edit applied to its configuration first (a
// smaller clock-skew allowance, say).
func (t *Truck) RestartWith(ctx context.Context, edit func(*edgeclient.Config)) error {
	t.Agent.Close()
	edit(&t.cfg)
	return t.startAgent(ctx)
}
