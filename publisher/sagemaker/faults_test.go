package sagemaker_test

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/linkedge/linkedge/publisher/s3dist"
	"github.com/linkedge/linkedge/publisher/s3dist/s3disttest"
	"github.com/linkedge/linkedge/publisher/sagemaker"
	"github.com/linkedge/linkedge/publisher/sagemaker/sagemakertest"
)

// A version whose problem is its own is skipped (the previous approved
// version stands in), reported with its ARN, and checked again at the next
// poll; once fixed, it is announced.
func TestBadVersionSkipped(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(e *env, arn string)
		fix    func(e *env)
		want   error
	}{
		{
			name: "no ModelDataUrl",
			break_: func(e *env, _ string) {
				e.SM.Update("aps-failure", 2, func(p *sagemakertest.Package) { p.ModelDataURL = "" })
			},
			fix: func(e *env) {
				e.SM.Update("aps-failure", 2, func(p *sagemakertest.Package) { p.ModelDataURL = "s3://linkedge-ml/aps-failure/2/model.tar.gz" })
			},
			want: sagemaker.ErrNoArtifact,
		},
		{
			name: "no inference specification",
			break_: func(e *env, _ string) {
				e.SM.Update("aps-failure", 2, func(p *sagemakertest.Package) { p.NoInference = true })
			},
			fix:  func(e *env) { e.SM.Update("aps-failure", 2, func(p *sagemakertest.Package) { p.NoInference = false }) },
			want: sagemaker.ErrNoArtifact,
		},
		{
			name: "not s3",
			break_: func(e *env, _ string) {
				e.SM.Update("aps-failure", 2, func(p *sagemakertest.Package) { p.ModelDataURL = "https://example.com/model.tar.gz" })
			},
			fix: func(e *env) {
				e.SM.Update("aps-failure", 2, func(p *sagemakertest.Package) { p.ModelDataURL = "s3://linkedge-ml/aps-failure/2/model.tar.gz" })
			},
			want: s3dist.ErrNotS3,
		},
		{
			name: "no such object",
			break_: func(e *env, _ string) {
				e.SM.Update("aps-failure", 2, func(p *sagemakertest.Package) { p.ModelDataURL = "s3://linkedge-ml/nowhere/model.tar.gz" })
			},
			fix:  func(e *env) { e.S3.Put(e.t, bucket, "nowhere/model.tar.gz", bundleBytes(e.t, "aps-failure", 2)) },
			want: s3dist.ErrNotFound,
		},
		{
			name: "not a bundle",
			break_: func(e *env, _ string) {
				e.S3.Put(e.t, bucket, "aps-failure/2/model.tar.gz", []byte("PK\x03\x04 a zip file"))
			},
			fix:  func(e *env) { e.upload("aps-failure", 2, bundleBytes(e.t, "aps-failure", 2)) },
			want: s3dist.ErrInvalidBundle,
		},
		{
			name:   "bundle of another model",
			break_: func(e *env, _ string) { e.upload("aps-failure", 2, bundleBytes(e.t, "engine-temp", 2)) },
			fix:    func(e *env) { e.upload("aps-failure", 2, bundleBytes(e.t, "aps-failure", 2)) },
			want:   s3dist.ErrInvalidBundle,
		},
		{
			name: "no version",
			break_: func(e *env, _ string) {
				e.SM.Update("aps-failure", 2, func(p *sagemakertest.Package) { p.Version = 0 })
			},
			want: sagemaker.ErrNoVersion,
		},
		{
			name: "not completed",
			break_: func(e *env, _ string) {
				e.SM.Update("aps-failure", 2, func(p *sagemakertest.Package) { p.Status = "Failed" })
			},
			fix:  func(e *env) { e.SM.Update("aps-failure", 2, func(p *sagemakertest.Package) { p.Status = "Completed" }) },
			want: sagemaker.ErrNotReady,
		},
		{
			name: "package vanished between list and describe",
			break_: func(e *env, arn string) {
				e.SM.Fail(sagemakertest.Fault{Op: "DescribeModelPackage", Resource: arn, Code: "ValidationException", Message: "ModelPackage " + arn + " does not exist."})
			},
			fix:  func(e *env) { e.SM.ClearFaults() },
			want: sagemaker.ErrPackageNotFound,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.SM.CreateGroup("other")
			for _, g := range []string{"aps-failure", "aps-failure", "other"} {
				p := e.register(g)
				e.SM.Approve(g, p.Version, "alice")
			}
			arn := sagemakertest.ARN("aps-failure", 2)
			tc.break_(e, arn)
			r := e.registry(nil, "aps-failure", "other")
			got, err := versionsOf(t, r)
			if err != nil {
				t.Fatal(err)
			}
			if got["aps-failure"].Version != 1 || got["other"].Version != 1 {
				t.Fatalf("got %v, want aps-failure 1 (2 skipped) and other 1", got)
			}
			probs := r.Problems()
			if len(probs) != 1 || !errors.Is(probs[0].Err, tc.want) || !strings.Contains(probs[0].Err.Error(), arn) || probs[0].Group != "aps-failure" {
				t.Fatalf("problems %v, want one %v naming %s", probs, tc.want, arn)
			}
			t.Logf("reported: %v", probs[0].Err)
			if tc.fix == nil {
				return
			}
			tc.fix(e)
			e.advance(time.Hour) // the next poll
			got, err = versionsOf(t, r)
			if err != nil {
				t.Fatal(err)
			}
			if got["aps-failure"].Version != 2 || len(r.Problems()) != 0 {
				t.Fatalf("after the fix: %v, problems %v", got, r.Problems())
			}
		})
	}
}

// A failure that says nothing about the version (access denied,
// throttling, a server error) never makes the group step back: it keeps
// what it reported, other groups go on, and the version is tried again.
func TestUnknownStateKeepsGroup(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(e *env, arn string)
	}{
		{"describe access denied", func(e *env, arn string) {
			e.SM.Fail(sagemakertest.Fault{Op: "DescribeModelPackage", Resource: arn, Code: "AccessDeniedException",
				Message: "User: arn:aws:sts::123456789012:assumed-role/publisher is not authorized to perform: sagemaker:DescribeModelPackage"})
		}},
		{"list access denied", func(e *env, _ string) {
			e.SM.Fail(sagemakertest.Fault{Op: "ListModelPackages", Resource: "aps-failure", Code: "AccessDeniedException"})
		}},
		{"s3 access denied", func(e *env, _ string) {
			e.S3.Fail(s3disttest.Fault{Key: bucket + "/aps-failure/2/model.tar.gz", Status: 403, Code: "AccessDenied"})
		}},
		{"s3 get access denied", func(e *env, _ string) {
			e.S3.Fail(s3disttest.Fault{Method: "GET", Key: bucket + "/aps-failure/2/model.tar.gz", Status: 403, Code: "AccessDenied"})
		}},
		{"sagemaker internal error", func(e *env, arn string) {
			e.SM.Fail(sagemakertest.Fault{Op: "DescribeModelPackage", Resource: arn, Code: "InternalFailure", Status: 500})
		}},
		{"describe throttled", func(e *env, arn string) {
			e.SM.Fail(sagemakertest.Fault{Op: "DescribeModelPackage", Resource: arn, Code: "ThrottlingException", Message: "Rate exceeded"})
		}},
		{"s3 slow down", func(e *env, _ string) {
			e.S3.Fail(s3disttest.Fault{Method: "HEAD", Key: bucket + "/aps-failure/2/model.tar.gz", Status: 503, Code: "SlowDown"})
		}},
		{"s3 unreachable", func(e *env, _ string) { e.S3.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.SM.CreateGroup("other")
			p1 := e.register("aps-failure")
			e.SM.Approve("aps-failure", p1.Version, "alice")
			r := e.registry(nil, "aps-failure", "other")
			if got, err := versionsOf(t, r); err != nil || got["aps-failure"].Version != 1 {
				t.Fatalf("before: %v %v", got, err)
			}
			p2 := e.register("aps-failure")
			e.SM.Approve("aps-failure", p2.Version, "alice")
			po := e.register("other")
			e.SM.Approve("other", po.Version, "alice")
			tc.fault(e, p2.ARN)

			e.advance(time.Hour)
			got, err := versionsOf(t, r)
			if err != nil {
				t.Fatal(err)
			}
			if got["aps-failure"].Version != 1 {
				t.Fatalf("aps-failure went to %d during the fault; want it kept at 1", got["aps-failure"].Version)
			}
			// Throttling stops the refresh (the quota is the account's);
			// other failures leave the other groups served.
			if throttle := strings.Contains(tc.name, "throttled") || strings.Contains(tc.name, "slow down"); !throttle && tc.name != "s3 unreachable" && got["other"].Version != 1 {
				t.Fatalf("other group: %v", got)
			}
			if len(r.Problems()) == 0 {
				t.Fatal("the fault was not reported")
			}
			t.Logf("reported: %v", r.Problems()[0].Err)
			if tc.name == "s3 unreachable" {
				return
			}
			e.SM.ClearFaults()
			e.S3.ClearFaults()
			e.advance(time.Hour)
			if got, err = versionsOf(t, r); err != nil || got["aps-failure"].Version != 2 || got["other"].Version != 1 {
				t.Fatalf("after the fault: %v %v, problems %v", got, err, r.Problems())
			}
		})
	}
}

// Once a version was read, a later transient failure keeps its last good
// description instead of stepping back to the version before.
func TestTransientKeepsLastGood(t *testing.T) {
	e := newEnv(t)
	for range 2 {
		p := e.register("aps-failure")
		e.SM.Approve("aps-failure", p.Version, "alice")
	}
	r := e.registry(nil, "aps-failure")
	if got, err := versionsOf(t, r); err != nil || got["aps-failure"].Version != 2 {
		t.Fatalf("%v %v", got, err)
	}
	e.SM.Fail(sagemakertest.Fault{Op: "DescribeModelPackage", Code: "AccessDeniedException"})
	e.advance(time.Hour)
	got, err := versionsOf(t, r)
	if err != nil || got["aps-failure"].Version != 2 || got["aps-failure"].Artifact.SHA256 == "" {
		t.Fatalf("%v %v", got, err)
	}
}

// A group that does not exist is reported, named, at the first read, and
// the others are served (issue 12 #3). It is asked about with
// DescribeModelPackageGroup, since ListModelPackages may answer a missing
// group with an empty list, which looked like a group with nothing
// approved. It stays watched: once created, it is served, and the log says
// so without naming a package it never had.
func TestMissingGroup(t *testing.T) {
	for _, tc := range []struct {
		name       string
		emptyLists bool
	}{
		{"list refuses an unknown group", false},
		{"list answers an unknown group with nothing", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.SM.SetListUnknownGroupEmpty(tc.emptyLists)
			p := e.register("aps-failure")
			e.SM.Approve("aps-failure", p.Version, "alice")
			var logs syncBuffer
			r := e.registry(func(c *sagemaker.Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) }, "aps-failure", "typo-group")
			got, err := versionsOf(t, r)
			if err != nil || got["aps-failure"].Version != 1 || len(got) != 1 {
				t.Fatalf("%v %v", got, err)
			}
			probs := r.Problems()
			if len(probs) != 1 || !errors.Is(probs[0].Err, sagemaker.ErrGroupNotFound) || !strings.Contains(probs[0].Err.Error(), `"typo-group" does not exist`) ||
				!strings.Contains(probs[0].Err.Error(), "--groups") {
				t.Fatalf("problems %v, want typo-group named as missing", probs)
			}
			if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "group=typo-group") {
				t.Fatalf("the missing group was not logged as a warning:\n%s", logs.String())
			}
			if err := r.Degraded(); err != nil {
				t.Fatalf("a missing group is a current answer, not a degraded view: %v", err)
			}
			// Created later (the pipeline's first run): served, and the
			// problem resolved in words that name no package.
			q := e.register("typo-group")
			e.SM.Approve("typo-group", q.Version, "alice")
			e.advance(time.Hour)
			if got, err = versionsOf(t, r); err != nil || got["typo-group"].Version != 1 || len(r.Problems()) != 0 {
				t.Fatalf("after creating the group: %v %v, problems %v", got, err, r.Problems())
			}
			if strings.Contains(logs.String(), `arn=""`) || strings.Contains(logs.String(), "version=0") {
				t.Fatalf("a group's problem was reported as a package's:\n%s", logs.String())
			}
		})
	}
	// Only missing groups: nothing is known, which is an error, not "none".
	e := newEnv(t)
	r := e.registry(nil, "typo-group")
	if _, err := r.Versions(t.Context()); err != nil {
		t.Fatalf("a missing group is known to have no versions: %v", err)
	}
	// A role that may not describe groups (set-ups older than this check)
	// still reads them, and asks only once.
	e.SM.CreateGroup("aps-failure")
	e.SM.Fail(sagemakertest.Fault{Op: "DescribeModelPackageGroup", Code: "AccessDeniedException"})
	r = e.registry(nil, "aps-failure")
	for range 2 {
		r.Trigger("")
		if _, err := versionsOf(t, r); err != nil || len(r.Problems()) != 0 {
			t.Fatalf("without DescribeModelPackageGroup: %v, problems %v", err, r.Problems())
		}
	}
	if n := e.SM.Calls("DescribeModelPackageGroup"); n != 2 { // 1 for typo-group above, 1 here
		t.Fatalf("%d DescribeModelPackageGroup calls, want 2", n)
	}
}

// Throttling: the SDK's retryer absorbs a short burst; a longer one makes
// the registry back off (no SageMaker call until the backoff ends) while
// it keeps answering with what it knows.
func TestThrottling(t *testing.T) {
	e := newEnv(t)
	p := e.register("aps-failure")
	e.SM.Approve("aps-failure", p.Version, "alice")

	// A burst of two throttles, absorbed by SDK retries (5 attempts).
	e.SM.Fail(sagemakertest.Fault{Op: "ListModelPackages", Code: "ThrottlingException", Message: "Rate exceeded", Times: 2})
	r := e.registry(func(c *sagemaker.Config) { c.Client = e.smClient(5) }, "aps-failure")
	if got, err := versionsOf(t, r); err != nil || got["aps-failure"].Version != 1 {
		t.Fatalf("%v %v", got, err)
	}
	if n := e.SM.Calls("ListModelPackages"); n != 3 {
		t.Fatalf("%d list calls, want 3 (2 throttled, 1 retried by the SDK)", n)
	}

	// Lasting throttling, SDK retries off.
	r = e.registry(nil, "aps-failure")
	if _, err := versionsOf(t, r); err != nil {
		t.Fatal(err)
	}
	e.SM.Fail(sagemakertest.Fault{Op: "ListModelPackages", Code: "ThrottlingException", Message: "Rate exceeded"})
	p2 := e.register("aps-failure")
	e.SM.Approve("aps-failure", p2.Version, "alice")
	r.Trigger("aps-failure")
	before := e.SM.Calls("ListModelPackages")
	got, err := versionsOf(t, r)
	if err != nil || got["aps-failure"].Version != 1 {
		t.Fatalf("while throttled: %v %v", got, err)
	}
	if len(r.Problems()) != 1 || !strings.Contains(r.Problems()[0].Err.Error(), "ThrottlingException") {
		t.Fatalf("problems %v", r.Problems())
	}
	// Within the backoff (1s to 2s after a first failure), no call at all,
	// even when an event asks.
	e.advance(400 * time.Millisecond)
	r.Trigger("aps-failure")
	if _, err := versionsOf(t, r); err != nil {
		t.Fatal(err)
	}
	if n := e.SM.Calls("ListModelPackages"); n != before+1 {
		t.Fatalf("%d calls during the backoff, want none", n-before-1)
	}
	// The waits grow: after each failure the next attempt is further away.
	waits := 0
	for i := 0; i < 40 && e.SM.Calls("ListModelPackages") < before+4; i++ {
		e.advance(250 * time.Millisecond)
		waits++
		if _, err := versionsOf(t, r); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.SM.Calls("ListModelPackages"); n != before+4 || waits < 14 { // ≥ 0.5+1+2 s in 250 ms steps
		t.Fatalf("%d calls after %d steps of 250ms; backoff too short", n-before, waits)
	}
	e.SM.ClearFaults()
	e.advance(time.Minute)
	if got, err = versionsOf(t, r); err != nil || got["aps-failure"].Version != 2 {
		t.Fatalf("after throttling: %v %v", got, err)
	}
}

// Issue 12 #2: an endpoint that accepts connections and never answers
// costs each call its deadline, not the publisher's life; the last good
// view is kept, and Health says when it has gone stale.
func TestHangingEndpoint(t *testing.T) {
	e := newEnv(t)
	p := e.register("aps-failure")
	e.SM.Approve("aps-failure", p.Version, "alice")
	r := e.registry(func(c *sagemaker.Config) { c.CallTimeout = 300 * time.Millisecond }, "aps-failure")
	if got, err := versionsOf(t, r); err != nil || got["aps-failure"].Version != 1 {
		t.Fatalf("%v %v", got, err)
	}
	if err := r.Health(); err != nil {
		t.Fatalf("fresh view: %v", err)
	}
	e.SM.Fail(sagemakertest.Fault{Op: "ListModelPackages", Hang: true})
	e.advance(2 * time.Hour) // a refresh is due
	done := make(chan error, 1)
	go func() {
		got, err := versionsOf(t, r)
		if err == nil && got["aps-failure"].Version != 1 {
			err = fmt.Errorf("view %v", got)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("with SageMaker hanging: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a hanging SageMaker endpoint stalled the registry")
	}
	// Two hours since the last good read, three refresh intervals is
	// three hours: still fresh. Past that, stale.
	if err := r.Health(); err != nil {
		t.Fatalf("after 2h: %v", err)
	}
	e.advance(2 * time.Hour)
	if err := r.Health(); err == nil || !strings.Contains(err.Error(), "stale") || !strings.Contains(err.Error(), "aps-failure") {
		t.Fatalf("after 4h without a read: %v", err)
	}
}
