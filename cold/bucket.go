package cold

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrNotFound is returned (wrapped) by every backend for a key that does not
// exist; check it with errors.Is.
var ErrNotFound = errors.New("cold: object not found")

// Attributes describe a stored object.
type Attributes struct {
	Size         int64
	LastModified time.Time
	// ETag is the store's entity tag (for S3 and MinIO, without quotes).
	ETag string
	// VersionID is the object version on a versioned bucket; empty otherwise.
	VersionID string
}

// Bucket is the one small interface every object store sits behind. Keys are
// slash-separated paths relative to the bucket's prefix. Implementations are
// safe for concurrent use.
type Bucket interface {
	// Upload stores the object read from r under key, replacing any object
	// of that name. size is the object's length, or -1 if unknown. The
	// object is visible only once Upload returns without error (no partial
	// objects).
	Upload(ctx context.Context, key string, r io.Reader, size int64) (Attributes, error)
	// Get returns the whole object.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// GetRange returns length bytes from off (length -1: to the end).
	GetRange(ctx context.Context, key string, off, length int64) (io.ReadCloser, error)
	// Attributes returns the object's attributes.
	Attributes(ctx context.Context, key string) (Attributes, error)
	// Exists reports whether the object exists.
	Exists(ctx context.Context, key string) (bool, error)
	// Delete removes the object; deleting a missing object is not an error.
	Delete(ctx context.Context, key string) error
	// Iter calls f for every key under prefix (recursively), in lexical
	// order, stopping at f's first error.
	Iter(ctx context.Context, prefix string, f func(key string) error) error
	// Name identifies the bucket in logs and errors: its URL without secrets.
	Name() string
	// Close releases the backend's resources.
	Close() error
}

// MultipartAborter is implemented by backends with multipart uploads (S3,
// MinIO): it aborts incomplete uploads under prefix started before
// olderThan ago, which otherwise keep costing storage, and returns how many.
type MultipartAborter interface {
	AbortIncompleteUploads(ctx context.Context, prefix string, olderThan time.Duration) (int, error)
}
