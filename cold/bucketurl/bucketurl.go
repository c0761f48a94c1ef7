package bucketurl

import (
	"context"
	"fmt"
	"net/url"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/filebucket"
	"github.com/tierlog/tierlog/cold/miniobucket"
	"github.com/tierlog/tierlog/cold/s3bucket"
)

// Schemes are the URL schemes Open knows.
var Schemes = []string{"file", "s3", "minio"}

// Open opens the bucket rawURL names. Remote backends check at once that
// the bucket is reachable with the credentials they find (bounded by
// opts.OpenTimeout) and fail with an error that names the URL and the
// cause; no error or log ever holds a secret.
func Open(ctx context.Context, rawURL string, opts cold.Options) (cold.Bucket, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("bucket URL %q: %w", rawURL, redact(err))
	}
	switch u.Scheme {
	case "file":
		return openFile(u)
	case "s3":
		return s3bucket.Open(ctx, rawURL, opts)
	case "minio":
		return miniobucket.Open(ctx, rawURL, opts)
	case "":
		return nil, fmt.Errorf("bucket URL %q has no scheme; want file:///PATH, s3://BUCKET/PREFIX or minio://HOST:PORT/BUCKET/PREFIX", u.Redacted())
	}
	return nil, fmt.Errorf("bucket URL %s: unknown scheme %q (valid: file, s3, minio)", u.Redacted(), u.Scheme)
}

func openFile(u *url.URL) (cold.Bucket, error) {
	if u.Host != "" && u.Host != "localhost" {
		return nil, fmt.Errorf("bucket URL %s: a file URL names a local absolute path, file:///PATH (three slashes), not host %q", u.Redacted(), u.Host)
	}
	if u.RawQuery != "" {
		return nil, fmt.Errorf("bucket URL %s: file URLs take no parameters", u.Redacted())
	}
	if u.Path == "" || u.Path[0] != '/' {
		return nil, fmt.Errorf("bucket URL %s: want an absolute path, file:///PATH", u.Redacted())
	}
	return filebucket.New(u.Path)
}

// redact drops the URL from a url.Error: the raw URL may hold a password.
func redact(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}
