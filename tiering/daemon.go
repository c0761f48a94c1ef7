package tiering

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/hot"
)

// DaemonOptions configure the tiering daemon.
type DaemonOptions struct {
	// Concurrency bounds partitions uploading at once (default 2).
	Concurrency int
	// UploadBytesPerSec caps upload bandwidth so tiering cannot starve
	// producers of disk and network; 0 is unlimited.
	UploadBytesPerSec int64
	// Interval between passes over the partitions (default 1s). A pass
	// costs no bucket request for a partition with nothing to do.
	Interval time.Duration
	// CleanupInterval between orphan and stale-multipart sweeps (default
	// 1h); one also runs at start.
	CleanupInterval time.Duration
	// StaleMultipart: incomplete multipart uploads older than this are
	// aborted (default 1h).
	StaleMultipart time.Duration
	// ChunkBytes of the remote segment format (default 4 MiB).
	ChunkBytes int
	// LocalDiskMaxBytes is the node's local-disk ceiling: once the local
	// segments of all its partitions hold this many bytes, producers are
	// refused with a retriable *LocalDiskFullError until uploads and local
	// retention bring them below it. <= 0: no ceiling.
	LocalDiskMaxBytes int64
	// Signer signs the checkpoints of the partitions' Merkle trees (see
	// tree.go); its public key is written to the bucket before the first
	// one. Nil: no tree is built (segments carry no tree size and root).
	Signer *audit.Key
	// LockRetry is how long a deletion that Object Lock refused without
	// saying until when (a legal hold) waits before it is tried again
	// (default 10m).
	LockRetry time.Duration
	// TmpDir holds objects being built before upload.
	TmpDir   string
	Backoff  Backoff
	Logger   *slog.Logger
	Registry prometheus.Registerer
	Now      func() time.Time
}

// Daemon moves sealed segments to the bucket, enforces total retention on
// remote segments and cleans up what failed attempts left behind.
type Daemon struct {
	store   *Store
	opts    DaemonOptions
	limiter *rate.Limiter
	m       *daemonMetrics

	mu       sync.Mutex
	parts    map[*Partition]struct{}
	wake     chan struct{}
	refusing int // partitions refusing produce, as of the last checkDisk

	disk    nodeDisk
	checkMu sync.Mutex // serialises checkDisk

	keyPut atomic.Bool // the signer's public key is in the bucket

	stop chan struct{}
	done chan struct{}
}

// NewDaemon returns a daemon for store; Start runs it.
func NewDaemon(store *Store, o DaemonOptions) *Daemon {
	if o.Concurrency <= 0 {
		o.Concurrency = 2
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.CleanupInterval <= 0 {
		o.CleanupInterval = time.Hour
	}
	if o.StaleMultipart <= 0 {
		o.StaleMultipart = time.Hour
	}
	if o.LockRetry <= 0 {
		o.LockRetry = 10 * time.Minute
	}
	if o.ChunkBytes <= 0 {
		o.ChunkBytes = 4 << 20
	}
	if o.Backoff.Attempts <= 0 {
		o.Backoff = defaultBackoff
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	d := &Daemon{store: store, opts: o, m: newDaemonMetrics(o.Registry), parts: map[*Partition]struct{}{},
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	d.disk.limit = o.LocalDiskMaxBytes
	if o.UploadBytesPerSec > 0 {
		d.limiter = rate.NewLimiter(rate.Limit(o.UploadBytesPerSec), int(min(o.UploadBytesPerSec, 1<<20)))
	}
	return d
}

// Add puts a partition under the daemon's care.
func (d *Daemon) Add(p *Partition) {
	d.mu.Lock()
	d.parts[p] = struct{}{}
	d.mu.Unlock()
	p.node.Store(&d.disk)
	p.daemon.Store(d)
	d.Wake()
}

// Remove takes a partition away (topic deleted), waiting for a pass in
// progress on it to finish. Once it returns, no pass or sweep touches the
// bucket for p - not even one that listed p before the removal - so a
// deletion that lists the bucket after Remove sees every object p has.
func (d *Daemon) Remove(p *Partition) {
	d.mu.Lock()
	delete(d.parts, p)
	d.mu.Unlock()
	p.daemon.Store(nil)
	p.tierMu.Lock()
	p.removed = true
	p.tierMu.Unlock()
	p.notify()
}

// Wake asks for a pass now (a segment was sealed, a test wants progress).
func (d *Daemon) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Start runs the daemon until Close.
func (d *Daemon) Start() {
	if d.opts.TmpDir != "" {
		os.RemoveAll(d.opts.TmpDir) // objects half-built before a restart
		os.MkdirAll(d.opts.TmpDir, 0o755)
	}
	go d.run()
}

// Close stops the daemon, cancelling uploads in flight; their manifest
// entries stay copy_started and are cleaned at the next start.
func (d *Daemon) Close() {
	close(d.stop)
	<-d.done
	for _, p := range d.partitions() {
		p.notify() // WaitUploaded ends: nothing uploads any more
	}
}

// stopped reports whether Close has begun.
func (d *Daemon) stopped() bool {
	select {
	case <-d.stop:
		return true
	default:
		return false
	}
}

func (d *Daemon) run() {
	defer close(d.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-d.stop
		cancel()
	}()
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		d.watchDisk(ctx)
	}()
	defer func() { cancel(); <-watching }()
	if d.opts.Signer != nil && d.store.Fenced() == nil {
		// Published at start, so a verifier finds it before any checkpoint;
		// the first upload tries again if this fails.
		if err := d.putKey(ctx); err != nil && ctx.Err() == nil {
			d.opts.Logger.Warn("write the signing key's public key to the bucket", "err", err)
		}
	}
	tick := time.NewTicker(d.opts.Interval)
	defer tick.Stop()
	lastCleanup := time.Time{}
	for {
		if time.Since(lastCleanup) >= d.opts.CleanupInterval {
			d.cleanupAll(ctx)
			lastCleanup = time.Now()
		}
		d.pass(ctx)
		select {
		case <-d.stop:
			return
		case <-tick.C:
		case <-d.wake:
		}
	}
}

// watchDisk checks the local-disk ceilings every interval, on its own: a
// pass can spend minutes retrying uploads to a bucket that is down, which
// is exactly when the ceiling matters.
func (d *Daemon) watchDisk(ctx context.Context) {
	tick := time.NewTicker(d.opts.Interval)
	defer tick.Stop()
	for {
		d.checkDisk()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (d *Daemon) partitions() []*Partition {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*Partition, 0, len(d.parts))
	for p := range d.parts {
		out = append(out, p)
	}
	return out
}

// pass tiers every partition once, Concurrency at a time.
func (d *Daemon) pass(ctx context.Context) {
	sem := make(chan struct{}, d.opts.Concurrency)
	var wg sync.WaitGroup
	for _, p := range d.partitions() {
		if !p.needsPass() {
			continue // an idle partition costs no goroutine and no allocation
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			d.tier(ctx, p)
		}()
	}
	wg.Wait()
}

// needsPass reports whether a tiering pass has anything to do for p: a
// sealed segment past the committed ones, a manifest version not yet
// copied to the bucket, a remote deletion to finish, or total retention to
// evaluate. It reads atomics and scans the manifest under a read lock.
func (p *Partition) needsPass() bool {
	if p.shared() {
		p.mu.RLock()
		l, stopped := p.lead, p.stopped
		p.mu.RUnlock()
		if !l.leader || stopped != nil {
			return false // a follower, or fenced: no request spent on it
		}
		if p.claimed.Load() != l.gen {
			return true
		}
	}
	if p.remoteOn.Load() && p.log.SealedEnd() > p.uploaded.Load() {
		return true
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.m.Version > p.copied || p.retention.Age > 0 || p.retention.Bytes >= 0 || p.holdPending() || p.treeBehind() {
		return true
	}
	for _, s := range p.m.Segments {
		if s.State == DeleteStarted {
			return true
		}
	}
	return false
}

// tier uploads a partition's sealed segments in offset order, then applies
// remote retention and brings the bucket's manifest copy up to date.
func (d *Daemon) tier(ctx context.Context, p *Partition) {
	if d.store.Fenced() != nil {
		return // another node owns the prefix; the store logged why
	}
	if !p.tierMu.TryLock() {
		return
	}
	defer p.tierMu.Unlock()
	if p.removed {
		return
	}
	if !d.lead(ctx, p) {
		return
	}
	p.mu.RLock()
	remote := p.remote
	p.mu.RUnlock()
	urgent := false
	if t := p.urgentTo.Load(); t > 0 && p.log.SealedEnd() >= t {
		p.urgentTo.CompareAndSwap(t, 0) // a later, higher target stays
		urgent = true
	}
	if now := time.Now(); remote && (urgent || !now.Before(p.retryAt)) {
		if s, err := d.uploadPending(ctx, p); errors.Is(err, ErrNotLeader) {
			return // another leader has the partition (logged when it was found)
		} else if err != nil {
			d.m.uploads.WithLabelValues("failed").Inc()
			// Back off this partition (the retries inside upload are
			// spent): 1s, 2s, 4s ... up to a minute between passes.
			p.failures++
			wait := min(time.Minute, d.opts.Interval<<min(p.failures-1, 6))
			p.retryAt = now.Add(wait)
			if ctx.Err() == nil {
				d.opts.Logger.Warn("upload failed; will retry", "topic", p.topic, "partition", p.partition,
					"segment", s.BaseOffset, "retry_in", wait, "err", err)
			}
		}
	}
	if err := d.applyLegalHold(ctx, p); err != nil && ctx.Err() == nil && !errors.Is(err, ErrNotLeader) {
		d.opts.Logger.Warn("apply legal hold", "topic", p.topic, "partition", p.partition, "err", err)
	}
	if err := d.applyRetention(ctx, p); errors.Is(err, ErrNotLeader) {
		return
	} else if err != nil && ctx.Err() == nil {
		d.opts.Logger.Warn("remote retention", "topic", p.topic, "partition", p.partition, "err", err)
	}
	if err := d.copyManifest(ctx, p); err != nil && ctx.Err() == nil && !errors.Is(err, ErrNotLeader) {
		d.opts.Logger.Warn("copy manifest to bucket", "topic", p.topic, "partition", p.partition, "err", err)
	}
}

// pending lists sealed local segments not yet committed remotely.
func (d *Daemon) pending(p *Partition) []hot.SegmentInfo {
	p.mu.RLock()
	done := p.m.uploadedUpTo()
	p.mu.RUnlock()
	var out []hot.SegmentInfo
	for _, s := range p.log.SealedSegments() {
		if s.BaseOffset < done && s.NextOffset > done {
			// Begins below the manifest's end (a replica's segments are not
			// the previous leader's): only the rest is uploaded.
			s.BaseOffset = done
		}
		if s.BaseOffset >= done && s.NextOffset > s.BaseOffset {
			out = append(out, s)
		}
	}
	return out
}

// built is a segment's object, built ahead of its upload.
type built struct {
	s   hot.SegmentInfo
	id  string
	obj *object
	err error
}

// uploadPending uploads a partition's pending segments in offset order,
// building the next object while the previous one uploads (building is
// local CPU work, uploading mostly waiting on the network). It stops at the
// first failure - offsets stay in order: that segment is retried first -
// and returns the segment that failed.
func (d *Daemon) uploadPending(ctx context.Context, p *Partition) (hot.SegmentInfo, error) {
	pending := d.pending(p)
	if len(pending) == 0 {
		// Nothing to upload: committed segments the tree does not cover
		// (tiered before this node signed, an adopted attempt) get it now,
		// so an idle partition's history is signed too.
		return hot.SegmentInfo{}, d.coverTree(ctx, p)
	}
	bctx, cancel := context.WithCancel(ctx)
	ahead := make(chan built, 1)
	go func() {
		defer close(ahead)
		for _, s := range pending {
			b := built{s: s, id: newID()}
			b.obj, b.err = d.build(p, s, b.id)
			select {
			case ahead <- b:
			case <-bctx.Done():
				b.discard()
				return
			}
			if b.err != nil {
				return
			}
		}
	}()
	defer func() {
		cancel()
		for b := range ahead { // objects built for uploads that will not happen
			b.discard()
		}
	}()
	for b := range ahead {
		if b.err == nil && ctx.Err() != nil {
			b.err = ctx.Err()
		}
		if b.err == nil {
			b.err = d.upload(ctx, p, b)
		}
		b.discard()
		if b.err != nil {
			return b.s, b.err
		}
		p.failures = 0
	}
	return hot.SegmentInfo{}, nil
}

func (b built) discard() {
	if b.obj != nil {
		os.Remove(b.obj.path)
	}
}

// upload moves one built segment to the bucket: announce the attempt in the
// manifest, upload the object under the attempt's unique key, verify it,
// then commit. A failure after the announcement withdraws it; the object
// (if any) is an orphan for the next sweep.
func (d *Daemon) upload(ctx context.Context, p *Partition, b built) (err error) {
	start := time.Now()
	s, id, obj := b.s, b.id, b.obj
	epoch := p.passLead.epoch // 0 on a single node's prefix
	entry := RemoteSegment{BaseOffset: s.BaseOffset, NextOffset: s.NextOffset, ID: id, LeaderEpoch: epoch,
		Epochs: segmentEpochs(obj.footer), Key: segmentKey(p.topic, p.partition, s.BaseOffset, epoch, id), State: CopyStarted}
	if err := p.commit(func(m *Manifest) { m.Segments = append(m.Segments, entry) }); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			if werr := p.commit(func(m *Manifest) { m.removeID(id) }); werr != nil {
				err = errors.Join(err, werr)
			}
		}
	}()

	// The segment's tiles are written while its object uploads (see
	// appendTree); its checkpoint only once the object is verified.
	var tree chan error
	if obj.leaves != nil {
		tree = make(chan error, 1)
		tctx, cancel := context.WithCancel(ctx)
		go func() { tree <- d.appendTree(tctx, p, obj.leaves) }()
		defer func() {
			cancel()
			if tree != nil {
				<-tree
			}
		}()
	}
	attrs, err := d.putObject(ctx, p, entry.Key, obj)
	if err != nil {
		return err
	}
	if err := d.verify(ctx, entry.Key, attrs.VersionID, obj); err != nil {
		return err
	}
	if p.testHookUploaded != nil {
		p.testHookUploaded()
	}
	if tree != nil {
		err := <-tree
		tree = nil
		if err == nil {
			err = d.checkpoint(ctx, p, &entry)
		}
		if err != nil {
			return err
		}
	}
	entry.State = CopyFinished
	entry.Size, entry.RawSize, entry.Chunks, entry.SHA256 = obj.size, obj.raw, len(obj.footer.Chunks), obj.sha256
	entry.FirstTimestamp, entry.MaxTimestamp = obj.footer.FirstTimestamp, obj.footer.MaxTimestamp
	entry.ETag, entry.VersionID, entry.RetainUntil = attrs.ETag, attrs.VersionID, attrs.RetainUntil
	entry.UploadedAt = d.opts.Now().UTC()
	// The bucket's manifest copy names the segment before the node acts on
	// the commit (reads, local deletion): see commitDurable.
	if err := p.commitDurable(ctx, func(m *Manifest) { m.replace(entry) }); err != nil {
		return err
	}
	d.dropPartials(ctx, p)
	d.m.uploads.WithLabelValues("ok").Inc()
	d.m.uploadBytes.Add(float64(obj.size))
	d.m.uploadRawBytes.Add(float64(obj.raw))
	d.m.uploadSeconds.Observe(time.Since(start).Seconds())
	d.opts.Logger.Info("segment uploaded", "topic", p.topic, "partition", p.partition, "base_offset", s.BaseOffset,
		"next_offset", s.NextOffset, "key", entry.Key, "bytes", obj.size, "raw_bytes", obj.raw, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// put uploads the built object under the rate limit, retrying what
// cold.IsRetryable calls transient.
func (d *Daemon) put(ctx context.Context, key string, obj *object) (cold.Attributes, error) {
	return d.putObject(ctx, nil, key, obj)
}

// putObject is put of one of p's objects, under p's Object Lock (nil p:
// none).
func (d *Daemon) putObject(ctx context.Context, p *Partition, key string, obj *object) (cold.Attributes, error) {
	var attrs cold.Attributes
	err := retryWith(ctx, d.opts.Backoff, func(err error) {
		d.m.retries.WithLabelValues("put").Inc()
		d.opts.Logger.Debug("retrying upload", "key", key, "err", err)
	}, func() error {
		f, err := os.Open(obj.path)
		if err != nil {
			return err
		}
		defer f.Close()
		var r io.Reader = f
		if d.limiter != nil {
			r = &limitedReader{ctx: ctx, r: f, l: d.limiter}
		}
		attrs, err = d.uploadObject(ctx, p, key, r, obj.size)
		return err
	})
	if err != nil {
		return attrs, fmt.Errorf("upload %s to %s: %w", key, d.store.Bucket.Name(), err)
	}
	return attrs, nil
}

// verify checks the stored object before the manifest may name it: its size
// and its footer, read back from the bucket (the version the upload made,
// which the manifest records), must be what was built.
func (d *Daemon) verify(ctx context.Context, key, version string, obj *object) error {
	return retryWith(ctx, d.opts.Backoff, func(error) { d.m.retries.WithLabelValues("verify").Inc() }, func() error {
		a, err := d.store.Bucket.Attributes(ctx, key)
		if err != nil {
			return err
		}
		if a.Size != obj.size {
			return fmt.Errorf("verify %s: stored %d bytes, uploaded %d", key, a.Size, obj.size)
		}
		return obj.verifyFooter(ctx, d.store.Bucket, cold.SegmentRef{Key: key, Size: obj.size, VersionID: version})
	})
}

// copyManifest uploads the current manifest version to the bucket if it is
// newer than the last copy (changes that need not reach the bucket first:
// announcements, withdrawals, finished deletes).
func (d *Daemon) copyManifest(ctx context.Context, p *Partition) error {
	m := p.Manifest()
	p.mu.RLock()
	copied := p.copied
	p.mu.RUnlock()
	if m.Version <= copied {
		return nil
	}
	if err := p.putManifestCopy(ctx, m); err != nil {
		return err
	}
	p.mu.Lock()
	p.copied = max(p.copied, m.Version)
	p.mu.Unlock()
	return nil
}

// applyRetention deletes remote segments past total retention, oldest
// first: raise the log start and mark delete_started, delete the object,
// drop the entry.
func (d *Daemon) applyRetention(ctx context.Context, p *Partition) error {
	p.mu.RLock()
	r := p.retention
	m := p.m.clone()
	p.mu.RUnlock()
	if r.Age <= 0 && r.Bytes < 0 {
		return d.finishDeletes(ctx, p)
	}
	now := d.opts.Now()
	total := int64(0)
	committed := m.committed()
	for _, s := range committed {
		total += s.RawSize
	}
	local := p.log.Segments()
	for _, s := range local {
		if s.BaseOffset >= m.uploadedUpTo() {
			total += s.Size
		}
	}
	var victims []RemoteSegment
	for _, s := range committed {
		byAge := r.Age > 0 && s.MaxTimestamp >= 0 && now.UnixMilli()-s.MaxTimestamp > r.Age.Milliseconds()
		bySize := r.Bytes >= 0 && total-s.RawSize >= r.Bytes
		if (!byAge && !bySize) || d.lockedNow(p, s, now) {
			break
		}
		victims = append(victims, s)
		total -= s.RawSize
	}
	if len(victims) > 0 {
		last := victims[len(victims)-1]
		if size, _ := m.treeSize(); last.NextOffset > size {
			// Segments the tree has not covered: cover them first, or
			// their leaves would be absent in the tree the next upload
			// builds (see coverTree).
			if err := d.coverTree(ctx, p); err != nil {
				return err
			}
		}
		err := p.commitDurable(ctx, func(m *Manifest) {
			m.LogStartOffset = max(m.LogStartOffset, last.NextOffset)
			for i := range m.Segments {
				if m.Segments[i].NextOffset <= last.NextOffset && m.Segments[i].State == CopyFinished {
					m.Segments[i].State = DeleteStarted
				}
			}
		})
		if err != nil {
			return err
		}
		d.opts.Logger.Info("remote retention", "topic", p.topic, "partition", p.partition, "segments", len(victims), "log_start_offset", last.NextOffset)
	}
	return d.finishDeletes(ctx, p)
}

// finishDeletes deletes the objects of delete_started entries and drops
// them from the manifest.
func (d *Daemon) finishDeletes(ctx context.Context, p *Partition) error {
	m := p.Manifest()
	for _, s := range m.Segments {
		if s.State != DeleteStarted {
			continue
		}
		if done, err := d.deleteSegment(ctx, p, s); err != nil {
			return err
		} else if !done {
			continue // Object Lock holds it: retried after its date
		}
		d.m.deletes.Inc()
		if err := p.commit(func(m *Manifest) { m.removeID(s.ID) }); err != nil {
			return err
		}
	}
	return nil
}

func (m *Manifest) removeID(id string) {
	for i, s := range m.Segments {
		if s.ID == id {
			m.Segments = append(m.Segments[:i], m.Segments[i+1:]...)
			return
		}
	}
}

// replace puts e in place of the entry with its ID; a tree size e records
// past the manifest's becomes the manifest's.
func (m *Manifest) replace(e RemoteSegment) {
	if e.TreeSize > m.TreeSize {
		m.TreeSize, m.TreeRoot = e.TreeSize, e.TreeRoot
	}
	for i, s := range m.Segments {
		if s.ID == e.ID {
			m.Segments[i] = e
			return
		}
	}
}

// limitedReader paces reads through a rate limiter.
type limitedReader struct {
	ctx context.Context
	r   io.Reader
	l   *rate.Limiter
}

func (lr *limitedReader) Read(b []byte) (int, error) {
	if len(b) > lr.l.Burst() {
		b = b[:lr.l.Burst()]
	}
	n, err := lr.r.Read(b)
	if n > 0 {
		if werr := lr.l.WaitN(lr.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}

// tmpPath names the file an object is built in.
func (d *Daemon) tmpPath(id string) string {
	dir := d.opts.TmpDir
	if dir == "" {
		dir = os.TempDir()
	}
	return filepath.Join(dir, id+".seg")
}
