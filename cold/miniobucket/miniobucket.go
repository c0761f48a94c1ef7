package miniobucket

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/internal/objutil"
)

// Bucket is a cold.Bucket on a MinIO server.
type Bucket struct {
	client    *minio.Client
	core      *minio.Core
	bucket    string
	prefix    string
	name      string
	opts      cold.Options
	closeIdle func()
	// sawS3 is set by the first reply with an S3 request ID; the open
	// check refuses an endpoint that never sent one.
	sawS3 atomic.Bool
}

var (
	_ cold.Bucket              = (*Bucket)(nil)
	_ cold.MultipartAborter    = (*Bucket)(nil)
	_ cold.ConditionalUploader = (*Bucket)(nil)
	_ cold.Locker              = (*Bucket)(nil)
	_ cold.Versioned           = (*Bucket)(nil)
)

// Name returns the bucket's minio:// URL.
func (b *Bucket) Name() string { return b.name }

// Close releases idle connections.
func (b *Bucket) Close() error {
	if b.closeIdle != nil {
		b.closeIdle()
	}
	return nil
}

// Client is the underlying minio-go client, for tests and tools.
func (b *Bucket) Client() *minio.Client { return b.client }

// ResponseError is a minio.ErrorResponse made visible to cold.IsRetryable
// (which looks for HTTPStatusCode and ErrorCode methods); errors.As still
// finds the minio.ErrorResponse through Unwrap.
type ResponseError struct {
	Resp minio.ErrorResponse
}

func (e *ResponseError) Error() string       { return e.Resp.Error() }
func (e *ResponseError) Unwrap() error       { return e.Resp }
func (e *ResponseError) HTTPStatusCode() int { return e.Resp.StatusCode }
func (e *ResponseError) ErrorCode() string   { return e.Resp.Code }

// wrap puts a minio.ErrorResponse in a ResponseError; other errors pass.
func wrap(err error) error {
	var resp minio.ErrorResponse
	if errors.As(err, &resp) {
		var already *ResponseError
		if errors.As(err, &already) {
			return err
		}
		return &ResponseError{Resp: resp}
	}
	return err
}

func isNotFound(err error) bool {
	var resp minio.ErrorResponse
	return errors.As(err, &resp) && (resp.Code == "NoSuchKey" || resp.Code == "NotFound" || resp.Code == "NoSuchVersion")
}

func (b *Bucket) object(key string) (string, error) {
	if err := objutil.CheckKey(key); err != nil {
		return "", fmt.Errorf("miniobucket %s: %w", b.name, err)
	}
	return b.prefix + key, nil
}

// errf wraps a minio-go error with the operation and key, mapping a
// missing object to cold.ErrNotFound.
func (b *Bucket) errf(op, key string, err error) error {
	if isNotFound(err) {
		return fmt.Errorf("miniobucket %s: %s %s: %w (%w)", b.name, op, key, cold.ErrNotFound, wrap(err))
	}
	return fmt.Errorf("miniobucket %s: %s %s: %w", b.name, op, key, wrap(err))
}

// Upload stores the object: one PUT up to PartSize bytes, a multipart
// upload of PartSize parts beyond. An object of unknown size is read up to
// PartSize first, so a small one still goes up in one PUT (minio-go would
// start a multipart upload for any object of unknown size).
func (b *Bucket) Upload(ctx context.Context, key string, r io.Reader, size int64) (cold.Attributes, error) {
	return b.upload(ctx, key, r, size, minio.PutObjectOptions{})
}

// upload is Upload with opts (Object Lock settings) added to the PUT.
func (b *Bucket) upload(ctx context.Context, key string, r io.Reader, size int64, opts minio.PutObjectOptions) (cold.Attributes, error) {
	obj, err := b.object(key)
	if err != nil {
		return cold.Attributes{}, err
	}
	if err := ctx.Err(); err != nil {
		return cold.Attributes{}, b.errf("upload", key, err)
	}
	opts.PartSize = uint64(b.opts.PartSize)
	opts.NumThreads = uint(b.opts.PartConcurrency)
	body := objutil.ContextReader(ctx, r)
	if size >= 0 {
		body = objutil.SizedReader(body, size, key)
	} else {
		var head bytes.Buffer
		n, err := io.CopyN(&head, body, b.opts.PartSize+1)
		switch {
		case err == io.EOF:
			body, size = &head, n
		case err != nil:
			return cold.Attributes{}, b.errf("upload", key, err)
		default:
			body = io.MultiReader(&head, body)
			opts.ConcurrentStreamParts = opts.NumThreads > 1
		}
	}
	info, err := b.client.PutObject(ctx, b.bucket, obj, body, size, opts)
	if err != nil {
		return cold.Attributes{}, b.errf("upload", key, err)
	}
	return cold.Attributes{
		Size:         info.Size,
		LastModified: info.LastModified,
		ETag:         unquote(info.ETag),
		VersionID:    info.VersionID,
	}, nil
}

// UploadIf stores a small object with one conditional PUT (If-None-Match:
// * or If-Match: "etag"); see cold.ConditionalUploader.
func (b *Bucket) UploadIf(ctx context.Context, key string, r io.Reader, size int64, cond cold.Condition) (cold.Attributes, error) {
	obj, err := b.object(key)
	if err != nil {
		return cold.Attributes{}, err
	}
	if err := cond.Check(); err != nil {
		return cold.Attributes{}, fmt.Errorf("miniobucket %s: upload %s: %w", b.name, key, err)
	}
	data, err := objutil.ReadSmall(r, size, b.opts.PartSize, key)
	if err != nil {
		return cold.Attributes{}, fmt.Errorf("miniobucket %s: %w", b.name, err)
	}
	opts := minio.PutObjectOptions{DisableMultipart: true}
	if cond.IfAbsent {
		opts.SetMatchETagExcept("*")
	} else {
		opts.SetMatchETag(cond.IfMatch)
	}
	// Not a Seeker, so minio-go makes one attempt: its retry seeks the
	// body back while the failed attempt's transport may still be reading
	// it (a data race), and a retried conditional upload can be refused
	// for its own first attempt anyway. The caller retries, with a new
	// reader.
	body := struct{ io.Reader }{bytes.NewReader(data)}
	info, err := b.client.PutObject(ctx, b.bucket, obj, body, int64(len(data)), opts)
	if err != nil {
		var resp minio.ErrorResponse
		// A 404 is a refused precondition only for an If-Match on a
		// missing object; for If-None-Match, or NoSuchBucket, the bucket
		// is gone and the error says so.
		if errors.As(err, &resp) && (resp.StatusCode == http.StatusPreconditionFailed || resp.Code == "PreconditionFailed" ||
			(resp.StatusCode == http.StatusNotFound && cond.IfMatch != "" && resp.Code != "NoSuchBucket")) {
			return cold.Attributes{}, fmt.Errorf("miniobucket %s: upload %s if %+v: %w (%w)", b.name, key, cond, cold.ErrPreconditionFailed, wrap(err))
		}
		return cold.Attributes{}, b.errf("upload", key, err)
	}
	return cold.Attributes{Size: info.Size, LastModified: info.LastModified, ETag: unquote(info.ETag), VersionID: info.VersionID}, nil
}

// Get returns the whole object, verifying its full-object checksum where
// the server has one.
func (b *Bucket) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	return b.GetRange(ctx, key, 0, -1)
}

// GetRange returns length bytes from off with one ranged GET. The body is
// checked against the announced length: a truncated response fails with an
// error wrapping io.ErrUnexpectedEOF.
func (b *Bucket) GetRange(ctx context.Context, key string, off, length int64) (io.ReadCloser, error) {
	return b.getRange(ctx, key, "", off, length)
}

// GetRangeVersion is GetRange of one version of key; see cold.Versioned.
func (b *Bucket) GetRangeVersion(ctx context.Context, key, versionID string, off, length int64) (io.ReadCloser, error) {
	return b.getRange(ctx, key, versionID, off, length)
}

func (b *Bucket) getRange(ctx context.Context, key, versionID string, off, length int64) (io.ReadCloser, error) {
	obj, err := b.object(key)
	if err != nil {
		return nil, err
	}
	if err := objutil.CheckRange(off, length); err != nil {
		return nil, fmt.Errorf("miniobucket %s: get %s: %w", b.name, key, err)
	}
	if length == 0 {
		return b.emptyRange(ctx, key, versionID, off)
	}
	opts := minio.GetObjectOptions{VersionID: versionID}
	switch {
	case length > 0:
		err = opts.SetRange(off, off+length-1)
	case off > 0:
		err = opts.SetRange(off, 0)
	default:
		opts.Checksum = true
	}
	if err != nil {
		return nil, fmt.Errorf("miniobucket %s: get %s: %w", b.name, key, err)
	}
	body, info, _, err := b.core.GetObject(ctx, b.bucket, obj, opts)
	if err != nil {
		var resp minio.ErrorResponse
		if errors.As(err, &resp) && resp.Code == "InvalidRange" {
			return b.emptyRange(ctx, key, versionID, off)
		}
		return nil, b.errf("get", key, err)
	}
	return objutil.ExactReader(body, info.Size, "miniobucket "+b.name+": get "+key), nil
}

// emptyRange answers a range that holds no bytes: an empty reader if the
// object exists and off is at most its size.
func (b *Bucket) emptyRange(ctx context.Context, key, versionID string, off int64) (io.ReadCloser, error) {
	attrs, err := b.attributes(ctx, key, versionID)
	if err != nil {
		return nil, err
	}
	if off > attrs.Size {
		return nil, fmt.Errorf("miniobucket %s: get %s: range offset %d is beyond the object's %d bytes", b.name, key, off, attrs.Size)
	}
	return io.NopCloser(bytes.NewReader(nil)), nil
}

// Attributes returns the object's attributes from a HEAD request.
func (b *Bucket) Attributes(ctx context.Context, key string) (cold.Attributes, error) {
	return b.attributes(ctx, key, "")
}

func (b *Bucket) attributes(ctx context.Context, key, versionID string) (cold.Attributes, error) {
	obj, err := b.object(key)
	if err != nil {
		return cold.Attributes{}, err
	}
	info, err := b.client.StatObject(ctx, b.bucket, obj, minio.StatObjectOptions{VersionID: versionID})
	if err != nil {
		return cold.Attributes{}, b.errf("attributes", key, err)
	}
	a := cold.Attributes{
		Size:         info.Size,
		LastModified: info.LastModified,
		ETag:         unquote(info.ETag),
		VersionID:    info.VersionID,
	}
	// The HEAD answer carries the version's retention (S3 sends it to a
	// caller allowed to read it); minio-go keeps it only as a header.
	if v := info.Metadata.Get("X-Amz-Object-Lock-Retain-Until-Date"); v != "" {
		if a.RetainUntil, err = time.Parse(time.RFC3339, v); err != nil {
			return cold.Attributes{}, b.errf("attributes", key, fmt.Errorf("retain-until date %q: %w", v, err))
		}
	}
	return a, nil
}

// Exists reports whether the object exists (a HEAD request).
func (b *Bucket) Exists(ctx context.Context, key string) (bool, error) {
	_, err := b.Attributes(ctx, key)
	if errors.Is(err, cold.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Delete removes the object; deleting a missing key succeeds.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	obj, err := b.object(key)
	if err != nil {
		return err
	}
	if err := b.client.RemoveObject(ctx, b.bucket, obj, minio.RemoveObjectOptions{}); err != nil && !isNotFound(err) {
		return b.errf("delete", key, err)
	}
	return nil
}

// Iter lists keys with ListObjectsV2 in the server's byte-wise order.
func (b *Bucket) Iter(ctx context.Context, prefix string, f func(key string) error) error {
	if err := objutil.CheckPrefix(prefix); err != nil {
		return fmt.Errorf("miniobucket %s: iter: %w", b.name, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := b.client.ListObjects(ctx, b.bucket, minio.ListObjectsOptions{Prefix: b.prefix + prefix, Recursive: true})
	// Drain on the way out so the listing goroutine has ended when Iter
	// returns (cancel makes that quick).
	defer func() {
		cancel()
		for range ch {
		}
	}()
	for o := range ch {
		if o.Err != nil {
			return fmt.Errorf("miniobucket %s: iter %q: %w", b.name, prefix, wrap(o.Err))
		}
		if err := f(strings.TrimPrefix(o.Key, b.prefix)); err != nil {
			return err
		}
	}
	return nil
}

// Folders lists the common prefixes under prefix (a listing that is not
// recursive: MinIO's delimiter "/"), as cold.FolderLister.
func (b *Bucket) Folders(ctx context.Context, prefix string, f func(folder string) error) error {
	if err := objutil.CheckFolderPrefix(prefix); err != nil {
		return fmt.Errorf("miniobucket %s: folders: %w", b.name, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := b.client.ListObjects(ctx, b.bucket, minio.ListObjectsOptions{Prefix: b.prefix + prefix})
	defer func() {
		cancel()
		for range ch {
		}
	}()
	for o := range ch {
		if o.Err != nil {
			return fmt.Errorf("miniobucket %s: folders of %q: %w", b.name, prefix, wrap(o.Err))
		}
		if strings.HasSuffix(o.Key, "/") {
			if err := f(strings.TrimPrefix(o.Key, b.prefix)); err != nil {
				return err
			}
		}
	}
	return nil
}

// AbortIncompleteUploads aborts multipart uploads under prefix started
// more than olderThan ago. MinIO lists uploads only for an exact object
// key, so prefix should be the key of the upload to abort.
func (b *Bucket) AbortIncompleteUploads(ctx context.Context, prefix string, olderThan time.Duration) (int, error) {
	if err := objutil.CheckPrefix(prefix); err != nil {
		return 0, fmt.Errorf("miniobucket %s: abort uploads: %w", b.name, err)
	}
	cutoff := time.Now().Add(-olderThan)
	keyMarker, uploadIDMarker := "", ""
	aborted := 0
	for {
		res, err := b.core.ListMultipartUploads(ctx, b.bucket, b.prefix+prefix, keyMarker, uploadIDMarker, "", 1000)
		if err != nil {
			return aborted, fmt.Errorf("miniobucket %s: list multipart uploads under %q: %w", b.name, prefix, wrap(err))
		}
		for _, u := range res.Uploads {
			if !u.Initiated.Before(cutoff) {
				continue
			}
			err := b.core.AbortMultipartUpload(ctx, b.bucket, u.Key, u.UploadID)
			var resp minio.ErrorResponse
			if err != nil && !(errors.As(err, &resp) && resp.Code == "NoSuchUpload") {
				return aborted, fmt.Errorf("miniobucket %s: abort multipart upload %s of %s: %w", b.name, u.UploadID, u.Key, wrap(err))
			}
			if err == nil {
				aborted++
			}
		}
		if !res.IsTruncated {
			return aborted, nil
		}
		keyMarker, uploadIDMarker = res.NextKeyMarker, res.NextUploadIDMarker
	}
}

func unquote(etag string) string { return strings.Trim(etag, `"`) }
