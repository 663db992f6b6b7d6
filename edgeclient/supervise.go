package edgeclient

import (
	"context"
	"fmt"
	"time"

	"github.com/linkedge/linkedge/edgeclient/runtime"
	"github.com/linkedge/linkedge/edgeclient/update"
	"github.com/linkedge/linkedge/internal/status"
)

// restartTries is how many restarts a dead serving container gets before
// the agent falls back to another verified version.
const restartTries = 2

// supervise watches what serves when it can die apart from the agent (a
// container): every Containers.SuperviseInterval it asks whether it is
// alive, restarts it if not, and falls back when a restart fails. An
// in-process model lives and dies with the agent and needs none of this.
func (a *Agent) supervise(ctx context.Context) {
	defer a.wg.Done()
	t := time.NewTicker(a.cfg.Containers.SuperviseInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.superviseOnce(ctx)
		}
	}
}

func (a *Agent) superviseOnce(ctx context.Context) {
	s, ok := a.rts.Serving().(runtime.Supervised)
	if !ok {
		return
	}
	a.mu.Lock()
	phase := update.Phase(a.st.Phase)
	a.mu.Unlock()
	if phase == update.Switching || phase == update.Probation || phase == update.RollingBack {
		return // the update owns what serves now; probation judges it
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := s.Alive(actx)
	cancel()
	if err == nil || ctx.Err() != nil {
		return
	}
	spec := s.Spec()
	a.log.Error("the serving container cannot serve; restarting it", "version", spec.Version, "image", spec.Image, "err", err)
	cause := err
	for try := 1; try <= restartTries; try++ {
		if cause = s.Restart(ctx); cause == nil {
			a.log.Info("serving container restarted", "version", spec.Version, "try", try)
			a.publishEvent(status.Event{Kind: status.EventServingRestarted, Version: spec.Version, Serial: spec.Serial, Detail: err.Error()})
			return
		}
		if ctx.Err() != nil {
			return
		}
		a.log.Error("restart of the serving container failed", "version", spec.Version, "try", try, "err", cause)
	}
	fb, ferr := a.machine.Fallback(ctx, s, fmt.Errorf("container died (%v) and did not restart: %w", err, cause))
	if ferr != nil {
		a.log.Error("nothing can serve in place of the dead container", "err", ferr)
		a.setError("serving container died and nothing could replace it: " + ferr.Error())
		a.publishEvent(status.Event{Kind: status.EventServingFailed, Version: spec.Version, Serial: spec.Serial, Detail: ferr.Error()})
		a.publishStatus()
		return
	}
	a.setVersion(fb.Version, 0)
	a.mu.Lock()
	a.st.Version = fb.Version
	a.mu.Unlock()
	msg := fmt.Sprintf("container of version %d died and did not restart (%v); serving version %d (%s) instead", spec.Version, cause, fb.Version, fb.Kind)
	a.setError(msg)
	a.publishEvent(status.Event{Kind: status.EventServingFallback, Version: fb.Version, Serial: fb.Serial, Detail: msg})
	a.publishStatus()
	a.kick() // the release still names the dead target: it is a normal update again
}
