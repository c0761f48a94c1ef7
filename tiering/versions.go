package tiering

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"sync/atomic"

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

// versioningSeen is what a Store has learnt of its bucket's versioning,
// for every deletion after: a yes stays true (versioning, once on, is
// never off again), and so does a refusal to say (no
// s3:GetBucketVersioning), which is logged once. A no is asked again by
// each deletion.
type versioningSeen struct {
	keeps  atomic.Bool
	denied atomic.Bool
}

// bucketVersioning asks a bucket, when first needed, whether it keeps
// versions (cold.KeepsVersions): one deletion's answer, shared with the
// Store's others through seen. Credentials that may not ask (no
// s3:GetBucketVersioning, which earlier releases did not need) leave the
// answer unknown.
type bucketVersioning struct {
	b     cold.Bucket
	log   *slog.Logger // may be nil
	seen  *versioningSeen
	asked bool
	yes   bool
	// byKey: deletes by key made on the word that the bucket keeps no
	// versions.
	byKey int
}

// versioning starts a deletion's bucketVersioning; log reports what it
// learns (nil: the Store's logger).
func (s *Store) versioning(log *slog.Logger) *bucketVersioning {
	if log == nil {
		log = s.logger
	}
	return &bucketVersioning{b: s.Bucket, log: log, seen: &s.versioningSeen}
}

func (v *bucketVersioning) keeps(ctx context.Context) (yes, known bool, err error) {
	switch {
	case v.seen.keeps.Load():
		return true, true, nil
	case v.seen.denied.Load():
		return false, false, nil
	case v.asked:
		return v.yes, true, nil
	}
	err = retry(ctx, func() error {
		var err error
		yes, err = cold.KeepsVersions(ctx, v.b)
		return err
	})
	if errors.Is(err, fs.ErrPermission) {
		if v.seen.denied.CompareAndSwap(false, true) && v.log != nil {
			v.log.Warn("the credentials may not read the bucket's versioning status (s3:GetBucketVersioning): objects that may be versions written before versioning was enabled are deleted by key, then what is left of them is listed and deleted by version id, one request more per object",
				"bucket", v.b.Name(), "err", err)
		}
		return false, false, nil
	}
	if err != nil {
		return false, false, err
	}
	v.asked, v.yes = true, yes
	if yes {
		v.seen.keeps.Store(true)
	}
	return yes, true, nil
}

// turnedOn reports whether the bucket, which said it keeps no versions,
// keeps them now: an operator enabled versioning while the deletion ran,
// so its deletes by key may have left null versions behind markers.
// Asked after the last of them, the answer covers them all. (S3 may take
// a while to apply a change of versioning: a delete by key made in that
// while can be missed; on a live partition the next sweep finds it.)
func (v *bucketVersioning) turnedOn(ctx context.Context) (bool, error) {
	if v.byKey == 0 || v.yes {
		return false, nil
	}
	v.asked = false
	yes, _, err := v.keeps(ctx)
	return yes, err
}

// purged is what purge did to one key.
type purged struct {
	deleted int
	// byKey: deleted by key on the word that the bucket keeps no versions
	// (bucketVersioning.turnedOn tells whether that word still held).
	byKey bool
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
// marker, so it is deleted by its id like any other. Where bv cannot tell,
// it is deleted by key and what that leaves of the key (on a bucket that
// keeps versions, the null version behind the new marker) purged by id.
func purge(ctx context.Context, b cold.Bucket, bv *bucketVersioning, key string, vs []cold.ObjectVersion, wait func(cold.ObjectVersion) bool) (purged, error) {
	if len(vs) == 1 && vs[0].Unversioned() {
		keeps, known, err := bv.keeps(ctx)
		if err != nil {
			return purged{}, err
		}
		if !keeps {
			if err := retry(ctx, func() error { return cold.DeleteVersion(ctx, b, key, "") }); err != nil {
				return purged{}, err
			}
			if !known {
				r, err := purgeLeft(ctx, b, key, wait)
				if err == nil && r.deleted == 0 && r.gone() {
					r.deleted = 1 // nothing left: the delete by key removed it
				}
				return r, err
			}
			bv.byKey++
			return purged{deleted: 1, byKey: true}, nil
		}
	}
	return purgeVersions(ctx, b, key, vs, wait)
}

// purgeLeft purges what a delete by key left of key (on a bucket that
// keeps versions: the null version behind the marker it put).
func purgeLeft(ctx context.Context, b cold.Bucket, key string, wait func(cold.ObjectVersion) bool) (purged, error) {
	left, err := versionsOf(ctx, b, key)
	if err != nil {
		return purged{}, err
	}
	return purgeVersions(ctx, b, key, left, wait)
}

// purgeVersions is purge of each of vs by its id.
func purgeVersions(ctx context.Context, b cold.Bucket, key string, vs []cold.ObjectVersion, wait func(cold.ObjectVersion) bool) (purged, error) {
	var r purged
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

// errKeyListed stops versionsOf' listing once past its key.
var errKeyListed = errors.New("tiering: key listed")

// versionsOf lists the versions and delete markers of key alone, newest
// first (the listing by prefix also finds the keys key is a prefix of,
// which sort after it).
func versionsOf(ctx context.Context, b cold.Bucket, key string) ([]cold.ObjectVersion, error) {
	var vs []cold.ObjectVersion
	err := retry(ctx, func() error {
		vs = vs[:0]
		return cold.IterVersions(ctx, b, key, func(v cold.ObjectVersion) error {
			if v.Key != key {
				return errKeyListed
			}
			vs = append(vs, v)
			return nil
		})
	})
	if errors.Is(err, errKeyListed) {
		err = nil
	}
	return vs, err
}
