package cold

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// ErrReadOnly is returned (wrapped) by a bucket opened with ReadOnly for
// every call that would change it.
var ErrReadOnly = errors.New("cold: bucket opened read-only")

// ReadOnly wraps b so that nothing through it can change the bucket:
// Upload and Delete fail with ErrReadOnly before any request, and neither
// the backend's conditional upload nor its multipart aborter is exposed. Tools that only
// read an archive (bucket consume, verify) open it this way, so a bug in
// them cannot alter the history they read, whatever the credentials allow.
func ReadOnly(b Bucket) Bucket { return readOnly{b} }

type readOnly struct{ b Bucket }

func (r readOnly) refuse(op, key string) error {
	return fmt.Errorf("%s: %s %s: %w", r.b.Name(), op, key, ErrReadOnly)
}

func (r readOnly) Upload(_ context.Context, key string, _ io.Reader, _ int64) (Attributes, error) {
	return Attributes{}, r.refuse("upload", key)
}

func (r readOnly) Delete(_ context.Context, key string) error { return r.refuse("delete", key) }

func (r readOnly) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	return r.b.Get(ctx, key)
}

func (r readOnly) GetRange(ctx context.Context, key string, off, length int64) (io.ReadCloser, error) {
	return r.b.GetRange(ctx, key, off, length)
}

func (r readOnly) Attributes(ctx context.Context, key string) (Attributes, error) {
	return r.b.Attributes(ctx, key)
}

func (r readOnly) Exists(ctx context.Context, key string) (bool, error) { return r.b.Exists(ctx, key) }

func (r readOnly) Iter(ctx context.Context, prefix string, f func(key string) error) error {
	return r.b.Iter(ctx, prefix, f)
}

func (r readOnly) Name() string { return r.b.Name() }
func (r readOnly) Close() error { return r.b.Close() }
