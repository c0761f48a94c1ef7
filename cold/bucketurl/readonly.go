package bucketurl

import (
	"context"
	"fmt"
	"net/url"
	"os"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/internal/objutil"
)

// OpenReadOnly opens the bucket rawURL names for reading only (see
// cold.ReadOnly): nothing through it can upload or delete. Unlike Open, a
// file:// bucket must already exist - a reader that created an empty
// directory for a mistyped path would report an empty archive instead of
// the mistake.
func OpenReadOnly(ctx context.Context, rawURL string, opts cold.Options) (cold.Bucket, error) {
	if u, err := url.Parse(rawURL); err == nil && u.Scheme == "file" && u.Path != "" {
		st, err := os.Stat(u.Path)
		if err != nil {
			return nil, fmt.Errorf("bucket %s: %w", objutil.RedactURL(u), err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("bucket %s: %s is not a directory", objutil.RedactURL(u), u.Path)
		}
	}
	b, err := Open(ctx, rawURL, opts)
	if err != nil {
		return nil, err
	}
	return cold.ReadOnly(b), nil
}
