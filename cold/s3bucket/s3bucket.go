package s3bucket

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/internal/objutil"
)

// Bucket is a cold.Bucket on S3 or an S3-compatible store.
type Bucket struct {
	client *s3.Client
	bucket string
	prefix string
	name   string
	opts   cold.Options
	// closeIdle closes the idle connections of the transport we made (nil
	// when the caller gave one).
	closeIdle func()
}

var (
	_ cold.Bucket              = (*Bucket)(nil)
	_ cold.MultipartAborter    = (*Bucket)(nil)
	_ cold.ConditionalUploader = (*Bucket)(nil)
	_ cold.Locker              = (*Bucket)(nil)
	_ cold.Versioned           = (*Bucket)(nil)
)

// Name returns the bucket's s3:// URL.
func (b *Bucket) Name() string { return b.name }

// Close releases idle connections.
func (b *Bucket) Close() error {
	if b.closeIdle != nil {
		b.closeIdle()
	}
	return nil
}

// Client is the underlying S3 client, for tests and tools that need an
// operation the Bucket interface does not have.
func (b *Bucket) Client() *s3.Client { return b.client }

func (b *Bucket) object(key string) (string, error) {
	if err := objutil.CheckKey(key); err != nil {
		return "", fmt.Errorf("s3bucket %s: %w", b.name, err)
	}
	return b.prefix + key, nil
}

// errf wraps an SDK error with the operation and key, mapping a missing
// object to cold.ErrNotFound while keeping the SDK error in the chain for
// cold.IsRetryable.
func (b *Bucket) errf(op, key string, err error) error {
	if isNotFound(err) {
		return fmt.Errorf("s3bucket %s: %s %s: %w (%w)", b.name, op, key, cold.ErrNotFound, err)
	}
	return fmt.Errorf("s3bucket %s: %s %s: %w", b.name, op, key, err)
}

// isNotFound reports a missing object: NoSuchKey from GET, a bare 404
// ("NotFound") from HEAD, and any 404 whose body was cut short (the SDK
// then fails to decode it and knows only the status). NoSuchBucket is not
// "not found": a vanished bucket is a configuration failure, not an absent
// object.
func isNotFound(err error) bool {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	if errors.As(err, &nsk) || errors.As(err, &nf) {
		return true
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		return api.ErrorCode() == "NoSuchKey" || api.ErrorCode() == "NotFound" || api.ErrorCode() == "NoSuchVersion"
	}
	var status interface{ HTTPStatusCode() int }
	return errors.As(err, &status) && status.HTTPStatusCode() == http.StatusNotFound
}

// Upload stores the object with the transfer manager: one PUT up to
// PartSize bytes, a multipart upload of PartSize parts beyond (aborted if
// it fails). The reader is checked against size, so a wrong size fails
// the upload instead of storing a cut object.
func (b *Bucket) Upload(ctx context.Context, key string, r io.Reader, size int64) (cold.Attributes, error) {
	return b.upload(ctx, key, r, size, func(*s3.PutObjectInput) {})
}

// upload is Upload with set adding fields (Object Lock settings) to the
// request; the transfer manager copies them to a multipart upload's.
func (b *Bucket) upload(ctx context.Context, key string, r io.Reader, size int64, set func(*s3.PutObjectInput)) (cold.Attributes, error) {
	obj, err := b.object(key)
	if err != nil {
		return cold.Attributes{}, err
	}
	if err := ctx.Err(); err != nil {
		return cold.Attributes{}, b.errf("upload", key, err)
	}
	counter := &countingReader{r: r}
	var body io.Reader = counter
	if size >= 0 {
		body = objutil.SizedReader(counter, size, key)
	}
	up := manager.NewUploader(b.client, func(u *manager.Uploader) {
		u.PartSize = b.opts.PartSize
		u.Concurrency = b.opts.PartConcurrency
		u.LeavePartsOnError = false
	})
	in := &s3.PutObjectInput{
		Bucket: aws.String(b.bucket),
		Key:    aws.String(obj),
		Body:   body,
	}
	set(in)
	out, err := up.Upload(ctx, in)
	if err != nil {
		return cold.Attributes{}, b.errf("upload", key, err)
	}
	return cold.Attributes{
		Size:      counter.n,
		ETag:      unquote(aws.ToString(out.ETag)),
		VersionID: aws.ToString(out.VersionID),
	}, nil
}

// UploadIf stores a small object with one conditional PutObject
// (If-None-Match: * or If-Match: "etag"); see cold.ConditionalUploader.
func (b *Bucket) UploadIf(ctx context.Context, key string, r io.Reader, size int64, cond cold.Condition) (cold.Attributes, error) {
	obj, err := b.object(key)
	if err != nil {
		return cold.Attributes{}, err
	}
	if err := cond.Check(); err != nil {
		return cold.Attributes{}, fmt.Errorf("s3bucket %s: upload %s: %w", b.name, key, err)
	}
	data, err := objutil.ReadSmall(r, size, b.opts.PartSize, key)
	if err != nil {
		return cold.Attributes{}, fmt.Errorf("s3bucket %s: %w", b.name, err)
	}
	in := &s3.PutObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(obj),
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data)))}
	if cond.IfAbsent {
		in.IfNoneMatch = aws.String("*")
	} else {
		in.IfMatch = aws.String(`"` + cond.IfMatch + `"`)
	}
	out, err := b.client.PutObject(ctx, in)
	if err != nil {
		if preconditionFailed(err, cond.IfMatch != "") {
			return cold.Attributes{}, fmt.Errorf("s3bucket %s: upload %s if %+v: %w (%w)", b.name, key, cond, cold.ErrPreconditionFailed, err)
		}
		return cold.Attributes{}, b.errf("upload", key, err)
	}
	return cold.Attributes{Size: int64(len(data)), ETag: unquote(aws.ToString(out.ETag)), VersionID: aws.ToString(out.VersionId)}, nil
}

// preconditionFailed reports a conditional write refused: a 412 (whatever
// befell its body), or, for an If-Match, a 404 for a missing object - not
// a missing bucket, and never for If-None-Match, where a 404 can only mean
// the bucket is gone (reporting that as a precondition made a claim retry
// and then blame a concurrent claimer).
func preconditionFailed(err error, ifMatch bool) bool {
	var api smithy.APIError
	hasAPI := errors.As(err, &api)
	if hasAPI && api.ErrorCode() == "PreconditionFailed" {
		return true
	}
	var status interface{ HTTPStatusCode() int }
	if !errors.As(err, &status) {
		return false
	}
	switch status.HTTPStatusCode() {
	case http.StatusPreconditionFailed:
		return true
	case http.StatusNotFound:
		return ifMatch && !(hasAPI && api.ErrorCode() == "NoSuchBucket")
	}
	return false
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// Get returns the whole object.
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
		return nil, fmt.Errorf("s3bucket %s: get %s: %w", b.name, key, err)
	}
	if length == 0 {
		// S3 has no empty range; check the object and the offset.
		return b.emptyRange(ctx, key, versionID, off)
	}
	in := &s3.GetObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(obj), VersionId: version(versionID)}
	switch {
	case length > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", off, off+length-1))
	case off > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", off))
	}
	out, err := b.client.GetObject(ctx, in)
	if err != nil {
		var api smithy.APIError
		if errors.As(err, &api) && api.ErrorCode() == "InvalidRange" {
			// The offset is at or past the end (or the object is empty).
			return b.emptyRange(ctx, key, versionID, off)
		}
		return nil, b.errf("get", key, err)
	}
	if out.ContentLength == nil {
		out.Body.Close()
		return nil, fmt.Errorf("s3bucket %s: get %s: response without Content-Length", b.name, key)
	}
	return objutil.ExactReader(out.Body, *out.ContentLength, "s3bucket "+b.name+": get "+key), nil
}

// emptyRange answers a range that holds no bytes: an empty reader if the
// object exists and off is at most its size.
func (b *Bucket) emptyRange(ctx context.Context, key, versionID string, off int64) (io.ReadCloser, error) {
	attrs, err := b.attributes(ctx, key, versionID)
	if err != nil {
		return nil, err
	}
	if off > attrs.Size {
		return nil, fmt.Errorf("s3bucket %s: get %s: range offset %d is beyond the object's %d bytes", b.name, key, off, attrs.Size)
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
	out, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(obj), VersionId: version(versionID)})
	if err != nil {
		return cold.Attributes{}, b.errf("attributes", key, err)
	}
	return cold.Attributes{
		Size:         aws.ToInt64(out.ContentLength),
		LastModified: aws.ToTime(out.LastModified),
		ETag:         unquote(aws.ToString(out.ETag)),
		VersionID:    aws.ToString(out.VersionId),
		RetainUntil:  aws.ToTime(out.ObjectLockRetainUntilDate),
	}, nil
}

// Exists reports whether the object exists (a HEAD request).
func (b *Bucket) Exists(ctx context.Context, key string) (bool, error) {
	_, err := b.Attributes(ctx, key)
	if errors.Is(err, cold.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Delete removes the object; S3 answers a delete of a missing key with
// success, and so does Delete.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	obj, err := b.object(key)
	if err != nil {
		return err
	}
	_, err = b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(obj)})
	if err != nil && !isNotFound(err) {
		return b.errf("delete", key, err)
	}
	return nil
}

// Iter lists keys with ListObjectsV2, 1000 per request, in S3's byte-wise
// order.
func (b *Bucket) Iter(ctx context.Context, prefix string, f func(key string) error) error {
	if err := objutil.CheckPrefix(prefix); err != nil {
		return fmt.Errorf("s3bucket %s: iter: %w", b.name, err)
	}
	p := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{
		Bucket: aws.String(b.bucket),
		Prefix: aws.String(b.prefix + prefix),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("s3bucket %s: iter %q: %w", b.name, prefix, err)
		}
		for _, o := range page.Contents {
			if err := f(strings.TrimPrefix(aws.ToString(o.Key), b.prefix)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Folders lists the common prefixes under prefix with the delimiter "/"
// (cold.FolderLister).
func (b *Bucket) Folders(ctx context.Context, prefix string, f func(folder string) error) error {
	if err := objutil.CheckFolderPrefix(prefix); err != nil {
		return fmt.Errorf("s3bucket %s: folders: %w", b.name, err)
	}
	p := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{
		Bucket:    aws.String(b.bucket),
		Prefix:    aws.String(b.prefix + prefix),
		Delimiter: aws.String("/"),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("s3bucket %s: folders of %q: %w", b.name, prefix, err)
		}
		for _, cp := range page.CommonPrefixes {
			if err := f(strings.TrimPrefix(aws.ToString(cp.Prefix), b.prefix)); err != nil {
				return err
			}
		}
	}
	return nil
}

// AbortIncompleteUploads aborts the multipart uploads under prefix started
// more than olderThan ago. (A bucket lifecycle rule
// AbortIncompleteMultipartUpload does the same on AWS without requests.)
func (b *Bucket) AbortIncompleteUploads(ctx context.Context, prefix string, olderThan time.Duration) (int, error) {
	if err := objutil.CheckPrefix(prefix); err != nil {
		return 0, fmt.Errorf("s3bucket %s: abort uploads: %w", b.name, err)
	}
	cutoff := time.Now().Add(-olderThan)
	in := &s3.ListMultipartUploadsInput{Bucket: aws.String(b.bucket), Prefix: aws.String(b.prefix + prefix)}
	aborted := 0
	for {
		page, err := b.client.ListMultipartUploads(ctx, in)
		if err != nil {
			return aborted, fmt.Errorf("s3bucket %s: list multipart uploads under %q: %w", b.name, prefix, err)
		}
		for _, u := range page.Uploads {
			if u.Initiated == nil || !u.Initiated.Before(cutoff) {
				continue
			}
			_, err := b.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
				Bucket: aws.String(b.bucket), Key: u.Key, UploadId: u.UploadId,
			})
			var nsu *types.NoSuchUpload
			if err != nil && !errors.As(err, &nsu) {
				return aborted, fmt.Errorf("s3bucket %s: abort multipart upload %s of %s: %w", b.name, aws.ToString(u.UploadId), aws.ToString(u.Key), err)
			}
			if err == nil {
				aborted++
			}
		}
		if !aws.ToBool(page.IsTruncated) {
			return aborted, nil
		}
		in.KeyMarker, in.UploadIdMarker = page.NextKeyMarker, page.NextUploadIdMarker
	}
}

func unquote(etag string) string { return strings.Trim(etag, `"`) }
