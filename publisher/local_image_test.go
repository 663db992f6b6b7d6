package publisher

import (
	"testing"

	"github.com/linkedge/linkedge/internal/release"
)

// Issue 12 #12: a local registry version that names a serving image is
// announced as a container release pinned to that image; the others stay
// in process.
func TestLocalVersionWithImageIsAContainerRelease(t *testing.T) {
	const image = "127.0.0.1:5000/linkedge-serve@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	e := newEnv(t)
	b := startBroker(t, "127.0.0.1:0")
	s := subscribe(t, b.Addr(), "aps")
	e.add("aps", 1, true)
	start(t, e.config(b.Addr()))
	if r := e.verify(s.next()); r.Stable.Version != 1 || r.Stable.Runtime != (release.Runtime{Kind: release.RuntimeInProcess}) {
		t.Fatalf("v1 announced with runtime %+v, want in process", r.Stable.Runtime)
	}

	e.add("aps", 2, false)
	if _, err := e.reg.SetImage("aps", 2, image); err != nil {
		t.Fatal(err)
	}
	e.approve("aps", 2)
	r := e.verify(s.next())
	if want := (release.Runtime{Kind: release.RuntimeContainer, Image: image}); r.Stable.Version != 2 || r.Stable.Runtime != want {
		t.Fatalf("v2 announced as version %d runtime %+v, want %+v", r.Stable.Version, r.Stable.Runtime, want)
	}
}
