package cold

import (
	"context"
	"errors"
	"io"
	"time"
)

// WORM storage: S3 Object Lock and object versions. Both are optional
// interfaces beside Bucket, implemented by the S3 and MinIO backends; the
// file backend has neither (a directory cannot promise write-once).

// LockMode is an S3 Object Lock retention mode.
type LockMode string

const (
	// LockGovernance: the version cannot be deleted or its retention
	// shortened, except by a user with s3:BypassGovernanceRetention who
	// asks to bypass it.
	LockGovernance LockMode = "GOVERNANCE"
	// LockCompliance: nobody, the root account included, can delete the
	// version or shorten its retention before the date.
	LockCompliance LockMode = "COMPLIANCE"
)

// Retention is an object version's Object Lock retention: it cannot be
// deleted before Until. The zero value is no retention.
type Retention struct {
	Mode  LockMode
	Until time.Time
}

// ErrObjectLocked is returned (wrapped) when the store refuses to delete
// an object version because of its retention or legal hold (or, on S3,
// because the credentials may not delete it: the store answers both with
// AccessDenied). Check it with errors.Is; IsRetryable says no - the
// caller retries after the retention date.
var ErrObjectLocked = errors.New("cold: object version is locked")

// Locker is implemented by backends with S3 Object Lock (S3, MinIO).
type Locker interface {
	// LockEnabled reports whether the bucket has Object Lock enabled
	// (which can only be chosen when the bucket is created).
	LockEnabled(ctx context.Context) (bool, error)
	// UploadLocked is Upload with a retention (zero: none) and a legal
	// hold on the new version. The returned Attributes carry the version
	// id and RetainUntil.
	UploadLocked(ctx context.Context, key string, r io.Reader, size int64, ret Retention, legalHold bool) (Attributes, error)
	// SetLegalHold puts a legal hold on (or takes it off) one version of
	// key ("": the current version).
	SetLegalHold(ctx context.Context, key, versionID string, on bool) error
	// ObjectLock returns a version's retention and legal hold.
	ObjectLock(ctx context.Context, key, versionID string) (ret Retention, legalHold bool, err error)
}

// Versioned is implemented by backends whose buckets may keep object
// versions (S3, MinIO): reads and deletes of one version, so that an object
// overwritten behind the writer's back is still read as written, and a
// delete removes the version itself instead of hiding it behind a delete
// marker.
//
// A versionID "" names the current version, as for Locker.SetLegalHold:
// GetRangeVersion is then GetRange, and DeleteVersion Delete.
type Versioned interface {
	// GetRangeVersion is GetRange of one version of key.
	GetRangeVersion(ctx context.Context, key, versionID string, off, length int64) (io.ReadCloser, error)
	// DeleteVersion removes one version of key (a missing one is not an
	// error). A version under retention or legal hold is refused with an
	// error wrapping ErrObjectLocked.
	DeleteVersion(ctx context.Context, key, versionID string) error
}

// GetRangeVersion reads length bytes from off of versionID of key, or of
// the current version if versionID is "" or b keeps no versions (a wrapper
// that hides Versioned reads the current version, which is the written one
// unless someone overwrote it).
func GetRangeVersion(ctx context.Context, b Bucket, key, versionID string, off, length int64) (io.ReadCloser, error) {
	if v, ok := b.(Versioned); ok && versionID != "" {
		return v.GetRangeVersion(ctx, key, versionID, off, length)
	}
	return b.GetRange(ctx, key, off, length)
}

// DeleteVersion deletes versionID of key where b keeps versions and a
// version is named, and the key otherwise.
func DeleteVersion(ctx context.Context, b Bucket, key, versionID string) error {
	if v, ok := b.(Versioned); ok && versionID != "" {
		return v.DeleteVersion(ctx, key, versionID)
	}
	return b.Delete(ctx, key)
}

// LockEnabled reports whether b can lock objects: a Locker whose bucket has
// Object Lock enabled.
func LockEnabled(ctx context.Context, b Bucket) (bool, error) {
	l, ok := b.(Locker)
	if !ok {
		return false, nil
	}
	return l.LockEnabled(ctx)
}

// A read-only bucket reads versions (an archive tool reads the versions the
// manifest names, as the node does) and refuses to delete them.

func (r readOnly) GetRangeVersion(ctx context.Context, key, versionID string, off, length int64) (io.ReadCloser, error) {
	return GetRangeVersion(ctx, r.b, key, versionID, off, length)
}

func (r readOnly) DeleteVersion(_ context.Context, key, _ string) error {
	return r.refuse("delete", key)
}
