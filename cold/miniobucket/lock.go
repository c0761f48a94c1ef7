package miniobucket

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/minio/minio-go/v7"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/internal/objutil"
)

// LockEnabled reports whether the bucket was created with Object Lock.
func (b *Bucket) LockEnabled(ctx context.Context) (bool, error) {
	enabled, _, _, _, err := b.client.GetObjectLockConfig(ctx, b.bucket)
	if err != nil {
		if answer(err).NoLockConfig() {
			return false, nil
		}
		return false, fmt.Errorf("miniobucket %s: object lock configuration: %w", b.name, wrap(err))
	}
	return enabled == "Enabled", nil
}

// KeepsVersions reports whether the bucket's versioning is enabled or
// suspended; a store without versions that answers NotImplemented keeps
// none.
func (b *Bucket) KeepsVersions(ctx context.Context) (bool, error) {
	c, err := b.client.GetBucketVersioning(ctx, b.bucket)
	switch {
	case err != nil && answer(err).NotImplemented():
		return false, nil
	case err != nil && answer(err).Denied():
		return false, fmt.Errorf("miniobucket %s: versioning: %w (%w)", b.name, fs.ErrPermission, wrap(err))
	case err != nil:
		return false, fmt.Errorf("miniobucket %s: versioning: %w", b.name, wrap(err))
	}
	return c.Enabled() || c.Suspended(), nil
}

// UploadLocked is Upload with a retention and a legal hold on the new
// version. minio-go sends a checksum with every PUT and part (CRC32C by
// default), which Object Lock requires in place of Content-MD5.
func (b *Bucket) UploadLocked(ctx context.Context, key string, r io.Reader, size int64, ret cold.Retention, legalHold bool) (cold.Attributes, error) {
	var opts minio.PutObjectOptions
	if ret.Mode != "" {
		opts.Mode, opts.RetainUntilDate = minio.RetentionMode(ret.Mode), ret.Until
	}
	if legalHold {
		opts.LegalHold = minio.LegalHoldEnabled
	}
	attrs, err := b.upload(ctx, key, r, size, opts)
	if err == nil && ret.Mode != "" {
		attrs.RetainUntil = ret.Until
	}
	return attrs, err
}

// SetLegalHold puts a legal hold on or off one version of key.
func (b *Bucket) SetLegalHold(ctx context.Context, key, versionID string, on bool) error {
	obj, err := b.object(key)
	if err != nil {
		return err
	}
	status := minio.LegalHoldDisabled
	if on {
		status = minio.LegalHoldEnabled
	}
	err = b.client.PutObjectLegalHold(ctx, b.bucket, obj, minio.PutObjectLegalHoldOptions{VersionID: versionID, Status: &status})
	if err != nil {
		return b.errf("set legal hold", key, err)
	}
	return nil
}

// ObjectLock returns one version's retention and legal hold.
func (b *Bucket) ObjectLock(ctx context.Context, key, versionID string) (cold.Retention, bool, error) {
	obj, err := b.object(key)
	if err != nil {
		return cold.Retention{}, false, err
	}
	var ret cold.Retention
	mode, until, err := b.client.GetObjectRetention(ctx, b.bucket, obj, versionID)
	if err != nil && !answer(err).NoLockConfig() {
		return cold.Retention{}, false, b.errf("object retention", key, err)
	}
	if mode != nil && until != nil {
		ret = cold.Retention{Mode: cold.LockMode(*mode), Until: *until}
	}
	hold, err := b.client.GetObjectLegalHold(ctx, b.bucket, obj, minio.GetObjectLegalHoldOptions{VersionID: versionID})
	if err != nil && !answer(err).NoLockConfig() {
		return cold.Retention{}, false, b.errf("object legal hold", key, err)
	}
	return ret, hold != nil && *hold == minio.LegalHoldEnabled, nil
}

// answer is the S3 error answer err carries (zero if none).
func answer(err error) objutil.Answer {
	var resp minio.ErrorResponse
	if !errors.As(err, &resp) {
		return objutil.Answer{}
	}
	return objutil.Answer{Code: resp.Code, Message: resp.Message, Status: resp.StatusCode}
}

// DeleteVersion removes one version of key; a version under retention or
// legal hold is refused with cold.ErrObjectLocked.
//
// The "null" version goes by a multi-object delete: MinIO, on a bucket
// whose versioning is enabled, answers a plain DELETE ?versionId=null of
// a null delete marker (one put while versioning was suspended) by
// writing the marker anew, so it would never go; DeleteObjects removes
// it, as S3 does either way.
func (b *Bucket) DeleteVersion(ctx context.Context, key, versionID string) error {
	obj, err := b.object(key)
	if err != nil {
		return err
	}
	if versionID == cold.NullVersion {
		err = b.removeNull(ctx, obj)
	} else {
		err = b.client.RemoveObject(ctx, b.bucket, obj, minio.RemoveObjectOptions{VersionID: versionID})
	}
	switch {
	case err == nil || isNotFound(err):
		return nil
	case answer(err).LockRefused():
		return fmt.Errorf("miniobucket %s: delete %s version %s: %w (%w)", b.name, key, versionID, cold.ErrObjectLocked, wrap(err))
	}
	return b.errf("delete", key, err)
}

// removeNull deletes obj's null version with a DeleteObjects request of
// one entry (see DeleteVersion), or a plain DELETE where the store has no
// multi-object delete (answers NotImplemented).
func (b *Bucket) removeNull(ctx context.Context, obj string) error {
	one := make(chan minio.ObjectInfo, 1)
	one <- minio.ObjectInfo{Key: obj, VersionID: cold.NullVersion}
	close(one)
	var err error
	for e := range b.client.RemoveObjects(ctx, b.bucket, one, minio.RemoveObjectsOptions{}) {
		if err == nil {
			err = e.Err
		}
	}
	if answer(err).NotImplemented() {
		err = b.client.RemoveObject(ctx, b.bucket, obj, minio.RemoveObjectOptions{VersionID: cold.NullVersion})
	}
	return err
}

// IterVersions lists versions and delete markers with ListObjectVersions
// (see cold.Versioned). A server without versions that answers
// NotImplemented has its keys listed instead, each as the one version of
// its object.
func (b *Bucket) IterVersions(ctx context.Context, prefix string, f func(cold.ObjectVersion) error) error {
	if err := objutil.CheckPrefix(prefix); err != nil {
		return fmt.Errorf("miniobucket %s: iter versions: %w", b.name, err)
	}
	first := true
	for o := range b.client.ListObjectsIter(ctx, b.bucket, minio.ListObjectsOptions{Prefix: b.prefix + prefix, Recursive: true, WithVersions: true}) {
		if o.Err != nil && first && answer(o.Err).NotImplemented() {
			return b.Iter(ctx, prefix, func(key string) error { return f(cold.ObjectVersion{Key: key, Latest: true}) })
		}
		first = false
		if o.Err != nil {
			return fmt.Errorf("miniobucket %s: iter versions %q: %w", b.name, prefix, wrap(o.Err))
		}
		v := cold.ObjectVersion{Key: strings.TrimPrefix(o.Key, b.prefix), VersionID: o.VersionID, Latest: o.IsLatest,
			DeleteMarker: o.IsDeleteMarker, LastModified: o.LastModified, Size: o.Size}
		if err := f(v); err != nil {
			return err
		}
	}
	return nil
}
