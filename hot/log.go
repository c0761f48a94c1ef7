package hot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tierlog/tierlog/internal/fileutil"
)

const recoveryPointFile = "recovery-point"

// position is a point in the log: the next offset and where it lives. The
// visible position bounds what readers see.
type position struct {
	offset int64
	seg    *segment
	pos    int64
}

// Log is one partition's local log: an ordered list of segments, the last of
// which (the active segment) takes appends.
type Log struct {
	dir  string
	cfg  Config
	opts Options
	m    *partitionMetrics

	mu       sync.RWMutex
	segments []*segment
	active   *segment
	next     int64      // next offset to assign
	written  *position  // end of the last write
	seq      uint64     // appends written so far; group commit waits on it
	dirty    []*segment // written since their last fsync; never a sealed segment
	toSeal   []*segment
	unsynced int64 // records written since the last fsync (flush.messages)
	failed   error
	closed   bool
	// truncations counts TruncateTo's cuts: an fsync that began before
	// one must not publish the end it captured, which is gone.
	truncations uint64
	// structMu orders the changes to the segment list other than appends
	// and rolls: sealing (with the recovery point and producer snapshots
	// it writes) and retention share it (read lock: they touch different
	// segments, so retention never waits for a seal's fsync); truncation
	// and Close's final seal take it alone. Never taken while holding mu.
	structMu sync.RWMutex
	// producers is the idempotent producers' state (producers.go);
	// snapshotted says a .producers snapshot exists in dir.
	producers   *producerTable
	snapshotted bool
	// epochs is the leader epoch cache (epochs.go); epochFileMu orders
	// writers of its checkpoint.
	epochs      epochCache
	epochFileMu sync.Mutex

	visible atomic.Pointer[position] // what readers may see
	// sealedEnd is the next offset of the newest sealed segment (0: none),
	// so the tiering daemon can tell without a lock or an allocation
	// whether a partition has anything new to upload.
	sealedEnd atomic.Int64
	notify    atomic.Pointer[chan struct{}] // closed when visible moves
	hw        highWater                     // consumers' bound under Options.Replicated (highwater.go)

	gc groupCommit

	// Background work (sealing, interval flush, age roll, retention) runs
	// on a scheduler shared with other logs; slot and bg belong to it.
	sched    *Scheduler
	ownSched bool // a private scheduler, closed with the log
	slot     schedSlot
	bg       bgState
	stop     chan struct{} // closed by Close: wakes Wait

	// maxRelOffset bounds next offset - active segment base (see
	// offsetsOverflowLocked); maxRelativeOffset except in tests.
	maxRelOffset int64
}

// Open opens or creates the log in dir, recovering its tail: segments not
// known to be durable (after the recovery point) are scanned batch by batch,
// and the first torn or corrupt batch and everything after it is removed.
func Open(dir string, cfg Config, opts Options) (*Log, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts.fill()
	if err := fileutil.MkdirAllDurable(dir); err != nil {
		return nil, err
	}
	l := &Log{dir: dir, cfg: cfg, opts: opts, maxRelOffset: maxRelativeOffset, stop: make(chan struct{})}
	l.m = opts.Metrics.forPartition(opts.Topic, opts.Partition)
	l.gc.init()
	ch := make(chan struct{})
	l.notify.Store(&ch)
	l.hw.init()
	if err := l.load(); err != nil {
		for _, s := range l.segments {
			s.close()
		}
		return nil, err
	}
	l.publishLocked()
	l.loadHighWatermark()
	l.updateGauges()
	if err := l.startBackground(); err != nil {
		for _, s := range l.segments {
			s.close()
		}
		return nil, err
	}
	return l, nil
}

// SetConfig changes the configuration of an open log (topic config change).
func (l *Log) SetConfig(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	l.mu.Lock()
	l.cfg = cfg
	l.mu.Unlock()
	l.sched.kick(l) // replan the interval flush
	return nil
}

func readRecoveryPoint(dir string) int64 {
	b, err := os.ReadFile(filepath.Join(dir, recoveryPointFile))
	if err != nil {
		return 0
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

func (l *Log) writeRecoveryPoint(off int64) error {
	return fileutil.WriteFileAtomic(filepath.Join(l.dir, recoveryPointFile), []byte(strconv.FormatInt(off, 10)+"\n"), 0o644)
}

// CorruptionError reports damage in data the log had already made durable
// (before the recovery point). The log refuses to open rather than drop
// acknowledged records; an operator must decide.
type CorruptionError struct {
	Segment string
	Offset  int64 // first offset that cannot be read
	Cause   error
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("hot: %s: corruption at offset %d, below the recovery point (data that was fsynced and acknowledged): %v", e.Segment, e.Offset, e.Cause)
}

func (e *CorruptionError) Unwrap() error { return e.Cause }

func (l *Log) load() error {
	// A full truncation a crash interrupted is finished first.
	if err := l.finishTruncateFully(); err != nil {
		return err
	}
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return err
	}
	var bases []int64
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), ".tmp") {
			os.Remove(filepath.Join(l.dir, e.Name())) // an interrupted atomic write
			continue
		}
		if b, ok := parseSegmentName(e.Name()); ok {
			bases = append(bases, b)
		}
	}
	slices.Sort(bases)
	rp := readRecoveryPoint(l.dir)
	for i, base := range bases {
		if n := len(l.segments); n > 0 && base < l.segments[n-1].next {
			// Two writers appended into one directory (or a segment was
			// copied in): the same offsets would be served twice.
			prev := l.segments[n-1]
			return fmt.Errorf("%w: %s holds offsets %d to %d but %s starts at %d; one directory holds two logs (two writers?): move one segment out after checking which holds the acknowledged records",
				ErrOverlappingSegments, prev.logPath(), prev.base, prev.next-1, segmentPrefix(l.dir, base)+".log", base)
		}
		if n := len(l.segments); n > 0 && base > l.segments[n-1].next {
			// Retention deletes from the front and recovery drops whole
			// tails, so a hole means a segment file went missing: reads in
			// it would return nothing for ever and stall every consumer.
			prev := l.segments[n-1]
			return fmt.Errorf("%w: %s ends before offset %d but the next segment, %s, starts at %d: offsets %d to %d are missing (a segment file deleted by hand?); restore it, or move the later segments out (the log then ends at offset %d)",
				ErrSegmentGap, prev.logPath(), prev.next, segmentPrefix(l.dir, base)+".log", base, prev.next, base-1, prev.next)
		}
		s, err := l.openSegment(base, false)
		if err != nil {
			return err
		}
		l.segments = append(l.segments, s)
		last := i == len(bases)-1
		if ierr := s.loadIndexes(); ierr == nil && s.next <= rp {
			s.rolled, s.sealed = !last, !last
			continue
		} else if ierr != nil && !os.IsNotExist(ierr) && s.base < rp {
			l.opts.Logger.Warn("stale index, rebuilding", "segment", s.logPath(), "reason", ierr)
		}
		res, err := s.scanRecover(l.cfg.IndexIntervalBytes)
		if err != nil {
			return err
		}
		l.opts.Logger.Info("recovered segment by scanning", "segment", s.logPath(), "recovery_point", rp,
			"valid_bytes", res.validEnd, "next_offset", res.next)
		if res.cause != nil {
			if res.next < rp {
				return &CorruptionError{Segment: s.logPath(), Offset: res.next, Cause: res.cause}
			}
			l.opts.Logger.Warn("truncating torn or corrupt log tail", "segment", s.logPath(),
				"at", res.validEnd, "bytes_removed", res.fileSize-res.validEnd, "next_offset", res.next, "reason", res.cause)
			if err := s.f.Truncate(res.validEnd); err != nil {
				return fmt.Errorf("hot: truncate %s: %w", s.logPath(), err)
			}
			// Later segments would leave a gap in the offsets: they go too.
			for _, b := range bases[i+1:] {
				l.opts.Logger.Warn("removing segment after truncated tail", "segment", segmentPrefix(l.dir, b)+".log")
				if err := removeSegmentFiles(segmentPrefix(l.dir, b)); err != nil {
					return err
				}
			}
			bases = bases[:i+1]
			last = true
		}
		if !last {
			// A scanned segment that rolled before the crash: make it
			// durable and seal it now.
			if err := l.sealSegment(s); err != nil {
				return err
			}
			s.rolled = true
		}
		if last {
			break
		}
	}
	if len(l.segments) == 0 {
		s, err := l.openSegment(max(rp, l.opts.InitialOffset), true)
		if err != nil {
			return err
		}
		l.segments = append(l.segments, s)
	}
	l.active = l.segments[len(l.segments)-1]
	l.active.rolled, l.active.sealed = false, false
	if len(l.segments) > 1 { // every segment before the active one is sealed now
		l.sealedEnd.Store(l.active.base)
	}
	l.next = l.active.next
	// Whatever recovery kept is now made durable, so the recovery point can
	// move to the log end.
	if err := l.active.f.Sync(); err != nil {
		return fmt.Errorf("hot: fsync %s: %w", l.active.logPath(), err)
	}
	if err := fileutil.SyncDir(l.dir); err != nil {
		return err
	}
	l.written = &position{offset: l.next, seg: l.active, pos: l.active.size}
	if err := l.loadProducers(); err != nil {
		return err
	}
	if err := l.loadEpochs(); err != nil {
		return err
	}
	return l.writeRecoveryPoint(l.next)
}

// openSegment opens (or, with create, creates) the .log file of a segment.
func (l *Log) openSegment(base int64, create bool) (*segment, error) {
	s := &segment{base: base, prefix: segmentPrefix(l.dir, base), next: base, maxTs: -1, created: l.opts.Now()}
	flag := os.O_RDWR | os.O_APPEND
	if create {
		flag |= os.O_CREATE | os.O_EXCL
	}
	f, err := l.opts.OpenFile(s.logPath(), flag, 0o644)
	if err != nil {
		return nil, fmt.Errorf("hot: open segment: %w", err)
	}
	s.f = f
	if create {
		if err := fileutil.SyncDir(l.dir); err != nil {
			// Leave no empty file behind: a retried roll creates it again.
			f.Close()
			os.Remove(s.logPath())
			return nil, err
		}
	}
	return s, nil
}

// sealSegment fsyncs a rolled segment and writes its index files. After
// this the segment never changes. The caller must not hold l.mu.
func (l *Log) sealSegment(s *segment) error {
	if err := l.timedSync(s); err != nil {
		return err
	}
	l.mu.Lock()
	// A rolled segment takes no more writes, so this fsync covers it for
	// good: it leaves the flush list, which otherwise would fsync it again
	// (after retention closed it) or, under flush.policy=os, grow forever.
	s.durable = true
	l.dirty = slices.DeleteFunc(l.dirty, func(d *segment) bool { return d == s })
	s.closeIndex()
	x := indexes{offsets: s.idx.offsets, times: s.idx.times}
	l.mu.Unlock()
	if err := x.write(s.prefix); err != nil {
		return fmt.Errorf("hot: write index of %s: %w", s.logPath(), err)
	}
	l.mu.Lock()
	snap := s.producers
	s.producers = nil
	l.mu.Unlock()
	if snap != nil {
		// The producer state at the segment's end, taken at its roll:
		// written once the segment is durable, so it never describes
		// batches a crash could lose.
		if err := l.writeProducerSnapshot(s.next, snap); err != nil {
			return err
		}
	}
	l.mu.Lock()
	s.sealed = true
	if s.next > l.sealedEnd.Load() {
		l.sealedEnd.Store(s.next)
	}
	l.mu.Unlock()
	if l.opts.OnSealed != nil {
		l.opts.OnSealed()
	}
	return nil
}

// publishLocked makes everything written visible to readers (the policies
// that acknowledge before fsync) and wakes waiting readers.
func (l *Log) publishLocked() { l.publish(l.written) }

func (l *Log) publish(p *position) {
	for {
		cur := l.visible.Load()
		if cur != nil && cur.offset >= p.offset {
			return
		}
		if l.visible.CompareAndSwap(cur, p) {
			break
		}
	}
	ch := make(chan struct{})
	old := l.notify.Swap(&ch)
	close(*old)
}

// fail makes the log refuse appends until it is reopened. Called with mu held.
func (l *Log) failLocked(err error) error {
	if l.failed == nil {
		l.failed = err
		l.opts.Logger.Error("log failed; appends refused until restart", "err", err)
	}
	return fmt.Errorf("%w: %v", ErrLogFailed, l.failed)
}

func (l *Log) updateGauges() {
	l.mu.RLock()
	n, start := len(l.segments), l.segments[0].base
	l.mu.RUnlock()
	l.m.segments.Set(float64(n))
	l.m.startOffset.Set(float64(start))
	l.m.endOffset.Set(float64(l.visible.Load().offset))
	l.m.highWatermark.Set(float64(l.HighWatermark()))
}

// Close takes the log off its scheduler, fsyncs and seals what is pending,
// writes the active segment's indexes and moves the recovery point to the
// log end, so the next open needs no scan.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true // from here on no append starts
	seq := l.seq
	l.mu.Unlock()
	l.stopBackground()
	var errs []error
	l.mu.RLock()
	failed := l.failed
	l.mu.RUnlock()
	if failed == nil {
		// The final fsync goes through the group commit: it waits for an
		// fsync in flight, and the appends waiting on that one are released
		// by this one. Fsyncing on the side and closing the files made
		// their own fsync hit a closed file, and appends whose bytes Close
		// had made durable were reported failed (and retried: duplicates).
		if err := l.syncTo(seq); err != nil {
			errs = append(errs, err)
		}
	}
	l.structMu.Lock()
	defer l.structMu.Unlock()
	l.mu.Lock()
	failed, pending, a := l.failed, l.toSeal, l.active
	l.toSeal = nil
	l.mu.Unlock()
	if failed == nil {
		for _, s := range pending {
			errs = append(errs, l.sealSegment(s))
		}
		l.mu.Lock()
		a.closeIndex()
		x := indexes{offsets: a.idx.offsets, times: a.idx.times}
		next := l.next
		snap := l.producerSnapshotLocked()
		l.mu.Unlock()
		if err := x.write(a.prefix); err != nil {
			errs = append(errs, err)
		} else if errors.Join(errs...) == nil {
			errs = append(errs, l.writeRecoveryPoint(next))
		}
		if snap != nil && errors.Join(errs...) == nil {
			// So the next Open replays no headers.
			errs = append(errs, l.writeProducerSnapshot(next, snap))
		}
		errs = append(errs, l.saveHighWatermark())
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.segments {
		errs = append(errs, s.close())
	}
	return errors.Join(errs...)
}

// Delete closes the log and removes its directory.
func (l *Log) Delete() error {
	l.Close()
	l.opts.Metrics.drop(l.opts.Topic, l.opts.Partition)
	if err := os.RemoveAll(l.dir); err != nil {
		return err
	}
	return fileutil.SyncDir(filepath.Dir(l.dir))
}

// Dir is the log's directory.
func (l *Log) Dir() string { return l.dir }
