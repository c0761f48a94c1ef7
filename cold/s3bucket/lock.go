package s3bucket

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/internal/objutil"
)

// LockEnabled reports whether the bucket was created with Object Lock.
func (b *Bucket) LockEnabled(ctx context.Context) (bool, error) {
	out, err := b.client.GetObjectLockConfiguration(ctx, &s3.GetObjectLockConfigurationInput{Bucket: aws.String(b.bucket)})
	if err != nil {
		if answer(err).NoLockConfig() {
			return false, nil
		}
		return false, fmt.Errorf("s3bucket %s: object lock configuration: %w", b.name, err)
	}
	return out.ObjectLockConfiguration != nil && out.ObjectLockConfiguration.ObjectLockEnabled == types.ObjectLockEnabledEnabled, nil
}

// KeepsVersions reports whether the bucket's versioning is enabled or
// suspended; a store without versions that answers NotImplemented keeps
// none.
func (b *Bucket) KeepsVersions(ctx context.Context) (bool, error) {
	out, err := b.client.GetBucketVersioning(ctx, &s3.GetBucketVersioningInput{Bucket: aws.String(b.bucket)})
	switch {
	case err != nil && answer(err).NotImplemented():
		return false, nil
	case err != nil && answer(err).Denied():
		return false, fmt.Errorf("s3bucket %s: versioning: %w (%w)", b.name, fs.ErrPermission, err)
	case err != nil:
		return false, fmt.Errorf("s3bucket %s: versioning: %w", b.name, err)
	}
	return out.Status == types.BucketVersioningStatusEnabled || out.Status == types.BucketVersioningStatusSuspended, nil
}

// UploadLocked is Upload with a retention and a legal hold on the new
// version. S3 requires Content-MD5 or a checksum on such a PUT: the SDK
// sends a CRC32 with every PutObject and UploadPart by default
// (RequestChecksumCalculation WhenSupported), which satisfies it.
func (b *Bucket) UploadLocked(ctx context.Context, key string, r io.Reader, size int64, ret cold.Retention, legalHold bool) (cold.Attributes, error) {
	attrs, err := b.upload(ctx, key, r, size, func(in *s3.PutObjectInput) {
		if ret.Mode != "" {
			in.ObjectLockMode = types.ObjectLockMode(ret.Mode)
			in.ObjectLockRetainUntilDate = aws.Time(ret.Until)
		}
		if legalHold {
			in.ObjectLockLegalHoldStatus = types.ObjectLockLegalHoldStatusOn
		}
	})
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
	status := types.ObjectLockLegalHoldStatusOff
	if on {
		status = types.ObjectLockLegalHoldStatusOn
	}
	in := &s3.PutObjectLegalHoldInput{Bucket: aws.String(b.bucket), Key: aws.String(obj), VersionId: version(versionID),
		LegalHold: &types.ObjectLockLegalHold{Status: status}}
	if _, err := b.client.PutObjectLegalHold(ctx, in); err != nil {
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
	rout, err := b.client.GetObjectRetention(ctx, &s3.GetObjectRetentionInput{Bucket: aws.String(b.bucket), Key: aws.String(obj), VersionId: version(versionID)})
	switch {
	case err != nil && !answer(err).NoLockConfig():
		return cold.Retention{}, false, b.errf("object retention", key, err)
	case err == nil && rout.Retention != nil && rout.Retention.RetainUntilDate != nil:
		ret = cold.Retention{Mode: cold.LockMode(rout.Retention.Mode), Until: *rout.Retention.RetainUntilDate}
	}
	hout, err := b.client.GetObjectLegalHold(ctx, &s3.GetObjectLegalHoldInput{Bucket: aws.String(b.bucket), Key: aws.String(obj), VersionId: version(versionID)})
	if err != nil && !answer(err).NoLockConfig() {
		return cold.Retention{}, false, b.errf("object legal hold", key, err)
	}
	hold := err == nil && hout.LegalHold != nil && hout.LegalHold.Status == types.ObjectLockLegalHoldStatusOn
	return ret, hold, nil
}

// answer is the S3 error answer err carries (zero if none).
func answer(err error) objutil.Answer {
	var a objutil.Answer
	var api smithy.APIError
	if errors.As(err, &api) {
		a.Code, a.Message = api.ErrorCode(), api.ErrorMessage()
	}
	var status interface{ HTTPStatusCode() int }
	if errors.As(err, &status) {
		a.Status = status.HTTPStatusCode()
	}
	return a
}

// version is a request's version id: none (the current version) for "".
func version(id string) *string {
	if id == "" {
		return nil
	}
	return aws.String(id)
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
		err = b.deleteNull(ctx, obj)
	} else {
		_, err = b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(obj), VersionId: version(versionID)})
	}
	switch {
	case err == nil || isNotFound(err):
		return nil
	case answer(err).LockRefused():
		return fmt.Errorf("s3bucket %s: delete %s version %s: %w (%w)", b.name, key, versionID, cold.ErrObjectLocked, err)
	}
	return b.errf("delete", key, err)
}

// deleteNull deletes obj's null version with a DeleteObjects request of
// one entry (see DeleteVersion), or a plain DELETE where the store has no
// multi-object delete (answers NotImplemented). Its refusal comes in the
// answer's body, returned as the error a DeleteObject refused alike would
// be.
func (b *Bucket) deleteNull(ctx context.Context, obj string) error {
	out, err := b.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{
		Bucket: aws.String(b.bucket),
		Delete: &types.Delete{Objects: []types.ObjectIdentifier{{Key: aws.String(obj), VersionId: aws.String(cold.NullVersion)}}, Quiet: aws.Bool(true)},
	})
	if answer(err).NotImplemented() {
		_, err = b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(obj), VersionId: aws.String(cold.NullVersion)})
		return err
	}
	if err != nil {
		return err
	}
	for _, e := range out.Errors {
		if code := aws.ToString(e.Code); code != "NoSuchKey" && code != "NoSuchVersion" {
			return &smithy.GenericAPIError{Code: code, Message: aws.ToString(e.Message)}
		}
	}
	return nil
}

// IterVersions lists versions and delete markers with ListObjectVersions,
// 1000 per request (see cold.Versioned). A store without versions that
// answers NotImplemented has its keys listed instead, each as the one
// version of its object.
func (b *Bucket) IterVersions(ctx context.Context, prefix string, f func(cold.ObjectVersion) error) error {
	if err := objutil.CheckPrefix(prefix); err != nil {
		return fmt.Errorf("s3bucket %s: iter versions: %w", b.name, err)
	}
	in := &s3.ListObjectVersionsInput{Bucket: aws.String(b.bucket), Prefix: aws.String(b.prefix + prefix)}
	for first := true; ; first = false {
		page, err := b.client.ListObjectVersions(ctx, in)
		if err != nil && first && answer(err).NotImplemented() {
			return b.Iter(ctx, prefix, func(key string) error { return f(cold.ObjectVersion{Key: key, Latest: true}) })
		}
		if err != nil {
			return fmt.Errorf("s3bucket %s: iter versions %q: %w", b.name, prefix, err)
		}
		for _, v := range b.pageVersions(page) {
			if err := f(v); err != nil {
				return err
			}
		}
		if !aws.ToBool(page.IsTruncated) {
			return nil
		}
		in.KeyMarker, in.VersionIdMarker = page.NextKeyMarker, page.NextVersionIdMarker
	}
}

// pageVersions merges a page's versions and delete markers, which the
// SDK returns in two lists, back into the listing's order: by key, then
// the latest first, then newest first.
func (b *Bucket) pageVersions(page *s3.ListObjectVersionsOutput) []cold.ObjectVersion {
	out := make([]cold.ObjectVersion, 0, len(page.Versions)+len(page.DeleteMarkers))
	for _, v := range page.Versions {
		out = append(out, cold.ObjectVersion{Key: strings.TrimPrefix(aws.ToString(v.Key), b.prefix), VersionID: aws.ToString(v.VersionId),
			Latest: aws.ToBool(v.IsLatest), LastModified: aws.ToTime(v.LastModified), Size: aws.ToInt64(v.Size)})
	}
	for _, m := range page.DeleteMarkers {
		out = append(out, cold.ObjectVersion{Key: strings.TrimPrefix(aws.ToString(m.Key), b.prefix), VersionID: aws.ToString(m.VersionId),
			Latest: aws.ToBool(m.IsLatest), DeleteMarker: true, LastModified: aws.ToTime(m.LastModified)})
	}
	slices.SortStableFunc(out, func(x, y cold.ObjectVersion) int {
		if c := strings.Compare(x.Key, y.Key); c != 0 {
			return c
		}
		if x.Latest != y.Latest {
			if x.Latest {
				return -1
			}
			return 1
		}
		return y.LastModified.Compare(x.LastModified)
	})
	return out
}
