package tiering

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/hot"
)

// Retention is the partition's total retention (local + remote), from
// retention.ms and retention.bytes; <= 0 / < 0 means unlimited.
type Retention struct {
	Age   time.Duration
	Bytes int64
}

// PartitionOptions open a tiered partition.
type PartitionOptions struct {
	Dir       string
	Topic     string
	Partition int32
	Hot       hot.Config
	// HotOptions are passed to hot.Open; DeletionGuard and InitialOffset are
	// set by the partition.
	HotOptions hot.Options
	// Store and Reader are nil when the node has no bucket: the partition is
	// then its hot log alone.
	Store  *Store
	Reader *cold.Reader
	// Remote is remote.storage.enable for the topic.
	Remote    bool
	Retention Retention
	// LocalMaxBytes is the partition's own local-disk ceiling
	// (local.disk.max.bytes): past it, appends are refused with a
	// retriable *LocalDiskFullError. <= 0: only the node's ceiling applies.
	LocalMaxBytes int64
	// ObjectLock is the topic's WORM settings (remote.object.lock.*).
	ObjectLock ObjectLock
	// New says the partition is being created, so the bucket holds nothing
	// of it (a create of a name whose deletion is unfinished is refused):
	// it starts empty without listing the bucket for a manifest - one LIST
	// per partition saved, 10,000 for a 10,000-partition create.
	New    bool
	Logger *slog.Logger
}

// Partition is one partition as readers see it: the hot log for recent
// offsets and the remote segments of its manifest for older ones, behind one
// read path. The consumer cannot tell which tier served it, except by speed.
type Partition struct {
	topic     string
	partition int32
	dir       string
	log       *hot.Log
	store     *Store
	reader    *cold.Reader
	logger    *slog.Logger

	mu        sync.RWMutex
	m         *Manifest
	view      []RemoteSegment // m.committed(), recomputed when m changes: reads search it without copying
	remote    bool
	retention Retention
	objLock   ObjectLock
	copied    int64 // manifest version last copied to the bucket
	// changed is closed and replaced at every manifest install and when
	// the partition stops tiering (notify), so WaitUploaded sleeps until
	// the uploaded offset may have moved or can no longer move.
	changed chan struct{}
	closed  atomic.Bool // Close was called

	// Copies of p.remote and p.m.uploadedUpTo() for the deletion guard.
	remoteOn atomic.Bool
	uploaded atomic.Int64

	// The local-disk ceilings (see ceiling): the node's bytes (set by
	// Daemon.Add), this partition's and its own cap; appends refused at a
	// ceiling since the last check; whether it refused at the last check.
	node         atomic.Pointer[nodeDisk]
	localUsed    atomic.Int64
	localPending atomic.Int64
	localMax     atomic.Int64 // local.disk.max.bytes; <= 0: none
	refusals     atomic.Int64
	refusing     atomic.Bool

	// daemon is the daemon tiering the partition (set by Daemon.Add), woken
	// when the hot log seals a segment. urgentTo (UploadNow's target; 0:
	// none) makes a pass upload whatever the failure backoff says - the
	// first pass after the log has sealed up to it, since the roll's seal
	// lands after the wake that UploadNow sends.
	daemon   atomic.Pointer[Daemon]
	urgentTo atomic.Int64

	// Cluster mode (shared.go), guarded by mu: the leadership the node was
	// given, why it stopped tiering under it (nil: it did not), and the
	// shared manifest's ETag as last read or written.
	lead    leadership
	stopped error
	etag    string
	// saveMu orders writes of the local manifest with its install, so a
	// pass's commit and a follower's refresh cannot interleave.
	saveMu sync.Mutex

	tierMu sync.Mutex // one tiering pass at a time
	// Guarded by tierMu: the leadership a pass or sweep acts for (shared
	// prefix) and the generation whose manifest claim is done.
	passLead leadership
	claimed  atomic.Uint64 // written under tierMu; needsPass reads it
	// Guarded by tierMu: consecutive failed uploads and when to try again.
	failures int
	retryAt  time.Time
	// tree (guarded by tierMu) is the partition's Merkle tree as the last
	// upload left it; nil: load it from the bucket (tree.go).
	tree *audit.Tree
	// Guarded by tierMu: segments whose deletion Object Lock holds back,
	// and when to look at each again (see lock.go).
	lockWait map[string]time.Time
	// Guarded by tierMu: orphan versions (by "key version") whose deletion
	// Object Lock holds back, and when to try each again (cleanup.go).
	sweepWait map[string]time.Time
	// removed (guarded by tierMu) is set by Daemon.Remove: a pass or sweep
	// that took a snapshot of the partitions before the removal must not
	// touch the bucket for a topic whose deletion is listing it.
	removed bool

	// testHookOffsetForTime runs in OffsetForTime between the remote and
	// the local lookup, so a test can move the local start there.
	testHookOffsetForTime func()
	// testHookUploaded runs in upload between the object's verification
	// and its commit, so a test can move leadership there.
	testHookUploaded func()
	// testHookRemoteRead runs in Read between finding the remote segment
	// and reading it, so a test can let retention delete it there.
	testHookRemoteRead func()
}

// OpenPartition opens the manifest and the hot log of a partition. With no
// local manifest but one in the bucket, the partition is being restored: it
// adopts the bucket's manifest and, if its local log is empty, starts it
// where the remote history ends.
func OpenPartition(ctx context.Context, o PartitionOptions) (*Partition, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	// Every line of the partition names it; lines add only their own
	// attributes.
	p := &Partition{topic: o.Topic, partition: o.Partition, dir: o.Dir, store: o.Store, reader: o.Reader,
		logger: o.Logger.With("topic", o.Topic, "partition", o.Partition), remote: o.Remote, retention: o.Retention, objLock: o.ObjectLock}
	p.localMax.Store(o.LocalMaxBytes)
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	m, ok, err := loadLocalManifest(p.manifestPath())
	if err != nil {
		return nil, err
	}
	next := int64(0)
	if !ok && p.shared() && !o.New {
		// A new or wiped replica: the bucket's manifest serves what lies
		// below the local log (which the leader's replication fills from
		// InitialOffset). Followers never write the bucket, so unnamed
		// objects are not adopted here: a leader's claim sweeps them.
		if m, p.etag, _, err = p.readShared(ctx); err != nil {
			return nil, err
		}
		if m != nil {
			m.Segments = slices.DeleteFunc(m.Segments, func(s RemoteSegment) bool { return s.State == CopyStarted })
			next = o.HotOptions.InitialOffset
			if err := saveLocalManifest(p.manifestPath(), m); err != nil {
				return nil, err
			}
		}
	} else if !ok && p.store != nil && !o.New {
		m, next, ok, err = p.restore(ctx)
		if err != nil {
			return nil, fmt.Errorf("tiering: %s/%d: restore from %s: %w", o.Topic, o.Partition, p.store.Bucket.Name(), err)
		}
		if ok {
			p.logger.Info("restoring partition from the bucket",
				"manifest_version", m.Version, "remote_segments", len(m.committed()), "remote_end", m.uploadedUpTo(), "first_new_offset", next)
		}
		// Written now so the next start finds it locally instead of
		// listing the bucket again.
		if err := saveLocalManifest(p.manifestPath(), m); err != nil {
			return nil, err
		}
	}
	if m == nil {
		m = &Manifest{Format: ManifestFormat, Topic: o.Topic, Partition: o.Partition}
		if o.New && p.store != nil {
			if err := saveLocalManifest(p.manifestPath(), m); err != nil {
				return nil, err
			}
		}
	}
	p.setManifest(m)
	p.copied = m.Version
	p.remoteOn.Store(o.Remote)
	ho := o.HotOptions
	ho.InitialOffset = max(m.uploadedUpTo(), next)
	if p.shared() {
		ho.InitialOffset = max(m.uploadedUpTo(), o.HotOptions.InitialOffset)
	}
	ho.DeletionGuard = p.mayDeleteLocal
	ho.OnSealed = p.sealed
	if p.log, err = hot.Open(o.Dir, o.Hot, ho); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Partition) manifestPath() string { return filepath.Join(p.dir, localManifestFile) }

// setManifest installs m and what is derived from it. Called with p.mu held
// (or before the partition is shared).
func (p *Partition) setManifest(m *Manifest) {
	p.m = m
	p.view = m.committed()
	p.uploaded.Store(m.uploadedUpTo())
	p.notifyLocked()
}

// notifyLocked wakes WaitUploaded. Called with p.mu held.
func (p *Partition) notifyLocked() {
	if p.changed != nil {
		close(p.changed)
	}
	p.changed = make(chan struct{})
}

// notify wakes WaitUploaded after a change that may end its wait.
func (p *Partition) notify() {
	p.mu.Lock()
	p.notifyLocked()
	p.mu.Unlock()
}

// mayDeleteLocal is the hot log's deletion guard: with tiering on, a local
// segment goes only once committed segments in the bucket cover it - even
// if that overruns local retention (status reports it as upload lag).
//
// It runs under the hot log's lock, so it reads only atomics: taking p.mu
// here would stall appends behind a manifest commit's fsync.
func (p *Partition) mayDeleteLocal(s hot.SegmentInfo) bool {
	if !p.remoteOn.Load() || p.store == nil {
		return true
	}
	return s.NextOffset <= p.uploaded.Load()
}

// SetConfig applies a changed topic config.
func (p *Partition) SetConfig(cfg hot.Config, remote bool, r Retention) error {
	p.mu.Lock()
	p.remote, p.retention = remote, r
	p.remoteOn.Store(remote)
	p.notifyLocked() // a wait for an upload ends when tiering is turned off
	p.mu.Unlock()
	return p.log.SetConfig(cfg)
}

// SetLocalMaxBytes changes the partition's own local-disk ceiling
// (local.disk.max.bytes; <= 0: none). Appends see it at once.
func (p *Partition) SetLocalMaxBytes(n int64) { p.localMax.Store(n) }

// Log is the partition's hot log.
func (p *Partition) Log() *hot.Log { return p.log }

// Manifest returns a copy of the current manifest.
func (p *Partition) Manifest() *Manifest {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.m.clone()
}

// StartOffset is the first offset the partition serves, remote or local.
func (p *Partition) StartOffset() int64 {
	local := p.log.StartOffset()
	p.mu.RLock()
	defer p.mu.RUnlock()
	if len(p.view) > 0 {
		if rs := max(p.view[0].BaseOffset, p.m.LogStartOffset); rs < local {
			return rs
		}
	}
	return local
}

// MaxTimestamp is the largest batch max timestamp of the partition, remote
// or local (Unix ms), -1 if it holds no records.
func (p *Partition) MaxTimestamp() int64 {
	ts := int64(-1)
	for _, s := range p.log.Segments() {
		ts = max(ts, s.MaxTimestamp)
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, s := range p.view {
		ts = max(ts, s.MaxTimestamp)
	}
	return ts
}

// EndOffset is the next offset to be written (readers see everything below).
func (p *Partition) EndOffset() int64 { return p.log.EndOffset() }

// Wait blocks until the end offset passes offset.
func (p *Partition) Wait(ctx context.Context, offset int64) error { return p.log.Wait(ctx, offset) }

// Append appends one batch to the hot log, unless a local-disk ceiling is
// reached: then it returns a *LocalDiskFullError (retriable) and the log
// stays as it is - readable, and taking appends again once below it.
func (p *Partition) Append(b []byte) (hot.AppendResult, error) {
	pa, err := p.AppendDeferred(b)
	if err != nil {
		return hot.AppendResult{}, err
	}
	return pa.Wait()
}

// AppendDeferred is Append without the wait for the flush policy's promise
// (hot.Log.AppendDeferred): the batch is written, or refused at a ceiling,
// when it returns; Wait on the result waits for the promise.
func (p *Partition) AppendDeferred(b []byte) (*hot.PendingAppend, error) {
	if e := p.ceiling(); e != nil {
		p.refusals.Add(1)
		return nil, e
	}
	pa, err := p.log.AppendDeferred(b)
	if err == nil && !pa.Duplicate() {
		p.appended(int64(len(b)))
	}
	return pa, err
}

// Read returns whole batches from the batch containing offset: from the hot
// log at or above its start, otherwise from the remote segment that holds
// offset (one segment's worth at most; the caller continues at the next
// offset).
//
// A read can lose a race with retention and must then answer as a read
// issued after it would: one whose local segment was deleted under it reads
// the segment from the bucket (local deletion waits for the segment's
// commit, so the remote view holds it); one whose remote segment was deleted
// under it answers out of range with the new valid range.
func (p *Partition) Read(ctx context.Context, offset int64, maxBytes int) (hot.FetchResult, error) {
	res, err := p.log.Read(offset, maxBytes)
	if err != nil && !errors.Is(err, hot.ErrOffsetOutOfRange) && offset < p.log.StartOffset() {
		// Whatever the hot log made of a segment deleted mid-read, the
		// offset is now below its start: serve it as such.
		err = &hot.OffsetOutOfRangeError{Offset: offset, Start: p.log.StartOffset(), End: p.log.EndOffset()}
	}
	var oor *hot.OffsetOutOfRangeError
	if err == nil || !errors.As(err, &oor) || offset >= oor.Start {
		res.StartOffset = p.StartOffset()
		if oor != nil {
			oor.Start = res.StartOffset
		}
		return res, err
	}
	for {
		p.mu.RLock()
		view := p.view // never modified in place: commits install a new slice
		p.mu.RUnlock()
		seg, ok := findSegment(view, offset)
		start, end := p.StartOffset(), p.log.EndOffset()
		if !ok || p.reader == nil {
			return hot.FetchResult{StartOffset: start, EndOffset: end}, &hot.OffsetOutOfRangeError{Offset: offset, Start: start, End: end}
		}
		prefetchNext(p.reader, view, seg, offset)
		if p.testHookRemoteRead != nil {
			p.testHookRemoteRead()
		}
		data, err := p.reader.Read(ctx, seg.ref(), offset, maxBytes)
		if err != nil {
			if ctx.Err() == nil && !p.holds(seg) {
				continue // remote retention took the segment meanwhile: answer as of now
			}
			return hot.FetchResult{StartOffset: start, EndOffset: end}, fmt.Errorf("tiering: %s/%d: remote read at offset %d: %w", p.topic, p.partition, offset, err)
		}
		return hot.FetchResult{Records: data, StartOffset: start, EndOffset: end}, nil
	}
}

// holds reports whether seg still serves reads (retention has not taken it).
func (p *Partition) holds(seg RemoteSegment) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	s, ok := findSegment(p.view, seg.BaseOffset)
	return ok && s.ID == seg.ID
}

// OffsetForTime returns the first offset whose batch has a timestamp >= ts,
// looking in remote-only segments first, then in the hot log.
//
// The two tiers are read at different moments. If local retention moves the
// hot log's start between them, the segments it deleted were searched in
// neither tier (not remotely: they were local; not locally: they are gone),
// so the lookup starts again from the new local start. Likewise a remote
// segment deleted by retention mid-lookup restarts it.
func (p *Partition) OffsetForTime(ctx context.Context, ts int64) (int64, error) {
retry:
	for {
		local := p.log.StartOffset()
		p.mu.RLock()
		segs := p.view // never modified in place: commits install a new slice
		p.mu.RUnlock()
		for _, s := range segs {
			if s.BaseOffset >= local || p.reader == nil {
				break
			}
			if s.MaxTimestamp < ts {
				continue
			}
			off, found, err := p.reader.OffsetForTime(ctx, s.ref(), ts)
			if err != nil {
				if ctx.Err() == nil && !p.holds(s) {
					continue retry
				}
				return 0, fmt.Errorf("tiering: %s/%d: remote time lookup: %w", p.topic, p.partition, err)
			}
			if found {
				return off, nil
			}
		}
		if p.testHookOffsetForTime != nil {
			p.testHookOffsetForTime()
		}
		off, err := p.log.OffsetForTime(ts)
		if p.log.StartOffset() != local {
			continue // the hot log lost segments that were not searched remotely
		}
		return off, err
	}
}

// commit applies change to a copy of the manifest, bumps its version and
// writes it durably to local disk before it takes effect. Callers hold
// tierMu (or own the partition alone), so the manifest cannot change
// between the copy and the install; p.mu is held only for the install,
// never across the fsync, so reads do not wait on it.
func (p *Partition) commit(change func(m *Manifest)) error {
	return p.commitTo(nil, change)
}

// commitDurable is commit for a change the bucket must know before the node
// acts on it: a segment becoming committed (reads use it, local retention
// may delete the local copy) or leaving (its object is deleted next). The
// new version is copied to the bucket first, so what the bucket says is
// committed never falls behind what the node treats as committed: a node
// that loses its disk after the commit restores from a copy that has it.
func (p *Partition) commitDurable(ctx context.Context, change func(m *Manifest)) error {
	return p.commitTo(ctx, change)
}

func (p *Partition) commitTo(ctx context.Context, change func(m *Manifest)) error {
	p.mu.RLock()
	m := p.m.clone()
	p.mu.RUnlock()
	change(m)
	m.Version++
	if ctx != nil {
		if err := p.putManifestCopy(ctx, m); err != nil {
			return err
		}
	}
	p.saveMu.Lock()
	defer p.saveMu.Unlock()
	if p.shared() {
		// A pass of a leadership that ended must not overwrite what a
		// follower's refresh or the next claim installed.
		p.mu.RLock()
		current := p.lead.gen == p.passLead.gen && p.lead.leader
		p.mu.RUnlock()
		if !current {
			return fmt.Errorf("%w: %s/%d: leadership changed", ErrNotLeader, p.topic, p.partition)
		}
	}
	if err := saveLocalManifest(p.manifestPath(), m); err != nil {
		return fmt.Errorf("tiering: %s/%d: save manifest: %w", p.topic, p.partition, err)
	}
	p.mu.Lock()
	p.setManifest(m)
	if ctx != nil {
		p.copied = max(p.copied, m.Version)
	}
	p.mu.Unlock()
	return nil
}

// putManifestCopy writes m to the bucket as manifest-<version>.json, or on
// a shared prefix as the partition's manifest, conditionally, for the
// leadership of the pass (callers hold tierMu).
func (p *Partition) putManifestCopy(ctx context.Context, m *Manifest) error {
	if p.shared() {
		return p.putShared(ctx, m, p.passLead, false)
	}
	key := manifestKey(p.topic, p.partition, m.Version)
	raw := m.encode()
	err := retry(ctx, func() error {
		_, err := p.store.Bucket.Upload(ctx, key, bytes.NewReader(raw), int64(len(raw)))
		return err
	})
	if err != nil {
		return fmt.Errorf("tiering: %s/%d: copy manifest version %d to %s: %w", p.topic, p.partition, m.Version, p.store.Bucket.Name(), err)
	}
	return nil
}

// Close closes the hot log.
func (p *Partition) Close() error {
	p.closed.Store(true)
	p.notify()
	return p.log.Close()
}

// Delete closes the partition and removes its local data.
func (p *Partition) Delete() error { return p.log.Delete() }
