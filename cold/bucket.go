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
	// RetainUntil is the version's Object Lock retain-until date (zero:
	// none): as UploadLocked set it, or as Attributes' HEAD answers it -
	// what a restart adopting an object it uploaded records, so retention
	// never deletes it early.
	RetainUntil time.Time
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

// ErrPreconditionFailed is returned (wrapped) by UploadIf when its
// condition does not hold; check it with errors.Is. It is an answer, not
// a failure: IsRetryable says no.
var ErrPreconditionFailed = errors.New("cold: precondition failed")

// Condition is what UploadIf requires of the object's current state. Set
// exactly one field.
type Condition struct {
	// IfAbsent: no object of that key exists (S3's If-None-Match: *).
	IfAbsent bool
	// IfMatch: the object exists with this ETag (S3's If-Match).
	IfMatch string
}

// ConditionalUploader is implemented by every backend: an upload that
// takes effect only if the object is as the caller last saw it, so that
// one writer can own a prefix (compare-and-swap on a small record).
//
// UploadIf stores a small object (at most Options.PartSize bytes, sent in
// one request) if cond holds, atomically with respect to every other
// upload of the key, and returns ErrPreconditionFailed if it does not (an
// IfMatch on a missing object included). When the reply to a conditional
// upload is lost, a retry (the SDK's or the caller's) may report
// ErrPreconditionFailed for an upload that took effect: a caller that sees
// it re-reads the object to learn whether it was its own.
type ConditionalUploader interface {
	UploadIf(ctx context.Context, key string, r io.Reader, size int64, cond Condition) (Attributes, error)
}

// Check reports whether exactly one of the condition's fields is set.
func (c Condition) Check() error {
	if c.IfAbsent == (c.IfMatch != "") {
		return errors.New("cold: a condition needs exactly one of IfAbsent and IfMatch")
	}
	return nil
}
