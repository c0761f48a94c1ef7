package s3bucket

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/internal/objutil"
)

// Config names a bucket and how to reach it; ParseURL reads it from an
// s3:// URL.
type Config struct {
	Bucket string
	// Prefix is prepended to every key ("" or ending in "/").
	Prefix string
	// Region of the bucket; "" takes the SDK's (AWS_REGION, shared
	// config), or us-east-1 when Endpoint is set.
	Region string
	// Endpoint is the base URL of an S3-compatible store; "" is AWS.
	Endpoint string
	// PathStyle addresses the bucket in the URL path instead of the host.
	PathStyle bool
}

// URL is the canonical s3:// URL of c; it holds no secrets. The endpoint
// is left readable (not percent-encoded): it is for people to read.
func (c Config) URL() string {
	var q []string
	if c.Region != "" {
		q = append(q, "region="+url.QueryEscape(c.Region))
	}
	if c.Endpoint != "" {
		q = append(q, "endpoint="+readableEscape(c.Endpoint))
	}
	if c.PathStyle {
		q = append(q, "path_style=true")
	}
	u := "s3://" + c.Bucket + "/" + c.Prefix
	if len(q) > 0 {
		u += "?" + strings.Join(q, "&")
	}
	return u
}

// readableEscape escapes a URL for a query value but keeps ':' and '/',
// which are legal there.
func readableEscape(s string) string {
	return strings.NewReplacer("%3A", ":", "%2F", "/").Replace(url.QueryEscape(s))
}

// ParseURL reads s3://BUCKET/PREFIX?region=R&endpoint=URL&path_style=BOOL.
func ParseURL(raw string) (Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Config{}, fmt.Errorf("s3bucket: bad URL: %w", objutil.ParseError(err))
	}
	// Errors name the URL as shown, with any password (in the user info or
	// the endpoint parameter) hidden.
	shown := objutil.RedactURL(u)
	if u.Scheme != "s3" {
		return Config{}, fmt.Errorf("s3bucket: URL %s: scheme %q, want s3", shown, u.Scheme)
	}
	if u.User != nil {
		return Config{}, fmt.Errorf("s3bucket: URL %s: credentials do not belong in the URL; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or use a profile", shown)
	}
	c := Config{Bucket: u.Host}
	if c.Bucket == "" {
		return Config{}, fmt.Errorf("s3bucket: URL %s: no bucket (want s3://BUCKET/PREFIX)", shown)
	}
	if c.Prefix, err = objutil.BucketPrefix(u.Path); err != nil {
		return Config{}, fmt.Errorf("s3bucket: URL %s: %w", shown, err)
	}
	for k, v := range u.Query() {
		val := v[len(v)-1]
		switch k {
		case "region":
			c.Region = val
		case "endpoint":
			c.Endpoint = val
			if !strings.Contains(val, "://") {
				c.Endpoint = "https://" + val
			}
			eu, err := url.Parse(c.Endpoint)
			if err != nil || eu.Host == "" {
				if strings.Contains(val, "@") {
					val = "(not shown: it may hold a password)"
				}
				return Config{}, fmt.Errorf("s3bucket: URL %s: endpoint %q is not a URL like http://host:port", shown, val)
			}
			if eu.User != nil {
				return Config{}, fmt.Errorf("s3bucket: URL %s: credentials do not belong in the endpoint URL", shown)
			}
		case "path_style":
			if c.PathStyle, err = strconv.ParseBool(val); err != nil {
				return Config{}, fmt.Errorf("s3bucket: URL %s: path_style=%q, want true or false", shown, val)
			}
		default:
			return Config{}, fmt.Errorf("s3bucket: URL %s: unknown parameter %q (valid: region, endpoint, path_style)", shown, k)
		}
	}
	return c, nil
}

// Open parses an s3:// URL and opens the bucket (see New).
func Open(ctx context.Context, rawURL string, opts cold.Options) (*Bucket, error) {
	c, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return New(ctx, c, opts)
}

// New opens the bucket c names and checks, within opts.OpenTimeout, that
// credentials are found, the endpoint answers, the bucket exists and the
// prefix can be listed; its error says which of these failed, naming the
// bucket URL (never a secret).
func New(ctx context.Context, c Config, opts cold.Options) (*Bucket, error) {
	opts, err := opts.WithDefaults()
	if err != nil {
		return nil, err
	}
	name := c.URL()
	// Our transport settings go into the SDK's buildable client, so that
	// the SDK can still add a custom CA bundle (AWS_CA_BUNDLE) to it.
	httpClient := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		objutil.ConfigureTransport(tr, opts.StallTimeout)
	}).WithReadTimeout(0) // the stall timeout is ours
	loadOpts := []func(*config.LoadOptions) error{
		config.WithHTTPClient(httpClient),
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = opts.MaxAttempts
				// Our callers retry too; a client-side retry quota would
				// turn a burst of 503s into non-retryable quota errors.
				o.RateLimiter = ratelimit.None
				o.Retryables = []retry.IsErrorRetryable{retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
					return aws.BoolTernary(cold.IsRetryable(err))
				})}
			})
		}),
	}
	if c.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(c.Region))
	}
	if c.Endpoint != "" {
		// A store at an endpoint is not AWS: EC2 instance credentials do
		// not apply, and asking the metadata service for them only adds a
		// warning (and a delay) before the "no credentials" error.
		loadOpts = append(loadOpts, config.WithEC2IMDSClientEnableState(imds.ClientDisabled))
	}
	if opts.Credentials != nil {
		cr := opts.Credentials
		loadOpts = append(loadOpts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cr.AccessKeyID, cr.SecretAccessKey, cr.SessionToken)))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("s3bucket: open %s: load AWS configuration: %w", name, err)
	}
	var closeIdle func()
	if opts.Transport != nil {
		cfg.HTTPClient = &http.Client{Transport: opts.Transport}
	} else if bc, ok := cfg.HTTPClient.(*awshttp.BuildableClient); ok {
		// The SDK may have copied the client (to add the CA bundle); close
		// the idle connections of the one it uses.
		client := bc.Freeze()
		cfg.HTTPClient = client
		if hc, ok := client.(interface{ CloseIdleConnections() }); ok {
			closeIdle = hc.CloseIdleConnections
		}
	}
	if cfg.Region == "" {
		if c.Endpoint == "" {
			return nil, fmt.Errorf("s3bucket: open %s: no region: add ?region=… to the URL or set AWS_REGION", name)
		}
		cfg.Region = "us-east-1" // S3-compatible stores mostly ignore it
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
		o.UsePathStyle = c.PathStyle
		// Ranged GETs carry no checksum; do not log that for each one.
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	b := &Bucket{client: client, bucket: c.Bucket, prefix: c.Prefix, name: name, opts: opts, closeIdle: closeIdle}
	if err := b.check(ctx, cfg.Credentials); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// check lists one key under the prefix: that needs working credentials,
// a reachable endpoint, an existing bucket in the right region and list
// permission, and an S3 error body says which one is missing (a HEAD
// request would not).
func (b *Bucket) check(ctx context.Context, creds aws.CredentialsProvider) error {
	timeout := b.opts.OpenTimeout
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if creds == nil {
		return fmt.Errorf("s3bucket: open %s: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE", b.name)
	}
	if _, err := creds.Retrieve(ctx); err != nil {
		return fmt.Errorf("s3bucket: open %s: no usable credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE): %w", b.name, err)
	}
	// Transient failures are retried (past the SDK's own attempts) until
	// the open timeout: a flaky store must not stop a server's start.
	var out *s3.ListObjectsV2Output
	err := cold.Retry(ctx, objutil.OpenBackoff, nil, func() error {
		var err error
		out, err = b.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{
			Bucket:  aws.String(b.bucket),
			Prefix:  aws.String(b.prefix),
			MaxKeys: aws.Int32(1),
		})
		return err
	})
	if err == nil && aws.ToString(out.Name) == "" {
		// Every S3 listing names its bucket; a web page answering 200
		// decodes as an empty listing without one.
		return fmt.Errorf("s3bucket: open %s: %s", b.name, objutil.NotS3(http.StatusOK))
	}
	if err == nil {
		return nil
	}
	return fmt.Errorf("s3bucket: open %s: %s: %w", b.name, diagnose(err, b.bucket, timeout), err)
}

// fromS3 tells whether a reply came from an S3 store: every S3 reply,
// error or not, carries a request ID (x-amz-request-id), which a plain HTTP
// server does not send, and a reply the SDK cannot decode is not S3's.
// Errors without a reply (a refused connection) count as S3's: they are
// diagnosed as unreachable.
func fromS3(err error) bool {
	var de *smithy.DeserializationError
	if errors.As(err, &de) {
		return false
	}
	var re interface{ ServiceRequestID() string }
	if !errors.As(err, &re) {
		return true
	}
	var host interface{ ServiceHostID() string }
	return re.ServiceRequestID() != "" || (errors.As(err, &host) && host.ServiceHostID() != "")
}

// diagnose says in words why the open check failed.
func diagnose(err error, bucket string, timeout time.Duration) string {
	var api smithy.APIError
	code := ""
	if errors.As(err, &api) {
		code = api.ErrorCode()
	}
	status := 0
	var st interface{ HTTPStatusCode() int }
	if errors.As(err, &st) {
		status = st.HTTPStatusCode()
	}
	switch {
	case code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" || code == "InvalidToken" ||
		code == "ExpiredToken" || code == "InvalidClientTokenId":
		return "wrong credentials: the store rejects the access key or secret (" + code + ")"
	case status != 0 && !fromS3(err):
		return objutil.NotS3(status)
	case code == "NoSuchBucket":
		return fmt.Sprintf("bucket %q does not exist", bucket)
	case code == "AccessDenied" || code == "AllAccessDisabled" || status == http.StatusForbidden:
		return "access denied: the credentials work but may not list the bucket prefix"
	case code == "PermanentRedirect" || code == "AuthorizationHeaderMalformed" || code == "IllegalLocationConstraintException" ||
		status == http.StatusMovedPermanently:
		return "wrong region: the bucket lives in another region (set ?region=)"
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("endpoint unreachable: no answer within %v", timeout)
	case status == 0 && objutil.IsNetworkError(err):
		return "endpoint unreachable"
	case status == 0:
		return "the check failed"
	}
	return fmt.Sprintf("the store refused the check (HTTP %d %s)", status, code)
}
