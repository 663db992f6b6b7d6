package sagemaker

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	sm "github.com/aws/aws-sdk-go-v2/service/sagemaker"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

// AWSOptions say how to reach AWS. Everything else (credentials, profile,
// region when Region is empty, per-service endpoints) comes from the SDK's
// standard sources: the environment, ~/.aws/config and credentials, SSO,
// web identity, the container or instance role.
type AWSOptions struct {
	// Region overrides AWS_REGION and the profile's region.
	Region string
	// EndpointURL sends every service to one endpoint (an S3-compatible
	// store, a test server). It takes precedence over the SDK's
	// AWS_ENDPOINT_URL_<SERVICE> variables (AWS_ENDPOINT_URL_SAGEMAKER,
	// _S3, _SQS); leave it empty to route services separately with those.
	EndpointURL string
	// S3PathStyle addresses buckets as https://host/bucket/key, which most
	// S3-compatible stores need.
	S3PathStyle bool
	// MaxAttempts per API call, retries included (SDK standard retryer:
	// throttling and transient errors, exponential backoff with jitter).
	// Default 5.
	MaxAttempts int
	// MaxBackoff between two attempts of one call. Default 20s.
	MaxBackoff time.Duration
}

// LoadAWSConfig loads the SDK configuration (config.LoadDefaultConfig) and
// applies o. extra options go to LoadDefaultConfig last (tests pass static
// credentials).
func LoadAWSConfig(ctx context.Context, o AWSOptions, extra ...func(*config.LoadOptions) error) (aws.Config, error) {
	opts := []func(*config.LoadOptions) error{config.WithRetryer(Retryer(o))}
	if o.Region != "" {
		opts = append(opts, config.WithRegion(o.Region))
	}
	if o.EndpointURL != "" {
		opts = append(opts, config.WithBaseEndpoint(o.EndpointURL))
	}
	cfg, err := config.LoadDefaultConfig(ctx, append(opts, extra...)...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("load aws config: %w", err)
	}
	if cfg.Region == "" {
		return aws.Config{}, fmt.Errorf("no aws region: pass --region or set AWS_REGION")
	}
	return cfg, nil
}

// Retryer is the SDK standard retryer with o's attempts and backoff. The
// registry adds its own, longer backoff across polls on top of it.
func Retryer(o AWSOptions) func() aws.Retryer {
	attempts, maxBackoff := o.MaxAttempts, o.MaxBackoff
	if attempts <= 0 {
		attempts = 5
	}
	if maxBackoff <= 0 {
		maxBackoff = 20 * time.Second
	}
	return func() aws.Retryer {
		return retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = attempts
			so.MaxBackoff = maxBackoff
		})
	}
}

// Clients are the AWS clients the SageMaker backend needs.
type Clients struct {
	SageMaker *sm.Client
	S3        *s3.Client
	Presign   *s3.PresignClient
	SQS       *sqs.Client
	// Credentials are those every client signs with (for the presigner's
	// expiry accounting).
	Credentials aws.CredentialsProvider
}

// NewClients builds the clients from cfg.
func NewClients(cfg aws.Config, o AWSOptions) Clients {
	s3c := s3.NewFromConfig(cfg, func(so *s3.Options) {
		so.UsePathStyle = o.S3PathStyle
		// Checksums are checked only when the store sends them: the digest
		// that matters is the sha256 computed while reading.
		so.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	return Clients{
		SageMaker:   sm.NewFromConfig(cfg),
		S3:          s3c,
		Presign:     s3.NewPresignClient(s3c),
		SQS:         sqs.NewFromConfig(cfg),
		Credentials: cfg.Credentials,
	}
}
