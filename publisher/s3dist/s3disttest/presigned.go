package s3disttest

import (
	"context"
	"crypto/subtle"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// maxExpires is SigV4's limit for X-Amz-Expires, in seconds (7 days).
const maxExpires = 604800

// checkPresigned checks a query-string-signed request the way S3 does and
// returns the error code, status and message to answer, or "" to let it
// through.
func (s *Server) checkPresigned(r *http.Request) (code string, status int, msg string) {
	q := r.URL.Query()
	if q.Get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256" {
		return "AuthorizationQueryParametersError", http.StatusBadRequest, "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\""
	}
	date, err := time.Parse("20060102T150405Z", q.Get("X-Amz-Date"))
	if err != nil {
		return "AuthorizationQueryParametersError", http.StatusBadRequest, "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\""
	}
	secs, err := strconv.Atoi(q.Get("X-Amz-Expires"))
	switch {
	case err != nil || secs < 1:
		return "AuthorizationQueryParametersError", http.StatusBadRequest, "X-Amz-Expires should be a number of seconds above 0"
	case secs > maxExpires:
		return "AuthorizationQueryParametersError", http.StatusBadRequest, "X-Amz-Expires must be less than a week (in seconds) that is; 604800"
	}
	now := s.clock()
	if !now.Before(date.Add(time.Duration(secs) * time.Second)) {
		return "AccessDenied", http.StatusForbidden, "Request has expired"
	}
	if now.Before(date.Add(-15 * time.Minute)) {
		return "AccessDenied", http.StatusForbidden, "Request is not valid yet"
	}
	// Credential is AKID/yyyymmdd/region/s3/aws4_request.
	cred := strings.Split(q.Get("X-Amz-Credential"), "/")
	if len(cred) != 5 || cred[3] != "s3" || cred[4] != "aws4_request" {
		return "AuthorizationQueryParametersError", http.StatusBadRequest, "malformed X-Amz-Credential"
	}
	if cred[0] != AccessKey {
		return "InvalidAccessKeyId", http.StatusForbidden, "The AWS Access Key Id you provided does not exist in our records."
	}
	if !s.signatureMatches(r, cred[2], date) {
		return "SignatureDoesNotMatch", http.StatusForbidden, "The request signature we calculated does not match the signature you provided."
	}
	return "", 0, ""
}

// signatureMatches signs the request again, as the SDK's presigner would
// have with the server's secret at the stated time, and compares.
func (s *Server) signatureMatches(r *http.Request, region string, date time.Time) bool {
	q := r.URL.Query()
	got := q.Get("X-Amz-Signature")
	for _, k := range []string{"X-Amz-Signature", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders"} {
		q.Del(k)
	}
	u := *r.URL
	u.RawQuery = q.Encode()
	u.Scheme, u.Host = "http", r.Host
	req, err := http.NewRequestWithContext(context.Background(), r.Method, u.String(), nil)
	if err != nil {
		return false
	}
	creds := aws.Credentials{AccessKeyID: AccessKey, SecretAccessKey: SecretKey}
	signed, _, err := v4.NewSigner().PresignHTTP(context.Background(), creds, req, "UNSIGNED-PAYLOAD", "s3", region, date,
		func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true })
	if err != nil {
		return false
	}
	i := strings.Index(signed, "X-Amz-Signature=")
	if i < 0 {
		return false
	}
	want := signed[i+len("X-Amz-Signature="):]
	if j := strings.IndexByte(want, '&'); j >= 0 {
		want = want[:j]
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}
