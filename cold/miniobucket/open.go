package miniobucket

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/internal/objutil"
)

// Config names a bucket on a MinIO server; ParseURL reads it from a
// minio:// URL.
type Config struct {
	// Endpoint is host:port.
	Endpoint string
	Bucket   string
	// Prefix is prepended to every key ("" or ending in "/").
	Prefix string
	// Secure: HTTPS (the default) rather than plain HTTP.
	Secure bool
	// Region of the bucket; "" asks the server once.
	Region string
}

// URL is the canonical minio:// URL of c; it holds no secrets.
func (c Config) URL() string {
	u := "minio://" + c.Endpoint + "/" + c.Bucket + "/" + c.Prefix
	sep := "?"
	if !c.Secure {
		u += sep + "secure=false"
		sep = "&"
	}
	if c.Region != "" {
		u += sep + "region=" + url.QueryEscape(c.Region)
	}
	return u
}

// ParseURL reads minio://HOST:PORT/BUCKET/PREFIX?secure=BOOL&region=R.
func ParseURL(raw string) (Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Config{}, fmt.Errorf("miniobucket: bad URL: %w", objutil.ParseError(err))
	}
	if u.Scheme != "minio" {
		return Config{}, fmt.Errorf("miniobucket: URL %s: scheme %q, want minio", u.Redacted(), u.Scheme)
	}
	if u.User != nil {
		return Config{}, fmt.Errorf("miniobucket: URL %s: credentials do not belong in the URL; set MINIO_ACCESS_KEY and MINIO_SECRET_KEY", u.Redacted())
	}
	c := Config{Endpoint: u.Host, Secure: true}
	if c.Endpoint == "" {
		return Config{}, fmt.Errorf("miniobucket: URL %s: no host (want minio://HOST:PORT/BUCKET/PREFIX)", raw)
	}
	path := u.Path
	if len(path) > 0 && path[0] == '/' {
		path = path[1:]
	}
	bucket, rest, _ := strings.Cut(path, "/")
	if bucket == "" {
		return Config{}, fmt.Errorf("miniobucket: URL %s: no bucket (want minio://HOST:PORT/BUCKET/PREFIX)", raw)
	}
	if err := s3utils.CheckValidBucketName(bucket); err != nil {
		return Config{}, fmt.Errorf("miniobucket: URL %s: invalid bucket name %q: %w", raw, bucket, err)
	}
	c.Bucket = bucket
	if c.Prefix, err = objutil.BucketPrefix(rest); err != nil {
		return Config{}, fmt.Errorf("miniobucket: URL %s: %w", raw, err)
	}
	for k, v := range u.Query() {
		val := v[len(v)-1]
		switch k {
		case "secure":
			if c.Secure, err = strconv.ParseBool(val); err != nil {
				return Config{}, fmt.Errorf("miniobucket: URL %s: secure=%q, want true or false", raw, val)
			}
		case "region":
			c.Region = val
		default:
			return Config{}, fmt.Errorf("miniobucket: URL %s: unknown parameter %q (valid: secure, region)", raw, k)
		}
	}
	return c, nil
}

// credentialEnv lists the environment variable pairs tried in order.
var credentialEnv = [][3]string{
	{"MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", ""},
	{"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", ""},
	{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"},
}

// envCredentials returns the first pair set in the environment.
func envCredentials() (*cold.Credentials, error) {
	for _, names := range credentialEnv {
		id, secret := os.Getenv(names[0]), os.Getenv(names[1])
		if id != "" && secret != "" {
			c := &cold.Credentials{AccessKeyID: id, SecretAccessKey: secret}
			if names[2] != "" {
				c.SessionToken = os.Getenv(names[2])
			}
			return c, nil
		}
	}
	return nil, errors.New("no credentials: set MINIO_ACCESS_KEY and MINIO_SECRET_KEY (or MINIO_ROOT_USER and MINIO_ROOT_PASSWORD, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
}

// Open parses a minio:// URL and opens the bucket (see New).
func Open(ctx context.Context, rawURL string, opts cold.Options) (*Bucket, error) {
	c, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return New(ctx, c, opts)
}

// New opens the bucket c names and checks, within opts.OpenTimeout, that
// the server answers, the credentials work, and the bucket exists and its
// prefix can be listed; its error says which failed, naming the bucket URL
// (never a secret).
func New(ctx context.Context, c Config, opts cold.Options) (*Bucket, error) {
	opts, err := opts.WithDefaults()
	if err != nil {
		return nil, err
	}
	name := c.URL()
	creds := opts.Credentials
	if creds == nil {
		if creds, err = envCredentials(); err != nil {
			return nil, fmt.Errorf("miniobucket: open %s: %w", name, err)
		}
	}
	var transport http.RoundTripper = opts.Transport
	var closeIdle func()
	if transport == nil {
		tr := objutil.Transport(opts.StallTimeout)
		transport, closeIdle = tr, tr.CloseIdleConnections
	}
	b := &Bucket{bucket: c.Bucket, prefix: c.Prefix, name: name, opts: opts, closeIdle: closeIdle}
	client, err := minio.New(c.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken),
		Secure:       c.Secure,
		Region:       c.Region,
		Transport:    notFoundBodies{s3Replies{next: transport, seen: &b.sawS3}},
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   opts.MaxAttempts,
	})
	if err != nil {
		return nil, fmt.Errorf("miniobucket: open %s: %w", name, err)
	}
	b.client, b.core = client, &minio.Core{Client: client}
	if err := b.check(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// s3Replies notes a reply carrying an S3 request ID (x-amz-request-id),
// which every S3 reply has and a plain HTTP server's does not: a web page
// answering 200 to a listing reads as an empty listing otherwise.
type s3Replies struct {
	next http.RoundTripper
	seen *atomic.Bool
}

func (t s3Replies) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err == nil && resp.Header.Get("X-Amz-Request-Id") != "" {
		t.seen.Store(true)
	}
	return resp, err
}

// notFoundBodies keeps a 404 a 404 (and a 412 a 412) when its body is cut
// short. minio-go reads an error reply's body before it looks at the
// status and, if the read fails, returns the read's error alone: the 404
// is lost and a missing object looks like a broken connection. Here such a
// body is read in full (error bodies are small) and, if that fails,
// replaced by an empty one, from which minio-go answers by the status
// (NoSuchKey for an object, NoSuchBucket for a bucket, PreconditionFailed).
type notFoundBodies struct{ next http.RoundTripper }

// maxErrorBody bounds what notFoundBodies reads of a 404 body.
const maxErrorBody = 1 << 20

func (t notFoundBodies) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || (resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusPreconditionFailed) {
		return resp, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	if err != nil {
		body = nil
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Del("Content-Length")
	return resp, nil
}

// check lists one key under the prefix: that needs a reachable server,
// working credentials, an existing bucket and list permission, and the
// error code says which one is missing.
func (b *Bucket) check(ctx context.Context) error {
	timeout := b.opts.OpenTimeout
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Transient failures are retried (past minio-go's own attempts) until
	// the open timeout: a flaky store must not stop a server's start.
	err := cold.Retry(ctx, objutil.OpenBackoff, nil, func() error {
		lctx, stop := context.WithCancel(ctx)
		defer stop()
		var err error
		answered := false
		for obj := range b.client.ListObjects(lctx, b.bucket, minio.ListObjectsOptions{Prefix: b.prefix, Recursive: true, MaxKeys: 1}) {
			if !answered {
				// One answer (a key or an error) is enough; canceling
				// ends the listing and closes the channel.
				answered, err = true, wrap(obj.Err)
				stop()
			}
		}
		return err
	})
	if err == nil && !b.sawS3.Load() {
		return fmt.Errorf("miniobucket: open %s: %s", b.name, objutil.NotS3(http.StatusOK))
	}
	if err == nil {
		return nil
	}
	// Every S3 reply carries a request ID; a plain HTTP server's 404 page,
	// which minio-go turns into NoSuchBucket, does not. Its made-up
	// message would mislead, so it is left out.
	var resp minio.ErrorResponse
	if errors.As(err, &resp) && resp.StatusCode != 0 && resp.RequestID == "" && resp.HostID == "" {
		return fmt.Errorf("miniobucket: open %s: %s", b.name, objutil.NotS3(resp.StatusCode))
	}
	return fmt.Errorf("miniobucket: open %s: %s: %w", b.name, diagnose(err, b.bucket, timeout), err)
}

// diagnose says in words why the open check failed.
func diagnose(err error, bucket string, timeout time.Duration) string {
	var resp minio.ErrorResponse
	if !errors.As(err, &resp) {
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			return fmt.Sprintf("endpoint unreachable: no answer within %v", timeout)
		case objutil.IsNetworkError(err):
			return "endpoint unreachable"
		}
		return "the check failed"
	}
	switch resp.Code {
	case "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken":
		return "wrong credentials: the server rejects the access key or secret (" + resp.Code + ")"
	case "NoSuchBucket":
		return fmt.Sprintf("bucket %q does not exist", bucket)
	case "AccessDenied":
		return "access denied: the credentials work but may not list the bucket prefix"
	case "AuthorizationHeaderMalformed", "InvalidRegion":
		return "wrong region (set ?region=)"
	case "InvalidBucketName":
		return fmt.Sprintf("invalid bucket name %q", bucket)
	}
	if resp.StatusCode == 0 {
		return "the request could not be made (" + resp.Code + ")"
	}
	return fmt.Sprintf("the server refused the check (HTTP %d %s)", resp.StatusCode, resp.Code)
}
