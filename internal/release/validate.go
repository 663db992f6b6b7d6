package release

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/linkedge/linkedge/internal/topics"
)

var (
	sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// pinnedImage is a container reference pinned by digest. The name part
	// is kept loose (registry host, port, path, optional tag); the digest
	// part is exact, and it is what matters.
	pinnedImage = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/:-]*@sha256:[0-9a-f]{64}$`)
)

// Validate checks the content rules of a release document, except the
// signature and anything that depends on the clock. It reports every problem
// it finds, each prefixed by the member's path, in one error wrapping
// [ErrInvalid]. [Sign] calls it so that a publisher cannot sign a document
// that trucks would refuse.
func (r *Release) Validate() error {
	var p problems
	if r.Schema != Schema {
		p.add("schema", "is %q, want %q", r.Schema, Schema)
	}
	if err := topics.ValidID(r.Model); err != nil {
		p.add("model", "%v", err)
	}
	if r.Serial < 1 {
		p.add("serial", "is %d, want 1 or more", r.Serial)
	}
	p.window(r.IssuedAt, r.ExpiresAt)
	if r.Truck != "" {
		if err := topics.ValidID(r.Truck); err != nil {
			p.add("truck", "%v", err)
		}
		if r.Canary != nil {
			p.add("canary", "is set on a pin (a document with truck); a pin names one target, stable")
		}
	}
	if r.Clear {
		if r.Truck == "" {
			p.add("clear", "is set on a document without truck; only a pin can be cleared")
		}
		if r.Stable != (Target{}) || r.Canary != nil {
			p.add("stable", "is set on a clearing pin; clear has no targets")
		}
		return p.err()
	}
	p.target("stable", &r.Stable)
	if c := r.Canary; c != nil {
		p.target("canary", &c.Target)
		if c.Percent < 0 || c.Percent > 100 {
			p.add("canary.percent", "is %d, want 0 to 100", c.Percent)
		}
		for i, g := range c.Groups {
			if err := topics.ValidID(g); err != nil {
				p.add(fmt.Sprintf("canary.groups[%d]", i), "%v", err)
			}
		}
	}
	return p.err()
}

// timeFormat is how errors show times: RFC 3339 with fractional seconds.
const timeFormat = "2006-01-02T15:04:05.999999999Z07:00"

type problems []string

func (p *problems) add(path, format string, args ...any) {
	*p = append(*p, path+": "+fmt.Sprintf(format, args...))
}

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return wrap(ErrInvalid, "%s", strings.Join(p, "; "))
}

// window checks issued_at and expires_at: both set, in that order. It
// reports whether they are.
func (p *problems) window(issued, expires time.Time) bool {
	switch {
	case issued.IsZero():
		p.add("issued_at", "is missing")
	case expires.IsZero():
		p.add("expires_at", "is missing")
	case !expires.After(issued):
		p.add("expires_at", "(%s) is not after issued_at (%s)", expires.Format(timeFormat), issued.Format(timeFormat))
	default:
		return true
	}
	return false
}

func (p *problems) target(path string, t *Target) {
	if t.Version < 1 {
		p.add(path+".version", "is %d, want 1 or more", t.Version)
	}
	a := &t.Artifact
	if msg := checkURL(a.URL); msg != "" {
		p.add(path+".artifact.url", "%s", msg)
	}
	if !sha256Hex.MatchString(a.SHA256) {
		p.add(path+".artifact.sha256", "is %q, want 64 lowercase hex characters", truncate(a.SHA256))
	}
	if a.Size <= 0 {
		p.add(path+".artifact.size", "is %d, want the artifact's size in bytes (above 0)", a.Size)
	}
	if a.MediaType != MediaTypeBundle {
		p.add(path+".artifact.media_type", "is %q, want %q", truncate(a.MediaType), MediaTypeBundle)
	}
	switch rt := t.Runtime; rt.Kind {
	case RuntimeInProcess:
		if rt.Image != "" {
			p.add(path+".runtime.image", "is set but runtime.kind is %q; remove it or use kind %q", RuntimeInProcess, RuntimeContainer)
		}
	case RuntimeContainer:
		if !pinnedImage.MatchString(rt.Image) {
			p.add(path+".runtime.image", "is %q, want an image pinned by digest (name@sha256:<64 lowercase hex>)", truncate(rt.Image))
		}
	default:
		p.add(path+".runtime.kind", "is %q, want %q or %q", truncate(rt.Kind), RuntimeInProcess, RuntimeContainer)
	}
	switch t.Source.Registry {
	case RegistryLocal, RegistrySageMaker:
	default:
		p.add(path+".source.registry", "is %q, want %q or %q", truncate(t.Source.Registry), RegistryLocal, RegistrySageMaker)
	}
}

// checkURL returns what is wrong with an artifact URL, or "".
func checkURL(s string) string {
	if s == "" {
		return "is missing"
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Sprintf("does not parse: %v", err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Sprintf("has scheme %q, want http or https", truncate(u.Scheme))
	case u.Host == "":
		return "has no host"
	case u.User != nil:
		// The document is broadcast to the whole fleet and logged; use a
		// presigned URL or credentials configured on the truck instead.
		return "embeds credentials (user:password@); use a presigned URL or truck-side credentials"
	}
	return ""
}

// CheckAudience checks that a verified document fits the topic it came on:
// on a model's release topic (pin false) a model release, which names no
// truck; on a truck's desired topic (pin true) a pin naming that truck.
// Without it a signed document replayed on another topic (an old model
// release as a pin, another truck's pin) would move a truck.
func (r *Release) CheckAudience(truck string, pin bool) error {
	switch {
	case pin && r.Truck == "":
		return wrap(ErrInvalid, "a model release (serial %d) arrived as a pin for %s; pins name their truck, so this is a replay: ignore it", r.Serial, truck)
	case pin && r.Truck != truck:
		return wrap(ErrInvalid, "the pin (serial %d) is for truck %q, this is %q; ignore it", r.Serial, r.Truck, truck)
	case !pin && r.Truck != "":
		return wrap(ErrInvalid, "a pin for truck %q (serial %d) arrived as the model's release; ignore it", r.Truck, r.Serial)
	}
	return nil
}
