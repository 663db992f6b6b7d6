package sagemaker_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/publisher"
	"github.com/linkedge/linkedge/publisher/s3dist"
	"github.com/linkedge/linkedge/publisher/sagemaker"
	"github.com/linkedge/linkedge/publisher/sagemaker/sagemakertest"
)

// The newest approved version wins, rejecting it falls back to the newest
// still approved, and pending versions never count.
func TestPolicyInputs(t *testing.T) {
	e := newEnv(t)
	r := e.registry(nil, "aps-failure")
	if _, err := versionsOf(t, r); err != nil {
		t.Fatalf("empty group: %v", err)
	}
	e.SM.CreateGroup("aps-failure")
	for range 3 {
		e.register("aps-failure")
	}
	e.SM.Approve("aps-failure", 1, "alice")
	e.SM.Approve("aps-failure", 2, "alice")
	for _, step := range []struct {
		do   func()
		want int64
	}{
		{do: func() {}, want: 2}, // 3 is pending
		{do: func() { e.SM.Approve("aps-failure", 3, "bob") }, want: 3},      // newly approved
		{do: func() { e.SM.Reject("aps-failure", 3, "bob") }, want: 2},       // withdrawn
		{do: func() { e.SM.Reject("aps-failure", 2, "bob") }, want: 1},       // and again
		{do: func() { e.SM.Approve("aps-failure", 3, "carol") }, want: 3},    // approved again
		{do: func() { e.register("aps-failure") /* v4 pending */ }, want: 3}, // pending
		{do: func() { e.SM.Reject("aps-failure", 4, "carol") }, want: 3},     // rejected, never approved
		{do: func() {
			e.SM.Update("aps-failure", 3, func(p *sagemakertest.Package) { p.Approval = sagemakertest.Pending })
		}, want: 1},
	} {
		step.do()
		r.Trigger("aps-failure")
		got, err := versionsOf(t, r)
		if err != nil {
			t.Fatal(err)
		}
		if v := got["aps-failure"]; v.Version != step.want || v.Status != publisher.StatusApproved {
			t.Fatalf("got %+v, want version %d", v, step.want)
		}
	}
}

// Every page is read: the only valid approved version is on the third
// page of newest-first summaries.
func TestPagination(t *testing.T) {
	e := newEnv(t)
	e.SM.CreateGroup("aps-failure")
	const n = 25
	for i := int64(1); i <= n; i++ {
		p := e.register("aps-failure")
		if i > 3 {
			// Versions 4 to 25 hold junk: each is skipped, the search goes on.
			e.S3.Put(t, bucket, fmt.Sprintf("aps-failure/%d/model.tar.gz", i), []byte("junk"))
		}
		e.SM.Approve("aps-failure", p.Version, "pipeline")
	}
	e.register("aps-failure") // v26 pending: filtered out by the server
	e.SM.SetPageCap(7)        // the service may return fewer than MaxResults
	r := e.registry(func(c *sagemaker.Config) { c.PageSize = 10 }, "aps-failure")
	got, err := versionsOf(t, r)
	if err != nil {
		t.Fatal(err)
	}
	if v := got["aps-failure"]; v.Version != 3 {
		t.Fatalf("chose version %d, want 3", v.Version)
	}
	if calls := e.SM.Calls("ListModelPackages"); calls != 4 { // 25 approved / 7 per page
		t.Fatalf("%d ListModelPackages calls, want 4", calls)
	}
	probs := r.Problems()
	if len(probs) != n-3 {
		t.Fatalf("%d problems, want %d: %v", len(probs), n-3, probs)
	}
	for _, p := range probs {
		if !errors.Is(p.Err, s3dist.ErrInvalidBundle) || !strings.Contains(p.Err.Error(), p.ARN) {
			t.Fatalf("problem %v does not name its package or cause", p.Err)
		}
	}
	// The bad artifacts are remembered by ETag: a second refresh downloads
	// none of them again.
	gets := e.S3.Gets(bucket, "aps-failure/25/model.tar.gz")
	r.Trigger("aps-failure")
	if _, err := versionsOf(t, r); err != nil {
		t.Fatal(err)
	}
	if again := e.S3.Gets(bucket, "aps-failure/25/model.tar.gz"); again != gets || gets != 1 {
		t.Fatalf("junk artifact downloaded %d then %d times, want once", gets, again)
	}
	// The remembered problem reads as the first report did, once (issue 12
	// #3: the sentinel's text was doubled).
	for _, p := range r.Problems() {
		if !errors.Is(p.Err, s3dist.ErrInvalidBundle) || strings.Count(p.Err.Error(), s3dist.ErrInvalidBundle.Error()) != 1 {
			t.Fatalf("remembered problem %q", p.Err)
		}
	}
}

func TestMapping(t *testing.T) {
	e := newEnv(t)
	data := bundleBytes(t, "aps-failure", 1)
	url := e.upload("aps-failure", 1, data)
	e.SM.Register("aps-failure", url, func(p *sagemakertest.Package) {
		p.Description = "gradient boosted trees, recall 0.97"
		p.Metadata = map[string]string{"git_sha": "abc123"}
	})
	e.SM.Approve("aps-failure", 1, "arn:aws:iam::123456789012:user/alice")
	pkg, _ := e.SM.Get("aps-failure", 1)

	r := e.registry(nil, "aps-failure")
	got, err := versionsOf(t, r)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256hex(data)
	want := publisher.Version{
		Model: "aps-failure", Version: 1, Status: publisher.StatusApproved, Description: "gradient boosted trees, recall 0.97",
		Artifact: publisher.ArtifactRef{Location: url, SHA256: sum, Size: int64(len(data))},
		Runtime:  release.Runtime{Kind: release.RuntimeInProcess},
		Source: release.Source{Registry: release.RegistrySageMaker, ModelPackageARN: pkg.ARN,
			ApprovedAt: pkg.Modified.UTC().Truncate(time.Millisecond), ApprovedBy: "arn:aws:iam::123456789012:user/alice"},
	}
	if v := got["aps-failure"]; fmt.Sprint(v) != fmt.Sprint(want) {
		t.Fatalf("got  %+v\nwant %+v", v, want)
	}
	if !strings.HasSuffix(pkg.ARN, ":model-package/aps-failure/1") {
		t.Fatalf("arn %s", pkg.ARN)
	}

	// The full description, through the real SDK client.
	p, err := sagemaker.Lookup(t.Context(), e.smClient(1), pkg.ARN)
	if err != nil {
		t.Fatal(err)
	}
	if p.Group != "aps-failure" || p.Version != 1 || p.Approval != "Approved" || p.ModelDataURL != url || p.Image == "" ||
		p.Metadata["git_sha"] != "abc123" || p.Metrics["ModelQuality.Statistics"] != "s3://linkedge-ml/aps-failure/1/evaluation.json" ||
		!p.Created.Equal(pkg.Created) || p.PackageStatus != "Completed" {
		t.Fatalf("Lookup: %+v", p)
	}

	// A Studio user is named by profile; a container runtime needs a digest.
	e.SM.Update("aps-failure", 1, func(p *sagemakertest.Package) {
		p.ModifiedByProfile = "jane"
		p.Image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/aps@sha256:" + strings.Repeat("ab", 32)
	})
	r = e.registry(func(c *sagemaker.Config) { c.ContainerRuntime = true }, "aps-failure")
	got, err = versionsOf(t, r)
	if err != nil {
		t.Fatal(err)
	}
	if v := got["aps-failure"]; v.Source.ApprovedBy != "jane" || v.Runtime.Kind != release.RuntimeContainer || !strings.HasSuffix(v.Runtime.Image, strings.Repeat("ab", 32)) {
		t.Fatalf("got %+v", v)
	}
}

func TestConfigValidation(t *testing.T) {
	e := newEnv(t)
	ok := sagemaker.Config{Client: e.smClient(1), Artifacts: &s3dist.Reader{}, Groups: []string{"aps-failure"}}
	for _, tc := range []struct {
		name string
		edit func(*sagemaker.Config)
	}{
		{"no client", func(c *sagemaker.Config) { c.Client = nil }},
		{"no artifacts", func(c *sagemaker.Config) { c.Artifacts = nil }},
		{"no groups", func(c *sagemaker.Config) { c.Groups = nil }},
		{"group not an id", func(c *sagemaker.Config) { c.Groups = []string{"aps/failure"} }},
		{"group twice", func(c *sagemaker.Config) { c.Groups = []string{"a", "a"} }},
		{"page size", func(c *sagemaker.Config) { c.PageSize = 101 }},
		{"backoff", func(c *sagemaker.Config) { c.MinBackoff, c.MaxBackoff = time.Minute, time.Second }},
	} {
		cfg := ok
		tc.edit(&cfg)
		if _, err := sagemaker.New(cfg); !errors.Is(err, sagemaker.ErrInvalidConfig) {
			t.Errorf("%s: %v, want ErrInvalidConfig", tc.name, err)
		}
	}
	if _, err := sagemaker.New(ok); err != nil {
		t.Fatal(err)
	}
}

// The artifact is read once per package and ETag, across refreshes and,
// with a cache file, across restarts; new bytes are read again.
func TestArtifactCache(t *testing.T) {
	e := newEnv(t)
	p := e.register("aps-failure")
	e.SM.Approve("aps-failure", p.Version, "alice")
	cache := filepath.Join(t.TempDir(), "artifacts.json")
	edit := func(c *sagemaker.Config) { c.CacheFile = cache }
	const key = "aps-failure/1/model.tar.gz"
	r := e.registry(edit, "aps-failure")
	for range 3 {
		r.Trigger("")
		if _, err := versionsOf(t, r); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.S3.Gets(bucket, key); n != 1 {
		t.Fatalf("%d downloads, want 1", n)
	}
	if _, err := versionsOf(t, e.registry(edit, "aps-failure")); err != nil {
		t.Fatal(err)
	}
	if n := e.S3.Gets(bucket, key); n != 1 {
		t.Fatalf("a restarted registry downloaded again: %d downloads", n)
	}
	// Same key, new bytes (a new ETag): read again, new digest.
	padded := append(bundleBytes(t, "aps-failure", 1), 0, 0, 0)
	e.S3.Put(t, bucket, key, padded)
	r.Trigger("")
	got, err := versionsOf(t, r)
	if err != nil {
		t.Fatal(err)
	}
	if n := e.S3.Gets(bucket, key); n != 2 || got["aps-failure"].Artifact.SHA256 != sha256hex(padded) {
		t.Fatalf("%d downloads, sha %s", n, got["aps-failure"].Artifact.SHA256)
	}
}

// The registry's version is the authority (issue 12 #1). A pipeline builds
// model.tar.gz before RegisterModel gives the package its version, so the
// bundle may not know it, or may give a guess that a parallel registration
// made wrong; either way the version announced is SageMaker's, bound to the
// artifact's sha256, and a guess that differs is logged, not refused.
func TestRegistryVersionIsTheAuthority(t *testing.T) {
	e := newEnv(t)
	var logs syncBuffer
	edit := func(c *sagemaker.Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) }
	r := e.registry(edit, "aps-failure")

	// A bundle without a version, as the pipeline step in
	// docs/pipeline-hook.md builds it.
	unversioned := bundleBytes(t, "aps-failure", 0)
	url := "s3://" + bucket + "/builds/run-1/model.tar.gz"
	e.S3.Put(t, bucket, "builds/run-1/model.tar.gz", unversioned)
	p := e.SM.Register("aps-failure", url)
	e.SM.Approve("aps-failure", p.Version, "pipeline")
	got, err := versionsOf(t, r)
	if err != nil {
		t.Fatal(err)
	}
	if v := got["aps-failure"]; v.Version != 1 || v.Artifact.SHA256 != sha256hex(unversioned) {
		t.Fatalf("bundle without a version: got %+v, want version 1 with sha256 %s; problems %v", v, sha256hex(unversioned), r.Problems())
	}

	// Two pipeline runs at once. Run A predicted version 2 and wrote it
	// into its metadata.json, but run B registered first and took 2; A's
	// package is version 3.
	runB := bundleBytes(t, "aps-failure", 0)
	runA := append(bundleBytes(t, "aps-failure", 2), 0) // other bytes, other digest
	e.S3.Put(t, bucket, "builds/run-b/model.tar.gz", runB)
	e.S3.Put(t, bucket, "builds/run-a/model.tar.gz", runA)
	if p := e.SM.Register("aps-failure", "s3://"+bucket+"/builds/run-b/model.tar.gz"); p.Version != 2 {
		t.Fatalf("run B got version %d", p.Version)
	}
	if p := e.SM.Register("aps-failure", "s3://"+bucket+"/builds/run-a/model.tar.gz"); p.Version != 3 {
		t.Fatalf("run A got version %d", p.Version)
	}
	e.SM.Approve("aps-failure", 2, "pipeline")
	e.SM.Approve("aps-failure", 3, "pipeline")
	r.Trigger("aps-failure")
	got, err = versionsOf(t, r)
	if err != nil {
		t.Fatal(err)
	}
	if v := got["aps-failure"]; v.Version != 3 || v.Artifact.SHA256 != sha256hex(runA) {
		t.Fatalf("shifted version: got %+v, want version 3 with run A's sha256; problems %v", v, r.Problems())
	}
	if probs := r.Problems(); len(probs) != 0 {
		t.Fatalf("problems %v, want none", probs)
	}
	if !strings.Contains(logs.String(), "metadata_version=2") || !strings.Contains(logs.String(), "version=3") {
		t.Fatalf("the differing metadata.json version was not logged:\n%s", logs.String())
	}
	// Announceable (the pipeline hook's check) agrees.
	if v, err := r.Announceable(t.Context(), "aps-failure", 3); err != nil || v.Artifact.SHA256 != sha256hex(runA) {
		t.Fatalf("Announceable(3) = %+v, %v", v, err)
	}
	// A bundle of another model is still refused: a name is a model's
	// identity (features, topics), not a number a registry hands out.
	e.S3.Put(t, bucket, "builds/run-c/model.tar.gz", bundleBytes(t, "engine-temp", 0))
	e.SM.Register("aps-failure", "s3://"+bucket+"/builds/run-c/model.tar.gz")
	e.SM.Approve("aps-failure", 4, "pipeline")
	r.Trigger("aps-failure")
	if got, err = versionsOf(t, r); err != nil || got["aps-failure"].Version != 3 {
		t.Fatalf("bundle of another model: %v %v", got, err)
	}
	if probs := r.Problems(); len(probs) != 1 || !errors.Is(probs[0].Err, s3dist.ErrInvalidBundle) || !strings.Contains(probs[0].Err.Error(), "engine-temp") {
		t.Fatalf("problems %v, want the bundle of engine-temp refused", probs)
	}
}

// An artifact cache written before the registry's version became the
// authority may remember a package as refused for its metadata.json
// version; that verdict is dropped, the digests are kept.
func TestArtifactCacheV1(t *testing.T) {
	e := newEnv(t)
	data := bundleBytes(t, "aps-failure", 7) // the bundle's guess, 7; the registry's version, 1
	url := e.upload("aps-failure", 1, data)
	p := e.SM.Register("aps-failure", url)
	e.SM.Approve("aps-failure", p.Version, "alice")
	loc, err := s3dist.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	h, err := (&s3dist.Reader{Client: e.S3.Client()}).Head(t.Context(), loc)
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(t.TempDir(), "artifacts.json")
	k := p.ARN + " " + h.ETag
	old := fmt.Sprintf(`{"schema":"linkedge.sagemaker-artifacts/v1","entries":{%q:{"problem":"s3://linkedge-ml/aps-failure/1/model.tar.gz: not a valid linkedge bundle: its metadata.json says aps-failure version 7, but the registry says aps-failure version 1"}},"order":[%q]}`, k, k)
	if err := os.WriteFile(cache, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.registry(func(c *sagemaker.Config) { c.CacheFile = cache }, "aps-failure")
	got, err := versionsOf(t, r)
	if err != nil {
		t.Fatal(err)
	}
	if v := got["aps-failure"]; v.Version != 1 || v.Artifact.SHA256 != sha256hex(data) {
		t.Fatalf("got %+v, want version 1; problems %v", v, r.Problems())
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// With the container runtime, a package whose serving image is not pinned
// by digest is refused for its image, not for its model data, which is
// fine (issue 12 #3: the error named a missing model data URL).
func TestContainerRuntimeNamesTheImage(t *testing.T) {
	e := newEnv(t)
	p := e.register("aps-failure") // the emulator's image is a tag, ":1"
	e.SM.Approve("aps-failure", p.Version, "alice")
	r := e.registry(func(c *sagemaker.Config) { c.ContainerRuntime = true }, "aps-failure")
	if got, err := versionsOf(t, r); err != nil || len(got) != 0 {
		t.Fatalf("an image by tag was announced: %v %v", got, err)
	}
	probs := r.Problems()
	if len(probs) != 1 || !errors.Is(probs[0].Err, sagemaker.ErrImageNotPinned) || errors.Is(probs[0].Err, sagemaker.ErrNoArtifact) ||
		strings.Contains(probs[0].Err.Error(), "model data url") || !strings.Contains(probs[0].Err.Error(), p.Image) {
		t.Fatalf("problems %v, want the unpinned image %s named as the cause", probs, p.Image)
	}
	pinned := "763104351884.dkr.ecr.eu-west-1.amazonaws.com/linkedge-inference@sha256:" + strings.Repeat("ab", 32)
	e.SM.Update("aps-failure", p.Version, func(p *sagemakertest.Package) { p.Image = pinned })
	e.advance(time.Hour)
	got, err := versionsOf(t, r)
	if err != nil || got["aps-failure"].Runtime.Image != pinned || got["aps-failure"].Runtime.Kind != release.RuntimeContainer {
		t.Fatalf("pinned image: %v %v", got, err)
	}
}
