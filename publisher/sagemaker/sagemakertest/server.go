// Package sagemakertest is a SageMaker Model Registry API server for tests.
// It speaks the real wire protocol, so the real aws-sdk-go-v2 SageMaker
// client talks to it through BaseEndpoint: AWS JSON 1.1, POST / with
// X-Amz-Target "SageMaker.ListModelPackages",
// "SageMaker.DescribeModelPackage" or
// "SageMaker.DescribeModelPackageGroup", members named as in the API reference,
// timestamps as epoch seconds, and errors as {"__type": "...", "message":
// "..."} with status 400 (ValidationException, ThrottlingException, ...).
//
// It holds model package groups and their versioned packages, lets a test
// register, approve and reject them as a pipeline and a reviewer would, and
// injects faults (throttling, access denied, missing resources) per
// operation and resource.
package sagemakertest

import (
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Approval statuses, as the API spells them.
const (
	Approved = "Approved"
	Rejected = "Rejected"
	Pending  = "PendingManualApproval"
)

// Defaults of the test account.
const (
	Region  = "eu-west-1"
	Account = "123456789012"
	// DefaultPageSize is used when a request gives no MaxResults.
	DefaultPageSize = 10
)

// Package is one versioned model package.
type Package struct {
	Group string
	// Version is ModelPackageVersion; 0 leaves it out of every answer.
	Version int32
	ARN     string
	// Approval is ModelApprovalStatus.
	Approval string
	// Status is ModelPackageStatus, "Completed" unless set.
	Status string
	// Created and Modified are CreationTime and LastModifiedTime.
	Created, Modified time.Time
	// ModifiedBy is LastModifiedBy.IamIdentity.Arn; ModifiedByProfile is
	// LastModifiedBy.UserProfileName (a Studio user).
	ModifiedBy, ModifiedByProfile string
	// ModelDataURL is InferenceSpecification.Containers[0].ModelDataUrl;
	// empty leaves it out. NoInference leaves out InferenceSpecification.
	ModelDataURL string
	NoInference  bool
	Image        string
	Description  string
	Metadata     map[string]string
	// MetricsURI is ModelMetrics.ModelQuality.Statistics.S3Uri.
	MetricsURI string
}

// Fault makes matching requests fail.
type Fault struct {
	// Op is the operation ("ListModelPackages", "DescribeModelPackage",
	// "DescribeModelPackageGroup"); empty matches every one.
	Op string
	// Resource is a group name (List, DescribeModelPackageGroup) or package
	// ARN (DescribeModelPackage); empty matches any.
	Resource string
	// Code is the error's __type, e.g. "ThrottlingException"; Status is its
	// HTTP status (default 400).
	Code    string
	Status  int
	Message string
	// Times is how many requests fail; below 1 means every one.
	Times int
	// Hang makes the matching requests get no answer at all, until the
	// client gives up: an endpoint that accepts connections and stalls.
	Hang bool
}

// Server is a running SageMaker API server.
type Server struct {
	// URL is the endpoint to give the client as BaseEndpoint.
	URL string

	srv *httptest.Server

	mu       sync.Mutex
	now      func() time.Time
	groups   map[string]bool
	packages []*Package // in creation order
	faults   []*Fault
	calls    map[string]int
	pageCap  int
	// emptyUnknown: ListModelPackages answers an unknown group with an
	// empty list instead of a ValidationException.
	emptyUnknown bool
}

// New starts a server and stops it when tb ends.
func New(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{now: time.Now, groups: map[string]bool{}, calls: map[string]int{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	tb.Cleanup(s.srv.Close)
	return s
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// SetPageCap caps every page at n summaries whatever MaxResults says, as
// the service may return fewer than asked; 0 removes the cap.
func (s *Server) SetPageCap(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pageCap = n
}

// SetListUnknownGroupEmpty makes ListModelPackages answer a group that does
// not exist with an empty list, as some SageMaker-compatible services do,
// instead of a ValidationException: a mistyped group then looks like one
// with nothing approved, unless the client asks DescribeModelPackageGroup.
func (s *Server) SetListUnknownGroupEmpty(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.emptyUnknown = on
}

// CreateGroup creates a model package group.
func (s *Server) CreateGroup(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.groups[name] = true
}

// Register creates the group's next version, pending manual approval, as a
// pipeline's RegisterModel step does, and returns it.
func (s *Server) Register(group, modelDataURL string, edit ...func(*Package)) Package {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.groups[group] = true
	var n int32
	for _, p := range s.packages {
		if p.Group == group {
			n = max(n, p.Version)
		}
	}
	now := s.tick()
	p := &Package{Group: group, Version: n + 1, Approval: Pending, Status: "Completed", Created: now, Modified: now,
		ModifiedBy: "arn:aws:sts::" + Account + ":assumed-role/SageMakerPipelineRole/pipeline", ModelDataURL: modelDataURL,
		Image:       "763104351884.dkr.ecr." + Region + ".amazonaws.com/linkedge-inference:1",
		Description: fmt.Sprintf("%s trained by the pipeline", group), Metadata: map[string]string{"linkedge:trained-by": "pipeline"},
		MetricsURI: fmt.Sprintf("s3://linkedge-ml/%s/%d/evaluation.json", group, n+1)}
	p.ARN = ARN(group, p.Version)
	for _, f := range edit {
		f(p)
	}
	s.packages = append(s.packages, p)
	return *p
}

// ARN is the model package ARN SageMaker gives a group's version: the
// resource name is lowercase.
func ARN(group string, version int32) string {
	return fmt.Sprintf("arn:aws:sagemaker:%s:%s:model-package/%s/%d", Region, Account, strings.ToLower(group), version)
}

// Approve approves a version, recording who did it as LastModifiedBy.
func (s *Server) Approve(group string, version int32, by string) {
	s.decide(group, version, Approved, by)
}

// Reject rejects a version.
func (s *Server) Reject(group string, version int32, by string) {
	s.decide(group, version, Rejected, by)
}

func (s *Server) decide(group string, version int32, status, by string) {
	s.Update(group, version, func(p *Package) {
		p.Approval, p.ModifiedBy, p.ModifiedByProfile = status, by, ""
	})
}

// Update edits a version in place (and bumps LastModifiedTime); it panics
// if there is no such version, which is a bug in the test.
func (s *Server) Update(group string, version int32, edit func(*Package)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.packages {
		if p.Group == group && p.Version == version {
			edit(p)
			p.Modified = s.tick()
			return
		}
	}
	panic(fmt.Sprintf("sagemakertest: no package %s/%d", group, version))
}

// Get returns a copy of a version.
func (s *Server) Get(group string, version int32) (Package, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.packages {
		if p.Group == group && p.Version == version {
			c := *p
			c.Metadata = maps.Clone(p.Metadata)
			return c, true
		}
	}
	return Package{}, false
}

// Fail adds a fault.
func (s *Server) Fail(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Status == 0 {
		f.Status = http.StatusBadRequest
	}
	if f.Message == "" {
		f.Message = "injected " + f.Code
	}
	s.faults = append(s.faults, &f)
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// Calls returns how many requests for op were received (failed ones
// included).
func (s *Server) Calls(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

// tick returns a creation time strictly after the previous one, so that
// sorting by CreationTime is well defined, as it is in the service.
func (s *Server) tick() time.Time {
	t := s.now().UTC().Truncate(time.Millisecond)
	if n := len(s.packages); n > 0 {
		if last := s.packages[n-1].Created; !t.After(last) {
			t = last.Add(time.Millisecond)
		}
	}
	return t
}
