package sagemakertest

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// epoch is a timestamp as AWS JSON protocols send it: seconds since the
// epoch, as a JSON number with a fraction.
type epoch time.Time

func (e epoch) MarshalJSON() ([]byte, error) {
	ms := time.Time(e).UnixMilli()
	return []byte(strconv.FormatFloat(float64(ms)/1000, 'f', -1, 64)), nil
}

func (e *epoch) UnmarshalJSON(b []byte) error {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return err
	}
	*e = epoch(time.UnixMilli(int64(f * 1000)))
	return nil
}

type listInput struct {
	CreationTimeAfter     *epoch
	CreationTimeBefore    *epoch
	MaxResults            *int
	ModelApprovalStatus   string
	ModelPackageGroupName string
	ModelPackageType      string
	NameContains          string
	NextToken             string
	SortBy                string
	SortOrder             string
}

type summary struct {
	ModelPackageGroupName   string
	ModelPackageVersion     *int32 `json:",omitempty"`
	ModelPackageArn         string
	ModelPackageName        string
	ModelPackageDescription string `json:",omitempty"`
	CreationTime            epoch
	ModelPackageStatus      string
	ModelApprovalStatus     string
}

type listOutput struct {
	ModelPackageSummaryList []summary
	NextToken               string `json:",omitempty"`
}

type describeInput struct {
	ModelPackageName string
	IncludedData     string
}

type container struct {
	Image        string `json:",omitempty"`
	ModelDataUrl string `json:",omitempty"`
}

type inferenceSpec struct {
	Containers                 []container
	SupportedContentTypes      []string
	SupportedResponseMIMETypes []string
}

type iamIdentity struct {
	Arn         string `json:",omitempty"`
	PrincipalId string `json:",omitempty"`
}

type userContext struct {
	UserProfileName string       `json:",omitempty"`
	IamIdentity     *iamIdentity `json:",omitempty"`
}

type metricsSource struct {
	ContentType string
	S3Uri       string
}

type describeOutput struct {
	ModelPackageName           string
	ModelPackageGroupName      string
	ModelPackageVersion        *int32 `json:",omitempty"`
	ModelPackageArn            string
	ModelPackageDescription    string `json:",omitempty"`
	CreationTime               epoch
	InferenceSpecification     *inferenceSpec `json:",omitempty"`
	ModelPackageStatus         string
	ModelPackageStatusDetails  map[string]any
	CertifyForMarketplace      bool
	ModelApprovalStatus        string
	CreatedBy                  *userContext `json:",omitempty"`
	LastModifiedTime           epoch
	LastModifiedBy             *userContext      `json:",omitempty"`
	CustomerMetadataProperties map[string]string `json:",omitempty"`
	ModelMetrics               map[string]any    `json:",omitempty"`
}

// apiError is an error the server answers with.
type apiError struct {
	status  int
	code    string
	message string
	hang    bool // answer nothing (Fault.Hang)
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func validation(format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, code: "ValidationException", message: fmt.Sprintf(format, args...)}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	op, resp, err := s.handle(r)
	if err != nil && err.hang {
		<-r.Context().Done() // the client gave up
		return
	}
	s.mu.Lock()
	if op != "" {
		s.calls[op]++
	}
	s.mu.Unlock()
	w.Header().Set("x-amzn-RequestId", "sagemakertest-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	if err != nil {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(err.status)
		_ = json.NewEncoder(w).Encode(map[string]string{"__type": err.code, "message": err.message})
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	_ = json.NewEncoder(w).Encode(resp)
}

func (s *Server) handle(r *http.Request) (string, any, *apiError) {
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		return "", nil, &apiError{status: http.StatusNotFound, code: "UnknownOperationException", message: "POST / only"}
	}
	op, ok := strings.CutPrefix(r.Header.Get("X-Amz-Target"), "SageMaker.")
	if !ok {
		return "", nil, &apiError{status: http.StatusBadRequest, code: "UnknownOperationException", message: "missing or foreign X-Amz-Target"}
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-amz-json-1.1" {
		return op, nil, &apiError{status: http.StatusBadRequest, code: "SerializationException", message: "Content-Type " + ct + ", want application/x-amz-json-1.1"}
	}
	if err := checkAuth(r); err != nil {
		return op, nil, err
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return op, nil, &apiError{status: http.StatusBadRequest, code: "SerializationException", message: err.Error()}
	}
	dec := func(v any) *apiError {
		d := json.NewDecoder(bytes.NewReader(body))
		d.DisallowUnknownFields()
		if err := d.Decode(v); err != nil {
			return &apiError{status: http.StatusBadRequest, code: "SerializationException", message: err.Error()}
		}
		return nil
	}
	switch op {
	case "ListModelPackages":
		var in listInput
		if err := dec(&in); err != nil {
			return op, nil, err
		}
		if err := s.fault(op, in.ModelPackageGroupName); err != nil {
			return op, nil, err
		}
		out, err := s.list(in)
		return op, out, err
	case "DescribeModelPackage":
		var in describeInput
		if err := dec(&in); err != nil {
			return op, nil, err
		}
		if err := s.fault(op, in.ModelPackageName); err != nil {
			return op, nil, err
		}
		out, err := s.describe(in)
		return op, out, err
	case "DescribeModelPackageGroup":
		var in describeGroupInput
		if err := dec(&in); err != nil {
			return op, nil, err
		}
		if err := s.fault(op, in.ModelPackageGroupName); err != nil {
			return op, nil, err
		}
		out, err := s.describeGroup(in)
		return op, out, err
	}
	return op, nil, &apiError{status: http.StatusBadRequest, code: "UnknownOperationException", message: op + " is not served by sagemakertest"}
}

// checkAuth requires a SigV4 Authorization header scoped to sagemaker, as
// the service does (the signature itself is not checked).
func checkAuth(r *http.Request) *apiError {
	a := r.Header.Get("Authorization")
	if a == "" {
		return &apiError{status: http.StatusForbidden, code: "MissingAuthenticationTokenException", message: "Missing Authentication Token"}
	}
	if !strings.HasPrefix(a, "AWS4-HMAC-SHA256 Credential=") || !strings.Contains(a, "/sagemaker/aws4_request") || r.Header.Get("X-Amz-Date") == "" {
		return &apiError{status: http.StatusForbidden, code: "IncompleteSignatureException", message: "not a SigV4 signature for sagemaker"}
	}
	return nil
}

func (s *Server) fault(op, resource string) *apiError {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.faults {
		if (f.Op == "" || f.Op == op) && (f.Resource == "" || strings.EqualFold(f.Resource, resource)) {
			if f.Times > 0 {
				f.Times--
				if f.Times == 0 {
					s.faults = slices.Delete(s.faults, i, i+1)
				}
			}
			return &apiError{status: f.Status, code: f.Code, message: f.Message, hang: f.Hang}
		}
	}
	return nil
}

func (s *Server) list(in listInput) (*listOutput, *apiError) {
	size := DefaultPageSize
	if in.MaxResults != nil {
		size = *in.MaxResults
		if size < 1 || size > 100 {
			return nil, validation("1 validation error detected: Value '%d' at 'maxResults' failed to satisfy constraint: Member must have value between 1 and 100", size)
		}
	}
	if !oneOf(in.ModelApprovalStatus, "", Approved, Rejected, Pending) {
		return nil, validation("Value '%s' at 'modelApprovalStatus' failed to satisfy constraint: Member must satisfy enum value set: [Approved, Rejected, PendingManualApproval]", in.ModelApprovalStatus)
	}
	if !oneOf(in.SortBy, "", "Name", "CreationTime") {
		return nil, validation("Value '%s' at 'sortBy' failed to satisfy constraint: Member must satisfy enum value set: [Name, CreationTime]", in.SortBy)
	}
	if !oneOf(in.SortOrder, "", "Ascending", "Descending") {
		return nil, validation("Value '%s' at 'sortOrder' failed to satisfy constraint: Member must satisfy enum value set: [Ascending, Descending]", in.SortOrder)
	}
	if !oneOf(in.ModelPackageType, "", "Versioned", "Unversioned", "Both") {
		return nil, validation("Value '%s' at 'modelPackageType' failed to satisfy constraint: Member must satisfy enum value set: [Versioned, Both, Unversioned]", in.ModelPackageType)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if in.ModelPackageGroupName != "" && !s.groups[in.ModelPackageGroupName] {
		if s.emptyUnknown {
			return &listOutput{ModelPackageSummaryList: []summary{}}, nil
		}
		return nil, validation("Model Package Group %s does not exist.", in.ModelPackageGroupName)
	}
	var match []*Package
	for _, p := range s.packages {
		switch {
		case in.ModelPackageGroupName != "" && p.Group != in.ModelPackageGroupName,
			in.ModelPackageType == "Unversioned",
			in.ModelApprovalStatus != "" && p.Approval != in.ModelApprovalStatus,
			in.NameContains != "" && !strings.Contains(p.Group, in.NameContains),
			in.CreationTimeAfter != nil && !p.Created.After(time.Time(*in.CreationTimeAfter)),
			in.CreationTimeBefore != nil && !p.Created.Before(time.Time(*in.CreationTimeBefore)):
			continue
		}
		match = append(match, p)
	}
	slices.SortStableFunc(match, func(a, b *Package) int {
		c := a.Created.Compare(b.Created)
		if in.SortBy == "Name" {
			c = strings.Compare(a.Group, b.Group)
		}
		if in.SortOrder == "Descending" {
			c = -c
		}
		return c
	})
	// The token binds the position to the query, so a token from another
	// query is refused rather than silently skipping packages.
	query := fmt.Sprintf("%s|%s|%s|%s|%s|%s", in.ModelPackageGroupName, in.ModelApprovalStatus, in.ModelPackageType, in.NameContains, in.SortBy, in.SortOrder)
	start := 0
	if in.NextToken != "" {
		var err error
		if start, err = decodeToken(in.NextToken, query); err != nil || start > len(match) {
			return nil, validation("Invalid pagination token")
		}
	}
	if s.pageCap > 0 {
		size = min(size, s.pageCap)
	}
	end := min(start+size, len(match))
	out := &listOutput{ModelPackageSummaryList: []summary{}}
	for _, p := range match[start:end] {
		out.ModelPackageSummaryList = append(out.ModelPackageSummaryList, summary{
			ModelPackageGroupName: p.Group, ModelPackageVersion: version(p), ModelPackageArn: p.ARN, ModelPackageName: p.Group,
			ModelPackageDescription: p.Description, CreationTime: epoch(p.Created), ModelPackageStatus: p.Status, ModelApprovalStatus: p.Approval,
		})
	}
	if end < len(match) {
		out.NextToken = encodeToken(end, query)
	}
	return out, nil
}

func (s *Server) describe(in describeInput) (*describeOutput, *apiError) {
	if in.ModelPackageName == "" {
		return nil, validation("1 validation error detected: Value null at 'modelPackageName' failed to satisfy constraint: Member must not be null")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var p *Package
	for _, q := range s.packages {
		if strings.EqualFold(q.ARN, in.ModelPackageName) {
			p = q
		}
	}
	if p == nil {
		return nil, validation("ModelPackage %s does not exist.", in.ModelPackageName)
	}
	out := &describeOutput{
		ModelPackageName: p.Group, ModelPackageGroupName: p.Group, ModelPackageVersion: version(p), ModelPackageArn: p.ARN,
		ModelPackageDescription: p.Description, CreationTime: epoch(p.Created), ModelPackageStatus: p.Status,
		ModelPackageStatusDetails: map[string]any{"ValidationStatuses": []any{}, "ImageScanStatuses": []any{}},
		ModelApprovalStatus:       p.Approval, LastModifiedTime: epoch(p.Modified),
		CreatedBy:                  &userContext{IamIdentity: &iamIdentity{Arn: "arn:aws:sts::" + Account + ":assumed-role/SageMakerPipelineRole/pipeline", PrincipalId: "AROAPIPELINE:pipeline"}},
		CustomerMetadataProperties: p.Metadata,
	}
	if p.ModifiedBy != "" || p.ModifiedByProfile != "" {
		out.LastModifiedBy = &userContext{UserProfileName: p.ModifiedByProfile}
		if p.ModifiedBy != "" {
			out.LastModifiedBy.IamIdentity = &iamIdentity{Arn: p.ModifiedBy}
		}
	}
	if !p.NoInference {
		out.InferenceSpecification = &inferenceSpec{Containers: []container{{Image: p.Image, ModelDataUrl: p.ModelDataURL}},
			SupportedContentTypes: []string{"text/csv", "application/json"}, SupportedResponseMIMETypes: []string{"application/json"}}
	}
	if p.MetricsURI != "" {
		out.ModelMetrics = map[string]any{"ModelQuality": map[string]any{"Statistics": metricsSource{ContentType: "application/json", S3Uri: p.MetricsURI}}}
	}
	return out, nil
}

type describeGroupInput struct {
	ModelPackageGroupName string
}

type describeGroupOutput struct {
	ModelPackageGroupName   string
	ModelPackageGroupArn    string
	CreationTime            epoch
	CreatedBy               *userContext `json:",omitempty"`
	ModelPackageGroupStatus string
}

func (s *Server) describeGroup(in describeGroupInput) (*describeGroupOutput, *apiError) {
	if in.ModelPackageGroupName == "" {
		return nil, validation("1 validation error detected: Value null at 'modelPackageGroupName' failed to satisfy constraint: Member must not be null")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.groups[in.ModelPackageGroupName] {
		return nil, validation("ModelPackageGroup %s does not exist.", in.ModelPackageGroupName)
	}
	return &describeGroupOutput{
		ModelPackageGroupName:   in.ModelPackageGroupName,
		ModelPackageGroupArn:    fmt.Sprintf("arn:aws:sagemaker:%s:%s:model-package-group/%s", Region, Account, strings.ToLower(in.ModelPackageGroupName)),
		CreationTime:            epoch(s.now()),
		CreatedBy:               &userContext{IamIdentity: &iamIdentity{Arn: "arn:aws:sts::" + Account + ":assumed-role/SageMakerPipelineRole/pipeline"}},
		ModelPackageGroupStatus: "Completed",
	}, nil
}

func version(p *Package) *int32 {
	if p.Version == 0 {
		return nil
	}
	v := p.Version
	return &v
}

func oneOf(s string, allowed ...string) bool { return slices.Contains(allowed, s) }

func encodeToken(pos int, query string) string {
	sum := sha256.Sum256([]byte(query))
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(pos) + "." + hex.EncodeToString(sum[:8])))
}

func decodeToken(tok, query string) (int, error) {
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return 0, err
	}
	pos, hash, ok := strings.Cut(string(raw), ".")
	sum := sha256.Sum256([]byte(query))
	if !ok || hash != hex.EncodeToString(sum[:8]) {
		return 0, fmt.Errorf("token for another query")
	}
	return strconv.Atoi(pos)
}
