package bucketurl

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/filebucket"
	"github.com/tierlog/tierlog/cold/internal/objutil"
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
		if strings.Contains(rawURL, "@") {
			// It may hold user info with a password; it cannot be parsed
			// to hide just that.
			return nil, fmt.Errorf("bucket URL (not shown: it may hold a password) does not parse: %w", objutil.ParseError(err))
		}
		return nil, fmt.Errorf("bucket URL %q: %w", rawURL, objutil.ParseError(err))
	}
	switch u.Scheme {
	case "file":
		return openFile(u)
	case "s3":
		return s3bucket.Open(ctx, rawURL, opts)
	case "minio":
		return miniobucket.Open(ctx, rawURL, opts)
	case "":
		return nil, fmt.Errorf("bucket URL %q has no scheme; want file:///PATH, s3://BUCKET/PREFIX or minio://HOST:PORT/BUCKET/PREFIX", objutil.RedactURL(u))
	}
	return nil, fmt.Errorf("bucket URL %s: unknown scheme %q (valid: file, s3, minio)", objutil.RedactURL(u), u.Scheme)
}

func openFile(u *url.URL) (cold.Bucket, error) {
	if u.Host != "" && u.Host != "localhost" {
		return nil, fmt.Errorf("bucket URL %s: a file URL names a local absolute path, file:///PATH (three slashes), not host %q", objutil.RedactURL(u), u.Host)
	}
	if u.RawQuery != "" {
		return nil, fmt.Errorf("bucket URL %s: file URLs take no parameters", objutil.RedactURL(u))
	}
	if u.Path == "" || u.Path[0] != '/' {
		return nil, fmt.Errorf("bucket URL %s: want an absolute path, file:///PATH", objutil.RedactURL(u))
	}
	return filebucket.New(u.Path)
}
