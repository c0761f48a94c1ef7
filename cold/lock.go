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
// versions (S3, MinIO): reads, deletes and listings of versions, so that an
// object overwritten behind the writer's back is still read as written,
// and a delete removes the versions themselves instead of hiding them
// behind a delete marker (where they would stay, billed, for good).
//
// A versionID "" names the current version, as for Locker.SetLegalHold:
// GetRangeVersion is then GetRange, and DeleteVersion Delete.
type Versioned interface {
	// GetRangeVersion is GetRange of one version of key.
	GetRangeVersion(ctx context.Context, key, versionID string, off, length int64) (io.ReadCloser, error)
	// DeleteVersion removes one version of key, or one delete marker (a
	// missing one is not an error). A version under retention or legal
	// hold is refused with an error wrapping ErrObjectLocked.
	DeleteVersion(ctx context.Context, key, versionID string) error
	// IterVersions calls f for every version and every delete marker of
	// the keys under prefix (a plain string prefix, as for Iter), keys in
	// byte-wise lexical order and each key's entries newest first,
	// stopping at f's first error. Keys whose latest entry is a delete
	// marker, which Iter does not list, are listed too. On a bucket that
	// never kept versions each object is one entry, the latest, whose
	// version id is what the store calls it ("null" on S3).
	IterVersions(ctx context.Context, prefix string, f func(ObjectVersion) error) error
	// KeepsVersions reports whether the bucket's versioning is enabled or
	// suspended: whether a delete by key may leave versions behind a
	// delete marker. Once on, versioning can be suspended but never
	// turned off, so a yes stays true. Credentials that may not ask (S3's
	// s3:GetBucketVersioning) get an error wrapping fs.ErrPermission.
	KeepsVersions(ctx context.Context) (bool, error)
}

// NullVersion is S3's version id of an object or delete marker written
// while the bucket's versioning was off or suspended.
const NullVersion = "null"

// ObjectVersion is one entry of a version listing: a version of an
// object, or a delete marker.
type ObjectVersion struct {
	Key       string
	VersionID string
	// Latest: the key's current entry. A delete marker that is latest
	// makes the key read as missing.
	Latest       bool
	DeleteMarker bool
	LastModified time.Time
	Size         int64
}

// Unversioned reports whether v could be all a bucket that keeps no
// versions lists of an object: the one, latest version, with no version
// id or S3's "null". On such a bucket a delete by key removes the object
// whole, with no version permission (s3:DeleteObjectVersion) needed. But
// an object written before versioning was enabled is listed alike: only
// KeepsVersions tells the two apart.
func (v ObjectVersion) Unversioned() bool {
	return v.Latest && !v.DeleteMarker && (v.VersionID == "" || v.VersionID == NullVersion)
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

// IterVersions lists the versions and delete markers under prefix where b
// keeps versions, and otherwise every key as one entry, latest, with
// version id "" (which DeleteVersion takes for the key).
func IterVersions(ctx context.Context, b Bucket, prefix string, f func(ObjectVersion) error) error {
	if v, ok := b.(Versioned); ok {
		return v.IterVersions(ctx, prefix, f)
	}
	return b.Iter(ctx, prefix, func(key string) error {
		return f(ObjectVersion{Key: key, Latest: true})
	})
}

// KeepsVersions reports whether b is Versioned and its bucket's versioning
// enabled or suspended.
func KeepsVersions(ctx context.Context, b Bucket) (bool, error) {
	v, ok := b.(Versioned)
	if !ok {
		return false, nil
	}
	return v.KeepsVersions(ctx)
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

var _ Versioned = readOnly{}

// A read-only bucket reads versions (an archive tool reads the versions the
// manifest names, as the node does) and refuses to delete them.

func (r readOnly) GetRangeVersion(ctx context.Context, key, versionID string, off, length int64) (io.ReadCloser, error) {
	return GetRangeVersion(ctx, r.b, key, versionID, off, length)
}

func (r readOnly) DeleteVersion(_ context.Context, key, _ string) error {
	return r.refuse("delete", key)
}

func (r readOnly) KeepsVersions(ctx context.Context) (bool, error) {
	return KeepsVersions(ctx, r.b)
}

func (r readOnly) IterVersions(ctx context.Context, prefix string, f func(ObjectVersion) error) error {
	return IterVersions(ctx, r.b, prefix, f)
}
