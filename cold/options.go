package cold

import (
	"fmt"
	"net/http"
	"time"
)

// Defaults applied by Options.WithDefaults.
const (
	// DefaultPartSize is the multipart part size: objects larger than this
	// are uploaded in parts of this size. 16 MiB keeps a 64 MiB segment at
	// four parts (four PUTs) while bounding the memory of one upload to
	// PartSize × PartConcurrency.
	DefaultPartSize = 16 << 20
	// MinPartSize is the smallest part S3 accepts (all parts but the last).
	MinPartSize = 5 << 20
	// DefaultPartConcurrency is the number of parts of one upload in flight.
	DefaultPartConcurrency = 4
	// DefaultMaxAttempts is the number of attempts the SDK makes for one
	// request before returning a retryable error to the caller.
	DefaultMaxAttempts = 3
	// DefaultOpenTimeout bounds the reachability check at open.
	DefaultOpenTimeout = 15 * time.Second
	// DefaultStallTimeout is how long a connection may move no bytes
	// before the request fails (as a retryable timeout) instead of hanging.
	DefaultStallTimeout = 60 * time.Second
)

// Options configure a remote backend. The zero value is usable: every zero
// field takes its default. The file backend ignores them.
type Options struct {
	// PartSize: objects larger than this are uploaded with multipart
	// upload in parts of this many bytes (0: DefaultPartSize; at least
	// MinPartSize). Tests use MinPartSize to cover multipart uploads with
	// little data.
	PartSize int64
	// PartConcurrency is the number of parts of one upload in flight
	// (0: DefaultPartConcurrency).
	PartConcurrency int
	// MaxAttempts is the number of attempts the SDK makes for one request
	// whose error IsRetryable (0: DefaultMaxAttempts; 1: no retries inside
	// the backend, every error reaches the caller at once).
	MaxAttempts int
	// OpenTimeout bounds the check at open that the bucket is reachable and
	// the credentials work (0: DefaultOpenTimeout).
	OpenTimeout time.Duration
	// StallTimeout: a request fails with a retryable timeout when its
	// connection has moved no bytes for this long, waiting for the
	// response or in the middle of a body, either way (0:
	// DefaultStallTimeout). A slow transfer that keeps moving is not cut;
	// the caller's context bounds the whole. Ignored when Transport is set.
	StallTimeout time.Duration
	// Transport carries the backend's HTTP requests (nil: a transport of
	// our own with the timeouts above). Tests and metrics wrap it.
	Transport http.RoundTripper
	// Credentials, if set, are used instead of the backend's usual sources
	// (environment, shared files, instance roles). Meant for tests and
	// embedding; a server takes credentials from its environment.
	Credentials *Credentials
}

// Credentials are a static access key pair.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
}

// String never prints the secret, so Credentials are safe in logs.
func (c Credentials) String() string {
	return fmt.Sprintf("access key %q (secret redacted)", c.AccessKeyID)
}

// WithDefaults returns o with every zero field set to its default, or an
// error naming the field that is out of range.
func (o Options) WithDefaults() (Options, error) {
	if o.PartSize == 0 {
		o.PartSize = DefaultPartSize
	}
	if o.PartSize < MinPartSize {
		return o, fmt.Errorf("cold: part size %d is below the S3 minimum of %d bytes", o.PartSize, MinPartSize)
	}
	if o.PartConcurrency == 0 {
		o.PartConcurrency = DefaultPartConcurrency
	}
	if o.PartConcurrency < 0 {
		return o, fmt.Errorf("cold: part concurrency %d must be positive", o.PartConcurrency)
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.MaxAttempts < 0 {
		return o, fmt.Errorf("cold: max attempts %d must be positive", o.MaxAttempts)
	}
	if o.OpenTimeout == 0 {
		o.OpenTimeout = DefaultOpenTimeout
	}
	if o.OpenTimeout < 0 {
		return o, fmt.Errorf("cold: open timeout %v must be positive", o.OpenTimeout)
	}
	if o.StallTimeout == 0 {
		o.StallTimeout = DefaultStallTimeout
	}
	if o.StallTimeout < 0 {
		return o, fmt.Errorf("cold: stall timeout %v must be positive", o.StallTimeout)
	}
	return o, nil
}
