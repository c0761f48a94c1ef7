package tiering

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/fileutil"
)

// A shared prefix (StoreOptions.Shared) holds one copy of a cluster's
// history, written by every node of the cluster - but each partition only
// by its leader. No node owns the prefix; the cluster marker records the
// cluster id only. Writes are fenced per partition by leader epoch:
//
//   - Each partition's manifest lives under one key (sharedManifestKey)
//     and every write of it is conditional on the ETag last read or
//     written (If-Match; If-None-Match: * for the first), so the manifest
//     is a compare-and-swap chain: of two nodes that read one version,
//     one writes the next.
//   - A node made leader (SetLeadership(epoch, true)) re-reads the
//     manifest before anything else and claims it: writes it back with
//     its leader epoch (leader_epoch). From then on an older leader that
//     still tiers loses its next manifest write - it uploads at most the
//     segment in flight, whose object is never named - and stops tiering
//     the partition. A leader that loses a write, or reads a manifest of a
//     higher epoch, stops until SetLeadership is called again.
//   - After its claim the new leader sweeps the partition's prefix: every
//     segment object the claimed manifest does not name (an old leader's
//     upload that never reached the manifest) is deleted, so nothing leaks
//     and nothing is uploaded twice (pending segments start where the
//     manifest ends). Objects are never adopted from another node: the
//     old leader may still be writing them.
//   - Any sweep deletes only after checking the manifest is still the one
//     it wrote (HEAD, ETag): a leader deposed but not yet told cannot
//     delete what the new leader uploaded. A checkpoint is signed after
//     the same check: a deposed leader does not sign the segment it had
//     in flight (see Daemon.checkpoint).
//   - Followers never write the bucket. RefreshManifest installs the
//     bucket's manifest; their local retention deletes only local segments
//     it shows uploaded (mayDeleteLocal), and reads below their local
//     start use its remote segments.
//
// Which leader copied what is recorded by epoch: the manifest names the
// epoch of its last writer, each segment the leader epoch it was uploaded
// under and the epochs its batches carry (from the footer). A new leader
// whose log disagrees with the last uploaded segment's epochs, or ends
// before it, stops tiering the partition instead of uploading offsets the
// bucket already holds with other records.

// sharedManifestKey is the one manifest key of a partition on a shared
// prefix (the single-node layout writes versioned copies instead).
func sharedManifestKey(topic string, partition int32) string {
	return PartitionPrefix(topic, partition) + "manifest.json"
}

// ErrNotLeader is returned (wrapped) for tiering work asked of a partition
// this node does not lead on a shared prefix, or whose leadership lost the
// manifest to another leader.
var ErrNotLeader = errors.New("tiering: not the partition's tiering leader")

// LocalClusterID returns the cluster id a data directory's bucket marker
// adopted ("" if none): a single node upgraded into a cluster passes it as
// StoreOptions.ClusterID, since the shared marker must name the same
// cluster.
func LocalClusterID(dataDir string) (string, error) {
	raw, err := os.ReadFile(filepath.Join(dataDir, clusterIDFile))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	return strings.TrimSpace(string(raw)), err
}

// openShared opens a prefix shared by the nodes of opts.ClusterID: the
// marker is created if absent (conditionally), a marker of another
// cluster is refused, and one a single node owns is refused unless
// opts.Takeover (converting it, once, fences that node off: its owned
// bucket finds no owner).
func openShared(ctx context.Context, b cold.Bucket, dataDir string, opts StoreOptions) (*Store, error) {
	if opts.ClusterID == "" {
		return nil, errors.New("tiering: a shared bucket prefix needs the cluster id")
	}
	cu, ok := b.(cold.ConditionalUploader)
	if !ok {
		return nil, fmt.Errorf("tiering: bucket %s cannot upload conditionally, which a shared prefix needs", b.Name())
	}
	local, err := LocalClusterID(dataDir)
	if err != nil {
		return nil, err
	}
	if local != "" && local != opts.ClusterID {
		return nil, fmt.Errorf("tiering: data directory %s belongs to cluster %s, not %s", dataDir, local, opts.ClusterID)
	}
	if opts.ClaimTimeout <= 0 {
		opts.ClaimTimeout = 2 * time.Minute
	}
	cctx, cancel := context.WithTimeout(ctx, opts.ClaimTimeout)
	defer cancel()
	for range 10 {
		m, etag, found, err := readMarker(cctx, b)
		if err != nil {
			return nil, err
		}
		switch {
		case found && m.ClusterID != opts.ClusterID:
			return nil, fmt.Errorf("tiering: bucket %s belongs to cluster %s, not to this node's cluster %s: use another bucket prefix",
				b.Name(), m.ClusterID, opts.ClusterID)
		case found && m.Shared:
			return sharedStore(b, dataDir, local, opts.ClusterID)
		case found && !opts.Takeover:
			owner := "a single node that is not recorded"
			if m.Owner != nil {
				owner = m.Owner.String()
			}
			return nil, fmt.Errorf("tiering: bucket %s is owned by %s, not shared by a cluster. To upgrade that node into the cluster, stop it and start this node once with --takeover",
				b.Name(), owner)
		}
		next := clusterMarker{ClusterID: opts.ClusterID, Created: time.Now().UTC(), Shared: true}
		cond := cold.Condition{IfAbsent: true}
		if found {
			next.Created, cond = m.Created, cold.Condition{IfMatch: etag}
		}
		raw, _ := json.MarshalIndent(next, "", "  ")
		err = retry(cctx, func() error {
			_, err := cu.UploadIf(cctx, clusterMarkerKey, bytes.NewReader(raw), int64(len(raw)), cond)
			return err
		})
		if errors.Is(err, cold.ErrPreconditionFailed) {
			continue // changed under us (or our own lost reply): read again
		}
		if err != nil {
			return nil, fmt.Errorf("tiering: write cluster marker to %s: %w", b.Name(), err)
		}
		if found {
			opts.Logger.Warn("converted the bucket prefix of a single node into the cluster's shared prefix; that node is fenced off",
				"bucket", b.Name(), "cluster", opts.ClusterID)
		}
		return sharedStore(b, dataDir, local, opts.ClusterID)
	}
	return nil, fmt.Errorf("tiering: open %s/%s: it kept changing under us", b.Name(), clusterMarkerKey)
}

func sharedStore(b cold.Bucket, dataDir, local, cluster string) (*Store, error) {
	if local == "" {
		if err := fileutil.MkdirAllDurable(dataDir); err != nil {
			return nil, err
		}
		if err := fileutil.WriteFileAtomic(filepath.Join(dataDir, clusterIDFile), []byte(cluster+"\n"), 0o644); err != nil {
			return nil, err
		}
	}
	return &Store{Bucket: b, ClusterID: cluster, shared: true}, nil
}

// SetTopicWriter says whether this node writes the topic records
// (topics/<name>.json) of a shared prefix: the cluster names one node (its
// controller), so nodes never race on a record with different views of
// it. PutTopic and DeleteTopic do nothing on the others. The writer
// overwrites a record whole from the cluster's metadata, so a write
// repeated (by a retry, or by a new writer after a controller change) is
// harmless, and DeleteTopic resumes where a previous writer stopped. On a
// single node's prefix the node always writes and this has no effect.
func (s *Store) SetTopicWriter(w bool) { s.topicWriter.Store(w) }

func (s *Store) writesTopics() bool { return !s.shared || s.topicWriter.Load() }

// leadership is what the node was told of its role for a partition. gen
// counts SetLeadership calls, so work started under one leadership cannot
// act for the next.
type leadership struct {
	epoch  int32
	leader bool
	gen    uint64
}

func (p *Partition) shared() bool { return p.store != nil && p.store.shared }

// SetLeadership tells a partition on a shared prefix its leader epoch and
// whether this node leads it. Only a leader tiers: uploads segments,
// applies total retention to remote segments, writes the manifest and
// sweeps orphans; the daemon skips the others. A leader re-reads and
// claims the manifest (see above) before its first upload; a stop after a
// lost manifest write ends here. It never blocks on the bucket.
func (p *Partition) SetLeadership(epoch int32, leader bool) {
	p.mu.Lock()
	p.lead = leadership{epoch: epoch, leader: leader, gen: p.lead.gen + 1}
	p.stopped = nil
	p.notifyLocked()
	p.mu.Unlock()
	if d := p.daemon.Load(); d != nil && leader {
		d.Wake()
	}
}

// Leadership returns the leader epoch and role last set, and why the
// partition stopped tiering under it (nil if it did not).
func (p *Partition) Leadership() (epoch int32, leader bool, stopped error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.lead.epoch, p.lead.leader, p.stopped
}

// fence stops tiering under leadership l: another leader moved the
// manifest. Nothing more is written for p until SetLeadership.
func (p *Partition) fence(l leadership, format string, args ...any) error {
	why := fmt.Sprintf(format, args...)
	err := fmt.Errorf("%w: %s/%d at leader epoch %d: %s", ErrNotLeader, p.topic, p.partition, l.epoch, why)
	p.mu.Lock()
	first := p.lead.gen == l.gen && p.stopped == nil
	if first {
		p.stopped = err
		p.notifyLocked()
	}
	p.mu.Unlock()
	if first {
		p.logger.Error("stopped tiering: another leader moved the partition's manifest", "leader_epoch", l.epoch, "why", why)
		if d := p.daemon.Load(); d != nil {
			d.m.fenced.Inc()
		}
	}
	return err
}

// readShared reads the partition's shared manifest and its ETag (HEAD
// before GET: a manifest changed in between is newer than the ETag, so a
// write conditional on it fails rather than overwriting). found is false
// if the key is absent: then the newest versioned copy, left by a single
// node before an upgrade, is returned if there is one (with etag "").
func (p *Partition) readShared(ctx context.Context) (m *Manifest, etag string, found bool, err error) {
	return p.store.readShared(ctx, p.topic, p.partition)
}

func (s *Store) readShared(ctx context.Context, topic string, partition int32) (m *Manifest, etag string, found bool, err error) {
	key := sharedManifestKey(topic, partition)
	var attrs cold.Attributes
	err = retry(ctx, func() (err error) { attrs, err = s.Bucket.Attributes(ctx, key); return err })
	if err == nil {
		var raw []byte
		err = retry(ctx, func() error {
			rc, err := s.Bucket.Get(ctx, key)
			if err != nil {
				return err
			}
			defer rc.Close()
			raw, err = io.ReadAll(rc)
			return err
		})
		if err == nil {
			m, err = decodeManifestAt(raw, key)
			if err != nil {
				return nil, "", false, err
			}
			return m, attrs.ETag, true, nil
		}
	}
	if !errors.Is(err, cold.ErrNotFound) {
		return nil, "", false, fmt.Errorf("tiering: %s/%d: read manifest: %w", topic, partition, err)
	}
	m, ok, err := s.latestManifest(ctx, topic, partition)
	if err != nil || !ok {
		return nil, "", false, err
	}
	return m, "", false, nil
}

// errOvertaken: a claim lost its write to a leader of a lower epoch (one
// still tiering after a newer leader was named); the claim reads again.
var errOvertaken = errors.New("tiering: an older leader wrote the manifest first")

// putShared writes m as the shared manifest for leadership l, conditional
// on the ETag last read or written. A lost write - another leader moved
// the manifest - fences l, except that a claim lost to an older leader
// returns errOvertaken. A write whose reply was lost and that reports a
// failed precondition is recognised by reading the manifest back.
func (p *Partition) putShared(ctx context.Context, m *Manifest, l leadership, claiming bool) error {
	p.mu.RLock()
	cur, stopped, etag := p.lead, p.stopped, p.etag
	p.mu.RUnlock()
	switch {
	case stopped != nil:
		return stopped
	case cur.gen != l.gen || !cur.leader:
		return fmt.Errorf("%w: %s/%d: leadership changed", ErrNotLeader, p.topic, p.partition)
	}
	m.LeaderEpoch = l.epoch
	raw := m.encode()
	key := sharedManifestKey(p.topic, p.partition)
	cond := cold.Condition{IfMatch: etag}
	if etag == "" {
		cond = cold.Condition{IfAbsent: true}
	}
	var attrs cold.Attributes
	err := retry(ctx, func() (err error) {
		attrs, err = p.store.Bucket.(cold.ConditionalUploader).UploadIf(ctx, key, bytes.NewReader(raw), int64(len(raw)), cond)
		return err
	})
	if errors.Is(err, cold.ErrPreconditionFailed) {
		got, getag, found, rerr := p.readShared(ctx)
		switch {
		case rerr != nil:
			return rerr // unknown yet: the next write asks again
		case found && bytes.Equal(got.encode(), raw):
			attrs, err = cold.Attributes{ETag: getag}, nil // ours
		case found && claiming && got.LeaderEpoch < l.epoch:
			return errOvertaken
		case found:
			return p.fence(l, "manifest version %d written at leader epoch %d replaced the one this leader read", got.Version, got.LeaderEpoch)
		default:
			return p.fence(l, "the manifest was deleted")
		}
	}
	if err != nil {
		return fmt.Errorf("tiering: %s/%d: write manifest version %d to %s: %w", p.topic, p.partition, m.Version, p.store.Bucket.Name(), err)
	}
	p.mu.Lock()
	if p.lead.gen == l.gen {
		p.etag = attrs.ETag
	}
	p.mu.Unlock()
	return nil
}

// claim makes this node's leadership l the manifest's writer: it reads the
// bucket's manifest, checks it against the log's epochs, installs it as
// the local manifest (dropping attempts of an earlier leadership: their
// objects are orphans now) and writes it back at l's epoch. Called with
// tierMu held.
func (d *Daemon) claim(ctx context.Context, p *Partition, l leadership) error {
	for range 5 {
		m, etag, _, err := p.readShared(ctx)
		if err != nil {
			return err
		}
		if m == nil {
			m = &Manifest{Format: ManifestFormat, Topic: p.topic, Partition: p.partition}
		}
		if m.LeaderEpoch > l.epoch {
			return p.fence(l, "the manifest was written at leader epoch %d", m.LeaderEpoch)
		}
		if err := p.checkLineage(m); err != nil {
			return p.fence(l, "%v", err)
		}
		m.Segments = slices.DeleteFunc(m.Segments, func(s RemoteSegment) bool { return s.State == CopyStarted })
		m.Version++
		p.mu.Lock()
		if p.lead.gen == l.gen {
			p.etag = etag
		}
		p.mu.Unlock()
		err = p.putShared(ctx, m, l, true)
		if errors.Is(err, errOvertaken) {
			continue // read again: that leader loses its next write
		}
		if err != nil {
			return err
		}
		if err := p.install(m, l, true); err != nil {
			return err
		}
		p.logger.Info("leader claimed the partition's manifest", "leader_epoch", l.epoch, "manifest_version", m.Version,
			"remote_end", m.uploadedUpTo())
		return nil
	}
	return fmt.Errorf("tiering: %s/%d: claim the manifest: it kept changing", p.topic, p.partition)
}

// checkLineage reports whether the log holds the records the manifest's
// last segment says were copied, by epoch: the log must reach its end,
// and where it still holds that offset, with the epoch the segment
// records for it.
func (p *Partition) checkLineage(m *Manifest) error {
	c := m.committed()
	if len(c) == 0 {
		return nil
	}
	last := c[len(c)-1]
	// The log end, not the high watermark (EndOffset): a new leader's lags
	// until its followers fetch, yet it holds every record its
	// predecessor committed - and so uploaded.
	if end := p.log.LogEndOffset(); end < last.NextOffset {
		return fmt.Errorf("the bucket holds offsets up to %d, this leader's log ends at %d", last.NextOffset, end)
	}
	off := last.NextOffset - 1
	if len(last.Epochs) == 0 || off < p.log.StartOffset() {
		return nil // uploaded before epochs were recorded, or no longer local
	}
	want := last.Epochs[len(last.Epochs)-1].Epoch
	got := int32(-1)
	for _, e := range p.log.EpochEntries() {
		if e.StartOffset <= off {
			got = e.Epoch
		}
	}
	if got != want {
		return fmt.Errorf("offset %d is in leader epoch %d in the bucket, %d in this leader's log: the logs diverged", off, want, got)
	}
	return nil
}

// install makes m the partition's manifest (local file, then memory) if
// leadership l is still current: as leader (a claim) or follower.
func (p *Partition) install(m *Manifest, l leadership, leader bool) error {
	p.saveMu.Lock()
	defer p.saveMu.Unlock()
	p.mu.RLock()
	current := p.lead.gen == l.gen && p.lead.leader == leader
	p.mu.RUnlock()
	if !current {
		return fmt.Errorf("%w: %s/%d: leadership changed", ErrNotLeader, p.topic, p.partition)
	}
	if err := saveLocalManifest(p.manifestPath(), m); err != nil {
		return fmt.Errorf("tiering: %s/%d: save manifest: %w", p.topic, p.partition, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lead.gen != l.gen {
		return fmt.Errorf("%w: %s/%d: leadership changed", ErrNotLeader, p.topic, p.partition)
	}
	p.setManifest(m)
	p.copied = m.Version
	return nil
}

// RefreshManifest re-reads the partition's manifest from a shared prefix.
// A follower installs it (its local retention and remote reads follow
// it); it writes nothing to the bucket. A leader only checks it: one of a
// higher epoch stops its tiering. Without a shared prefix it does nothing.
func (p *Partition) RefreshManifest(ctx context.Context) error {
	if !p.shared() {
		return nil
	}
	p.mu.RLock()
	l, etag := p.lead, p.etag
	p.mu.RUnlock()
	m, getag, found, err := p.readShared(ctx)
	if err != nil || m == nil {
		return err
	}
	if l.leader {
		if found && m.LeaderEpoch > l.epoch {
			p.fence(l, "the manifest was written at leader epoch %d", m.LeaderEpoch)
		}
		return nil
	}
	if found && getag == etag {
		return nil // unchanged
	}
	m.Segments = slices.DeleteFunc(m.Segments, func(s RemoteSegment) bool { return s.State == CopyStarted })
	if err := p.install(m, l, false); err != nil {
		return err
	}
	p.mu.Lock()
	if p.lead.gen == l.gen {
		p.etag = getag
	}
	p.mu.Unlock()
	return nil
}

// checkCurrent returns nil if the shared manifest is still the one this
// leadership last wrote: then no other leader has claimed it, so nothing
// in the bucket was uploaded by a newer leader. A sweep calls it between
// listing and deleting.
func (p *Partition) checkCurrent(ctx context.Context, l leadership) error {
	p.mu.RLock()
	etag := p.etag
	p.mu.RUnlock()
	var attrs cold.Attributes
	key := sharedManifestKey(p.topic, p.partition)
	if err := retry(ctx, func() (err error) { attrs, err = p.store.Bucket.Attributes(ctx, key); return err }); err != nil {
		if errors.Is(err, cold.ErrNotFound) {
			return p.fence(l, "the manifest was deleted")
		}
		return err
	}
	if etag == "" || attrs.ETag != etag {
		return p.fence(l, "the manifest changed since this leader wrote it")
	}
	return nil
}

// lead reports whether a pass or sweep may tier p, setting the leadership
// it acts for: on a shared prefix only a leader not fenced, after its
// claim of the manifest (done here, once per leadership). Called with
// tierMu held.
func (d *Daemon) lead(ctx context.Context, p *Partition) bool {
	if !p.shared() {
		return true
	}
	p.mu.RLock()
	l, stopped := p.lead, p.stopped
	p.mu.RUnlock()
	if !l.leader || stopped != nil {
		return false
	}
	p.passLead = l
	if p.claimed.Load() == l.gen {
		return true
	}
	if err := d.claim(ctx, p, l); err != nil {
		if ctx.Err() == nil && !errors.Is(err, ErrNotLeader) {
			d.opts.Logger.Warn("claim the manifest as the new leader; will retry", "topic", p.topic, "partition", p.partition,
				"leader_epoch", l.epoch, "err", err)
		}
		return false
	}
	p.claimed.Store(l.gen)
	// Sweep now what earlier leaders uploaded and never named, before
	// the first upload: nothing of theirs leaks.
	if err := d.cleanupLocked(ctx, p); err != nil && ctx.Err() == nil {
		d.opts.Logger.Warn("orphan cleanup after the claim", "topic", p.topic, "partition", p.partition, "err", err)
	}
	return true
}

// SharedClusterID returns the cluster id of a prefix already shared by a
// cluster ("" when the marker is absent or a single node owns the
// prefix): a cluster whose metadata has no id yet (a first start against
// an existing cluster's bucket, or a single node's prefix converted by
// ClaimShared) takes this one, so its nodes can open the prefix.
func SharedClusterID(ctx context.Context, b cold.Bucket) (string, error) {
	m, _, found, err := readMarker(ctx, b)
	if err != nil || !found || !m.Shared {
		return "", err
	}
	return m.ClusterID, nil
}

// ClaimShared converts, before the node joins its cluster, the prefix a
// single node owned (its data directory's cluster id) into the cluster's
// shared prefix under that id, fencing the single node off: an upgrade of
// a single node into a cluster, asked for with --takeover. A prefix that
// is shared already is left as it is.
func ClaimShared(ctx context.Context, b cold.Bucket, dataDir string, logger *slog.Logger) (string, error) {
	id, err := LocalClusterID(dataDir)
	if err != nil || id == "" {
		return "", err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if _, err := openShared(ctx, b, dataDir, StoreOptions{ClusterID: id, Takeover: true, Logger: logger}); err != nil {
		return "", err
	}
	return id, nil
}
