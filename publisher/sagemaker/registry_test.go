package sagemaker_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
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
