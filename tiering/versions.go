package tiering

import (
	"context"
	"errors"

	"github.com/tierlog/tierlog/cold"
)

// Deleting objects on a versioned bucket.
//
// On a bucket that keeps versions (every bucket with Object Lock does), a
// delete by key only adds a delete marker: the object's versions stay,
// billed, where no listing of keys shows them. So each deletion that is
// not of one recorded version (remote retention deletes a segment's, see
// deleteSegment) lists the versions of the keys it removes and deletes
// every version and delete marker by its id: the orphan sweep (cleanup.go),
// a topic's deletion (Store.DeleteTopic) and that of superseded partial
// tiles (dropPartials). On a bucket without versions the listing gives
// each object once, and it is deleted by key as before.
//
// A version the bucket refuses to delete (Object Lock; on S3 also
// credentials without s3:DeleteObjectVersion, answered alike) stays; what
// the caller does about it is its own: the sweep tries again after the
// version's date; the others, which nothing retries, report what they
// leave (Store.purgeAll).

// versionsByKey calls f with each key under prefix and its versions and
// delete markers, newest first, one key at a time in lexical order. vs is
// reused after f returns: f copies what it keeps. f may delete what it is
// given: a key is handed to f once the listing has moved past it, so the
// listing's continuation marker (the last entry listed, of the key still
// being gathered) is never one f deleted.
func versionsByKey(ctx context.Context, b cold.Bucket, prefix string, f func(key string, vs []cold.ObjectVersion) error) error {
	var key string
	var vs []cold.ObjectVersion
	err := cold.IterVersions(ctx, b, prefix, func(v cold.ObjectVersion) error {
		if len(vs) > 0 && v.Key != key {
			if err := f(key, vs); err != nil {
				return err
			}
			vs = vs[:0]
		}
		key = v.Key
		vs = append(vs, v)
		return nil
	})
	if err == nil && len(vs) > 0 {
		err = f(key, vs)
	}
	return err
}

// bucketVersioning asks a bucket once, when first needed, whether it
// keeps versions (cold.KeepsVersions): one deletion's answer.
type bucketVersioning struct {
	b     cold.Bucket
	asked bool
	yes   bool
}

func (v *bucketVersioning) keeps(ctx context.Context) (bool, error) {
	if !v.asked {
		err := retry(ctx, func() error {
			var err error
			v.yes, err = cold.KeepsVersions(ctx, v.b)
			return err
		})
		if err != nil {
			return false, err
		}
		v.asked = true
	}
	return v.yes, nil
}

// purged is what purge did to one key.
type purged struct {
	deleted int
	// refused: versions the bucket would not delete (ErrObjectLocked).
	refused []cold.ObjectVersion
	// waiting: versions skipped because their retry date has not come.
	waiting int
}

// gone reports whether nothing of the key is left.
func (r purged) gone() bool { return len(r.refused) == 0 && r.waiting == 0 }

// purge deletes key's versions and delete markers vs (as versionsByKey
// gives them), but those wait says to leave for now (wait may be nil).
//
// Oldest first, the current entry last: the key never reads as an older
// version of itself meanwhile (a topic's record stays the tombstone until
// the end, whatever a crash interrupts). When any version stays, the key
// is left reading as missing, behind its latest delete marker or a new
// one put before the current version is deleted: no listing of keys may
// find what stays - a restore would take a whole orphan segment for one
// to adopt, and verify or a new topic of the same name would find a
// deleted topic's objects. A later purge keeps that marker while the
// versions stay, and deletes it with the last of them.
//
// One unversioned entry on a bucket that keeps no versions (bv says) is
// deleted by key, which asks for no version permission. On a bucket that
// keeps versions such an entry is an object written before versioning was
// enabled, S3's "null" version: a delete by key would only hide it behind a
// marker, so it is deleted by its id like any other.
func purge(ctx context.Context, b cold.Bucket, bv *bucketVersioning, key string, vs []cold.ObjectVersion, wait func(cold.ObjectVersion) bool) (purged, error) {
	var r purged
	if len(vs) == 1 && vs[0].Unversioned() {
		keeps, err := bv.keeps(ctx)
		if err != nil {
			return r, err
		}
		if !keeps {
			if err := retry(ctx, func() error { return cold.DeleteVersion(ctx, b, key, "") }); err != nil {
				return r, err
			}
			r.deleted = 1
			return r, nil
		}
	}
	hideKey := func() error { return retry(ctx, func() error { return b.Delete(ctx, key) }) }
	for i := len(vs) - 1; i >= 0; i-- {
		v, current := vs[i], i == 0
		waits := wait != nil && wait(v)
		if current && v.DeleteMarker && !r.gone() {
			break // it hides what stays
		}
		hidden := false
		if current && !v.DeleteMarker && (waits || !r.gone()) {
			// Something stays: hide the key before its current version
			// goes, so it never reads as an older one.
			if err := hideKey(); err != nil {
				return r, err
			}
			hidden = true
		}
		if waits {
			r.waiting++
			continue
		}
		err := retry(ctx, func() error { return cold.DeleteVersion(ctx, b, key, v.VersionID) })
		switch {
		case errors.Is(err, cold.ErrObjectLocked):
			r.refused = append(r.refused, v)
			if current && !hidden {
				if err := hideKey(); err != nil {
					return r, err
				}
			}
		case err != nil:
			return r, err
		default:
			r.deleted++
		}
	}
	return r, nil
}
