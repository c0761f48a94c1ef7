package tiering

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"

	"github.com/tierlog/tierlog/cold"
)

// cleanupAll sweeps every partition for orphans and aborts stale multipart
// uploads.
func (d *Daemon) cleanupAll(ctx context.Context) {
	if d.store.Fenced() != nil {
		return // another node owns the prefix; the store logged why
	}
	for _, p := range d.partitions() {
		if err := d.cleanup(ctx, p); err != nil && ctx.Err() == nil {
			d.opts.Logger.Warn("orphan cleanup", "topic", p.topic, "partition", p.partition, "err", err)
		}
	}
}

// cleanup commits copy_started entries left by a crash whose objects were
// uploaded whole (adoptFinished) and withdraws the rest (their objects
// become orphans), then deletes every object under the partition's prefix
// that the manifest does not name, every version of it: segment objects of
// failed attempts and manifest copies older than the last two. It also
// aborts the partition's stale multipart uploads.
func (d *Daemon) cleanup(ctx context.Context, p *Partition) error {
	p.tierMu.Lock()
	defer p.tierMu.Unlock()
	if p.removed {
		return nil
	}
	if p.shared() {
		p.mu.RLock()
		l, stopped := p.lead, p.stopped
		p.mu.RUnlock()
		if !l.leader || stopped != nil || p.claimed.Load() != l.gen {
			return nil // not the leader, or its claim (which sweeps) is to come
		}
		p.passLead = l
	}
	return d.cleanupLocked(ctx, p)
}

// cleanupLocked is cleanup with tierMu held.
func (d *Daemon) cleanupLocked(ctx context.Context, p *Partition) error {
	m := p.Manifest()
	ab, canAbort := d.store.Bucket.(cold.MultipartAborter)
	if err := d.adoptFinished(ctx, p, m); err != nil {
		return err
	}
	if err := d.recordSignedTree(ctx, p); err != nil {
		return err
	}
	m = p.Manifest()
	var stale []string
	for _, s := range m.Segments {
		if s.State == CopyStarted {
			stale = append(stale, s.ID)
			// No upload of this partition runs now (tierMu), so a multipart
			// upload of a withdrawn attempt is dead whatever its age. MinIO
			// lists multipart uploads only by exact key, so ask per key.
			if canAbort {
				if _, err := ab.AbortIncompleteUploads(ctx, s.Key, 0); err != nil {
					return err
				}
			}
		}
	}
	if len(stale) > 0 {
		if err := p.commit(func(m *Manifest) {
			for _, id := range stale {
				m.removeID(id)
			}
		}); err != nil {
			return err
		}
		m = p.Manifest()
	}
	named := map[string]bool{}
	for _, s := range m.Segments {
		named[s.Key] = true
	}
	prefix := PartitionPrefix(p.topic, p.partition)
	// Listed with their versions and delete markers (see versions.go): an
	// orphan's versions go with it, and so do those an earlier delete by
	// key left behind a marker - a manifest copy or an orphan deleted so,
	// a segment deleted by retention with no version recorded. Every
	// version of a key the manifest names stays, whatever its state.
	var orphans, copies []keyVersions
	err := versionsByKey(ctx, d.store.Bucket, prefix, func(key string, vs []cold.ObjectVersion) error {
		kv := keyVersions{key: key, vs: slices.Clone(vs)}
		_, isCopy := parseManifestKey(key)
		switch {
		case isCopy && !vs[0].DeleteMarker:
			copies = append(copies, kv) // lexical order is version order
		case isCopy, strings.HasSuffix(key, ".seg") && !named[key]:
			orphans = append(orphans, kv)
		}
		return nil
	})
	if err != nil {
		return err
	}
	switch {
	case p.shared():
		// The versioned copies of a single node's prefix are stale once
		// its manifest is shared (a claim wrote it).
		orphans = append(orphans, copies...)
		// Delete only while the manifest is still the one this leader
		// wrote: then no newer leader has claimed it, so every object
		// listed above that it does not name is an orphan (a newer
		// leader uploads only after its claim, under keys of its own).
		if len(orphans) > 0 {
			if err := p.checkCurrent(ctx, p.passLead); err != nil {
				return err
			}
		}
	case len(copies) > 2:
		orphans = append(orphans, copies[:len(copies)-2]...) // keep the newest two
	}
	if err := d.deleteOrphans(ctx, p, orphans); err != nil {
		return err
	}
	if canAbort {
		// By prefix: effective on AWS S3 (MinIO answers only exact keys and
		// expires stale uploads itself after 24 hours).
		n, err := ab.AbortIncompleteUploads(ctx, prefix, d.opts.StaleMultipart)
		if err != nil {
			return err
		}
		if n > 0 {
			d.opts.Logger.Info("aborted stale multipart uploads", "prefix", prefix, "count", n)
		}
	}
	return nil
}

// adoptFinished commits the copy_started attempts whose object is in the
// bucket, whole and holding what the entry announced: the crash came after
// the upload, perhaps after its commit reached the bucket's manifest copy
// (commitDurable writes there first). Withdrawing such an attempt would
// delete an object the bucket says is committed, and a node that then lost
// its disk would restore a manifest naming a missing object. Attempts are
// adopted in offset order from the end of the committed ones, so committed
// segments never overlap. A bucket error stops the sweep: nothing is
// withdrawn on a guess.
func (d *Daemon) adoptFinished(ctx context.Context, p *Partition, m *Manifest) error {
	var started []RemoteSegment
	for _, s := range m.Segments {
		if s.State == CopyStarted {
			started = append(started, s)
		}
	}
	slices.SortFunc(started, func(a, b RemoteSegment) int { return cmp.Compare(a.BaseOffset, b.BaseOffset) })
	end := m.uploadedUpTo()
	var adopt []RemoteSegment
	for _, s := range started {
		if s.BaseOffset != end {
			continue
		}
		seg, err := p.inspect(ctx, s.Key)
		if err != nil {
			if unusable(err) {
				continue // never uploaded, or not whole: withdrawn below
			}
			return err
		}
		if seg.ID != s.ID || seg.BaseOffset != s.BaseOffset || seg.NextOffset != s.NextOffset {
			continue
		}
		adopt = append(adopt, seg)
		end = seg.NextOffset
	}
	if len(adopt) == 0 {
		return nil
	}
	err := p.commitDurable(ctx, func(m *Manifest) {
		for _, seg := range adopt {
			m.replace(seg)
		}
	})
	if err != nil {
		return err
	}
	for _, seg := range adopt {
		d.opts.Logger.Info("committed a segment uploaded before a restart", "topic", p.topic, "partition", p.partition,
			"key", seg.Key, "base_offset", seg.BaseOffset, "next_offset", seg.NextOffset)
	}
	return nil
}

// keyVersions is a key and its versions, newest first.
type keyVersions struct {
	key string
	vs  []cold.ObjectVersion
}

// deleteOrphans deletes every version of the orphans but those Object Lock
// holds: each of these is logged and counted once, and left alone until
// its retain-until date (after LockRetry if a legal hold or nothing says
// when), so that no sweep asks the bucket again before then. The waits
// are kept for the versions still listed, and only for them.
func (d *Daemon) deleteOrphans(ctx context.Context, p *Partition, orphans []keyVersions) (err error) {
	now := d.opts.Now()
	waits := map[string]time.Time{}
	wait := func(v cold.ObjectVersion) bool {
		at, ok := p.sweepWait[v.Key+" "+v.VersionID]
		if ok && now.Before(at) {
			waits[v.Key+" "+v.VersionID] = at
			return true
		}
		return false
	}
	defer func() {
		if err != nil {
			// Cut short: the waits of orphans not reached stand.
			for k, at := range p.sweepWait {
				if _, ok := waits[k]; !ok {
					waits[k] = at
				}
			}
		}
		p.sweepWait = waits
	}()
	b := d.store.Bucket
	bv := d.store.versioning(d.opts.Logger)
	deferRefused := func(r purged) {
		for _, v := range r.refused {
			until, hold := lockOf(ctx, b, v.Key, v.VersionID)
			waits[v.Key+" "+v.VersionID] = d.deferral(p, "orphan sweep", v.Key, v.VersionID, until,
				"the bucket refused to delete a version of an object no manifest names; the sweep deletes it after its retain-until date", hold)
		}
	}
	done := make([]purged, 0, len(orphans))
	defer func() {
		// Counted once each, when all the sweep does to them is done.
		for i, r := range done {
			if key := orphans[i].key; strings.HasSuffix(key, ".seg") && r.deleted > 0 && r.gone() {
				d.m.orphans.Inc()
				d.opts.Logger.Info("deleted orphan object", "key", key, "versions", r.deleted)
			}
		}
	}()
	for _, o := range orphans {
		r, err := purge(ctx, b, bv, o.key, o.vs, wait)
		if err != nil {
			return err
		}
		deferRefused(r)
		done = append(done, r)
	}
	// Versioning turned on meanwhile: what the deletes by key left behind
	// markers goes by version id now, not at the next sweep.
	on, err := bv.turnedOn(ctx)
	if !on || err != nil {
		return err
	}
	for i, r := range done {
		if !r.byKey {
			continue
		}
		more, err := purgeLeft(ctx, b, orphans[i].key, wait)
		if err != nil {
			return err
		}
		deferRefused(more)
		done[i].refused, done[i].waiting = more.refused, more.waiting
		done[i].deleted += more.deleted
	}
	return nil
}
