package tiering

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold"
)

// WORM retention with S3 Object Lock.
//
// A topic with remote.object.lock.mode uploads every segment object with
// a retention (the mode, retain until upload time + the topic's days), and
// with remote.object.lock.legal.hold with a legal hold; the bucket then
// refuses to delete or overwrite that version, whoever asks. Manifest
// copies are not locked: they are rewritten and the old ones deleted, and
// every segment they name is (the manifest records its version id and
// retain-until date, and the local manifest is the source of truth).
//
// Remote retention never deletes a locked object early. A segment past
// retention whose recorded retain-until date is still ahead, or whose
// topic holds its objects, is not started: it stays copy_finished and
// keeps serving reads, and the log start does not move past it until the
// date. That is the safe side: starting the deletion would raise the log
// start (which never moves back) for bytes that must stay in the bucket
// anyway, and leave a delete_started entry retried for as long as the
// lock lasts. A delete refused all the same (a lock the manifest does not
// know of: the bucket's default retention, a hold set by hand, a clock
// ahead of the store's) leaves the segment delete_started - the log start
// has already moved, and it never moves back - and is retried after the
// version's retain-until date (asked of the bucket once), or after
// DaemonOptions.LockRetry if a legal hold or nothing says when.

// ObjectLock is a topic's WORM settings (remote.object.lock.*). The zero
// value locks nothing.
type ObjectLock struct {
	// Mode is cold.LockGovernance or cold.LockCompliance; "" uploads
	// without retention.
	Mode cold.LockMode
	// Period is how long after its upload each object is retained
	// (remote.object.lock.days; tests use seconds).
	Period time.Duration
	// LegalHold puts a legal hold on every object of the topic.
	LegalHold bool
}

// On reports whether l locks anything.
func (l ObjectLock) On() bool { return l.Mode != "" || l.LegalHold }

// SetObjectLock applies a changed topic's WORM settings: uploads from now
// on use them, and the next pass applies a changed legal hold to the
// objects already in the bucket.
func (p *Partition) SetObjectLock(l ObjectLock) {
	p.mu.Lock()
	p.objLock = l
	p.mu.Unlock()
	if d := p.daemon.Load(); d != nil {
		d.Wake()
	}
}

// ObjectLock returns the partition's WORM settings.
func (p *Partition) ObjectLock() ObjectLock {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.objLock
}

// holdPending reports whether the topic's legal hold differs from the one
// the partition's objects carry. Called with p.mu held (read).
func (p *Partition) holdPending() bool { return p.objLock.LegalHold != p.m.LegalHold }

// uploadObject stores one of p's objects as p's WORM settings say: with
// UploadLocked (retention until now + Period, rounded up to a whole second
// so the date recorded is never before the one the store keeps) when they
// lock anything, with Upload otherwise (and for a nil p). Segments go
// through it; the tlog/ objects of the partition's tree should too.
func (d *Daemon) uploadObject(ctx context.Context, p *Partition, key string, r io.Reader, size int64) (cold.Attributes, error) {
	return d.uploadTo(ctx, d.store.Bucket, p, key, r, size)
}

// uploadTo is uploadObject through b (the store's bucket or its tile
// bucket).
func (d *Daemon) uploadTo(ctx context.Context, b cold.Bucket, p *Partition, key string, r io.Reader, size int64) (cold.Attributes, error) {
	var l ObjectLock
	if p != nil {
		l = p.ObjectLock()
	}
	if !l.On() {
		return b.Upload(ctx, key, r, size)
	}
	locker, ok := b.(cold.Locker)
	if !ok {
		return cold.Attributes{}, fmt.Errorf("topic %s asks for S3 Object Lock, which bucket %s does not have", p.topic, b.Name())
	}
	var ret cold.Retention
	if l.Mode != "" {
		until := d.opts.Now().Add(l.Period)
		if t := until.Truncate(time.Second); !t.Equal(until) {
			until = t.Add(time.Second)
		}
		ret = cold.Retention{Mode: l.Mode, Until: until.UTC()}
	}
	return locker.UploadLocked(ctx, key, r, size, ret, l.LegalHold)
}

// lockedNow reports whether retention must leave s alone for now: its
// recorded retain-until date is ahead, or the topic holds its objects. The
// first time it says so of a segment it logs and counts it.
func (d *Daemon) lockedNow(p *Partition, s RemoteSegment, now time.Time) bool {
	hold := p.ObjectLock().LegalHold
	if !hold && !now.Before(s.RetainUntil) {
		delete(p.lockWait, s.ID) // a wait for a hold now lifted
		return false
	}
	if _, seen := p.lockWait[s.ID]; !seen {
		d.deferred(p, s, s.RetainUntil, "the object is under Object Lock; remote retention deletes it after its retain-until date", hold)
	}
	return true
}

// deferred records that the deletion of s waits until at (zero: until
// the legal hold is lifted, looked at again after LockRetry).
func (d *Daemon) deferred(p *Partition, s RemoteSegment, at time.Time, why string, hold bool) {
	if p.lockWait == nil {
		p.lockWait = map[string]time.Time{}
	}
	p.lockWait[s.ID] = d.deferral(p, "remote retention", s.Key, s.VersionID, at, why, hold)
}

// deferral logs and counts a deletion (by: "remote retention", "orphan
// sweep") of one version that Object Lock holds back until (zero: not
// known), and returns when to try it again: at until, or after LockRetry
// if a legal hold holds it or nothing says when.
func (d *Daemon) deferral(p *Partition, by, key, versionID string, until time.Time, why string, hold bool) time.Time {
	at := until
	if at.IsZero() || hold {
		at = d.opts.Now().Add(d.opts.LockRetry)
	}
	d.m.lockDeferred.Inc()
	d.opts.Logger.Warn(by+" deferred: "+why, "topic", p.topic, "partition", p.partition,
		"key", key, "version_id", versionID, "retain_until", until, "legal_hold", hold, "retry_at", at)
	return at
}

// lockOf asks the bucket what holds a version whose delete it refused:
// its retain-until date and legal hold (zero and false if it cannot
// tell). One request each, so the retry waits for the real date.
func lockOf(ctx context.Context, b cold.Bucket, key, versionID string) (until time.Time, hold bool) {
	if l, ok := b.(cold.Locker); ok {
		if ret, h, err := l.ObjectLock(ctx, key, versionID); err == nil {
			return ret.Until, h
		}
	}
	return time.Time{}, false
}

// deleteSegment deletes a delete_started segment's object (its recorded
// version, if any). done is false when Object Lock refused the delete or
// refused it before and the date to retry at has not come: the entry stays
// delete_started (see the comment at the top).
func (d *Daemon) deleteSegment(ctx context.Context, p *Partition, s RemoteSegment) (done bool, err error) {
	if at, ok := p.lockWait[s.ID]; ok && d.opts.Now().Before(at) {
		return false, nil
	}
	err = retry(ctx, func() error { return cold.DeleteVersion(ctx, d.store.Bucket, s.Key, s.VersionID) })
	if errors.Is(err, cold.ErrObjectLocked) {
		until, hold := lockOf(ctx, d.store.Bucket, s.Key, s.VersionID)
		d.deferred(p, s, until, "the bucket refused the delete: "+err.Error(), hold)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	delete(p.lockWait, s.ID)
	return true, nil
}

// applyLegalHold brings the partition's objects to the topic's legal hold
// when it changed: every segment's recorded version and every object under
// the partition's tlog/ prefix but the latest checkpoint (its current
// version: a retried or repeated write of a tile leaves an older identical
// version as it was, see README's WORM section), then records the
// hold in the manifest. It runs under tierMu, so no upload races it, and a
// failure leaves the manifest as it was: the next pass does it again.
func (d *Daemon) applyLegalHold(ctx context.Context, p *Partition) error {
	p.mu.RLock()
	pending, want := p.holdPending(), p.objLock.LegalHold
	p.mu.RUnlock()
	if !pending {
		return nil
	}
	locker, ok := d.store.Bucket.(cold.Locker)
	if !ok {
		return fmt.Errorf("legal hold on topic %s: bucket %s has no S3 Object Lock", p.topic, d.store.Bucket.Name())
	}
	set := func(key, version string) error {
		err := retry(ctx, func() error { return locker.SetLegalHold(ctx, key, version, want) })
		if errors.Is(err, cold.ErrNotFound) {
			return nil // deleted meanwhile (a withdrawn attempt, a finished delete)
		}
		return err
	}
	n := 0
	for _, s := range p.Manifest().Segments {
		if s.State == CopyStarted {
			continue // an attempt a crash left; cleanup withdraws it
		}
		if err := set(s.Key, s.VersionID); err != nil {
			return err
		}
		n++
	}
	tlog := PartitionPrefix(p.topic, p.partition) + "tlog/"
	latest := audit.LatestCheckpointKey(PartitionPrefix(p.topic, p.partition))
	err := d.store.Bucket.Iter(ctx, tlog, func(key string) error {
		if key == latest {
			return nil // never locked: see lockedUploads.Upload
		}
		n++
		return set(key, "")
	})
	if err != nil {
		return err
	}
	if err := p.commit(func(m *Manifest) { m.LegalHold = want }); err != nil {
		return err
	}
	d.opts.Logger.Info("legal hold applied", "topic", p.topic, "partition", p.partition, "on", want, "objects", n)
	return nil
}

// The Store's ownedBucket passes Object Lock and versions through to the
// backend, writes after the ownership check like its other writes. On a
// backend without them, LockEnabled says no, UploadLocked and the legal
// hold fail saying why, and versioned reads and deletes act on the key.

func (b ownedBucket) LockEnabled(ctx context.Context) (bool, error) {
	return cold.LockEnabled(ctx, b.Bucket)
}

func (b ownedBucket) locker() (cold.Locker, error) {
	if l, ok := b.Bucket.(cold.Locker); ok {
		return l, nil
	}
	return nil, fmt.Errorf("bucket %s has no S3 Object Lock", b.Name())
}

func (b ownedBucket) UploadLocked(ctx context.Context, key string, r io.Reader, size int64, ret cold.Retention, legalHold bool) (cold.Attributes, error) {
	l, err := b.locker()
	if err != nil {
		return cold.Attributes{}, err
	}
	if err := b.o.check(ctx); err != nil {
		return cold.Attributes{}, err
	}
	return l.UploadLocked(ctx, key, r, size, ret, legalHold)
}

func (b ownedBucket) SetLegalHold(ctx context.Context, key, versionID string, on bool) error {
	l, err := b.locker()
	if err != nil {
		return err
	}
	if err := b.o.check(ctx); err != nil {
		return err
	}
	return l.SetLegalHold(ctx, key, versionID, on)
}

func (b ownedBucket) ObjectLock(ctx context.Context, key, versionID string) (cold.Retention, bool, error) {
	l, err := b.locker()
	if err != nil {
		return cold.Retention{}, false, err
	}
	return l.ObjectLock(ctx, key, versionID)
}

func (b ownedBucket) GetRangeVersion(ctx context.Context, key, versionID string, off, length int64) (io.ReadCloser, error) {
	return cold.GetRangeVersion(ctx, b.Bucket, key, versionID, off, length)
}

func (b ownedBucket) DeleteVersion(ctx context.Context, key, versionID string) error {
	if err := b.o.check(ctx); err != nil {
		return err
	}
	return cold.DeleteVersion(ctx, b.Bucket, key, versionID)
}

func (b ownedBucket) KeepsVersions(ctx context.Context) (bool, error) {
	return cold.KeepsVersions(ctx, b.Bucket)
}

// IterVersions lists without an ownership check, like Iter.
func (b ownedBucket) IterVersions(ctx context.Context, prefix string, f func(cold.ObjectVersion) error) error {
	return cold.IterVersions(ctx, b.Bucket, prefix, f)
}

var (
	_ cold.Versioned = ownedBucket{}
	_ cold.Locker    = ownedBucket{}
)

// partitionBucket is the store's bucket with p's Object Lock on its
// uploads, for the partition's tlog/ objects (tiles and numbered
// checkpoints; not the latest checkpoint): the audit package writes
// through it. The lock is read at each upload, so a
// tree opened before a config change follows the change.
func (d *Daemon) partitionBucket(p *Partition) cold.Bucket {
	return lockedUploads{Bucket: d.store.Bucket, d: d, p: p}
}

// tileBucket is partitionBucket for the tree's tiles, whose writes share
// ownership checks (see ownership.checkRecent).
func (d *Daemon) tileBucket(p *Partition) cold.Bucket {
	return lockedUploads{Bucket: d.store.treeBucket(), d: d, p: p}
}

type lockedUploads struct {
	cold.Bucket
	d *Daemon
	p *Partition
}

func (b lockedUploads) Upload(ctx context.Context, key string, r io.Reader, size int64) (cold.Attributes, error) {
	if key == audit.LatestCheckpointKey(PartitionPrefix(b.p.topic, b.p.partition)) {
		// tlog/checkpoint is a mutable pointer, rewritten at every
		// segment like the manifest: locked, every version of it would be
		// kept for the lock's days, and those written under a legal hold
		// would stay held after it is lifted (applyLegalHold releases
		// current versions). The numbered copy it points to is locked.
		return b.Bucket.Upload(ctx, key, r, size)
	}
	return b.d.uploadTo(ctx, b.Bucket, b.p, key, r, size)
}
