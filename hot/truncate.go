package hot

import (
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/tierlog/tierlog/internal/fileutil"
)

// ErrNotBatchBoundary refuses a truncation to an offset inside a batch:
// batches are stored whole, and a follower truncates to an epoch boundary,
// which is always a batch's base offset.
var ErrNotBatchBoundary = errors.New("hot: offset is not a batch boundary")

// TruncateTo removes every batch at and above offset: what a follower does
// to reach the epoch boundary its new leader gives it, so the two logs
// never diverge. The segments after the one holding offset are deleted,
// that one is cut at the batch starting at offset (ErrNotBatchBoundary if
// none does) and becomes the active segment again, its indexes trimmed;
// the recovery point, the producer state (as it was below offset: a retry
// is never answered with offsets that are gone), the leader epoch cache
// and a high watermark above offset (lowered to it, its checkpoint first)
// follow. Offset must lie in [start, end]; the end changes nothing.
//
// Readers racing it answer as before it or as after it (their offset out
// of range, or the new end), never with bytes of both. An append waiting
// for its fsync when its batch is cut away is still acknowledged: as in
// Kafka, truncation drops records a follower (or a deposed leader) holds
// but the new leader does not, so a caller must not run Append on a log it
// truncates.
//
// Crash safety: the recovery point is lowered to offset, and the epoch
// checkpoint cut, before any file changes; later segments go newest first
// and the cut segment is cut last, so a crash at any point leaves a log
// that is a prefix of the old one, which Open recovers (and a retry of
// TruncateTo finishes).
func (l *Log) TruncateTo(offset int64) error {
	l.structMu.Lock()
	defer l.structMu.Unlock()
	for {
		done, err := l.truncateTo(offset)
		if done || err != nil {
			return err
		}
	}
}

// truncateHook, if set (by crash tests), is called at each step of a
// truncation.
var truncateHook func(step string)

func truncateStep(step string) {
	if truncateHook != nil {
		truncateHook(step)
	}
}

// cutPoint is where a truncation cuts the segment at index i.
type cutPoint struct {
	i      int
	pos    int64 // file position of the batch starting at offset
	maxTs  int64 // largest batch max timestamp before it
	seq    uint64
	nsegs  int
	idxEnd int // offset index entries kept
}

// truncateTo makes one attempt; done false means an append raced it (the
// log changed between the steps) and the caller tries again.
func (l *Log) truncateTo(offset int64) (bool, error) {
	l.mu.RLock()
	cut, err := l.findCutLocked(offset)
	spans := l.spansLocked()
	end := l.next
	epochs := epochCache{entries: slices.Clone(l.epochs.entries)}
	l.mu.RUnlock()
	if err != nil || offset == end {
		return true, err
	}

	// Durable first: after a crash Open must scan from offset (whatever
	// the index files of the cut segment say), and the epoch checkpoint
	// must not name epochs that start at or after offset.
	if rp := readRecoveryPoint(l.dir); rp > offset {
		if err := l.writeRecoveryPoint(offset); err != nil {
			return true, err
		}
	}
	truncateStep("recovery-point")
	// Likewise the high watermark: a checkpoint above offset would, after
	// a crash and new appends, show consumers records never committed.
	if l.opts.Replicated && l.hw.saved.Load() > offset {
		if err := l.writeHighWatermark(offset); err != nil {
			return true, err
		}
	}
	l.epochFileMu.Lock()
	defer l.epochFileMu.Unlock()
	if epochs.truncateFromEnd(offset) {
		if err := l.writeEpochs(epochs.encode()); err != nil {
			return true, err
		}
	}
	truncateStep("epochs")
	// The producer state below offset, from files only: outside the lock.
	spans = spans[:cut.i+1]
	spans[cut.i].size, spans[cut.i].next = cut.pos, offset
	producers, snapshotted, _, _, err := l.buildProducers(spans, offset)
	if err != nil {
		return true, err
	}

	l.mu.Lock()
	if l.seq != cut.seq || len(l.segments) != cut.nsegs || l.segments[0] != spans[0].s {
		l.mu.Unlock() // an append or retention changed the log meanwhile
		return false, nil
	}
	if err := l.usableLocked(); err != nil {
		l.mu.Unlock()
		return true, err
	}
	s, later := l.segments[cut.i], slices.Clone(l.segments[cut.i+1:])
	// Readers of the cut segment that took their bounds before this
	// retry; readers of a deleted one too.
	s.truncations.Add(1)
	for _, d := range later {
		d.deleted.Store(true)
	}
	// Newest first, the cut last: a crash in between leaves a prefix of
	// the log, never a hole.
	var errs []error
	for _, d := range slices.Backward(later) {
		errs = append(errs, d.remove())
		truncateStep("segment-deleted")
	}
	// The cut segment's index files describe the old bytes; sealing
	// writes them again.
	for _, ext := range []string{".index", ".timeindex"} {
		if err := os.Remove(s.prefix + ext); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	if err := s.f.Truncate(cut.pos); err != nil {
		err = l.failLocked(fmt.Errorf("hot: truncate %s to %d bytes: %w", s.logPath(), cut.pos, err))
		l.mu.Unlock()
		return true, err
	}
	truncateStep("cut")
	s.size, s.next, s.maxTs = cut.pos, offset, cut.maxTs
	s.idx.offsets = s.idx.offsets[:cut.idxEnd]
	s.idx.times = slices.DeleteFunc(s.idx.times, func(e timeEntry) bool { return int64(e.rel) > offset-s.base })
	s.sinceIndex = 0
	if n := len(s.idx.offsets); n > 0 {
		s.sinceIndex = int(cut.pos - int64(s.idx.offsets[n-1].pos))
	}
	s.rolled, s.sealed, s.durable, s.producers = false, false, false, nil
	l.segments = l.segments[:cut.i+1]
	l.active = s
	gone := func(x *segment) bool { return x == s || x.deleted.Load() }
	l.toSeal = slices.DeleteFunc(l.toSeal, gone)
	l.dirty = slices.DeleteFunc(l.dirty, func(x *segment) bool { return x.deleted.Load() })
	sealedEnd := int64(0)
	for _, x := range l.segments {
		if x.sealed {
			sealedEnd = x.next
		}
	}
	l.sealedEnd.Store(sealedEnd)
	l.next = offset
	l.written = &position{offset: offset, seg: s, pos: cut.pos}
	l.truncations++
	l.visible.Store(l.written)
	ch := make(chan struct{})
	close(*l.notify.Swap(&ch))
	l.lowerHighWatermarkLocked(offset, false)
	l.producers = producers
	l.snapshotted = snapshotted
	l.epochs.truncateFromEnd(offset)
	l.mu.Unlock()

	truncateStep("unlocked")
	// The cut and the deletions made durable before the caller fetches
	// from offset again.
	if err := l.timedSync(s); err != nil {
		l.mu.Lock()
		err = l.failLocked(err)
		l.mu.Unlock()
		return true, err
	}
	errs = append(errs, fileutil.SyncDir(l.dir))
	l.opts.Logger.Info("truncated log", "offset", offset, "old_end", end, "segments_deleted", len(later))
	l.updateGauges()
	return true, errors.Join(errs...)
}

// findCutLocked checks that offset is a batch boundary in [start, end] and
// finds where it lies. Called with l.mu held (read); it scans at most an
// index interval of headers.
func (l *Log) findCutLocked(offset int64) (cutPoint, error) {
	if err := l.usableLocked(); err != nil {
		return cutPoint{}, err
	}
	start := l.segments[0].base
	if offset < start || offset > l.next {
		return cutPoint{}, &OffsetOutOfRangeError{Offset: offset, Start: start, End: l.next}
	}
	i := max(0, slices.IndexFunc(l.segments, func(s *segment) bool { return s.next > offset }))
	if offset == l.next {
		i = len(l.segments) - 1
	}
	s := l.segments[i]
	cut := cutPoint{i: i, seq: l.seq, nsegs: len(l.segments), maxTs: -1}
	rel := offset - s.base
	// The last offset index entry below offset, and the running max
	// timestamp there (the time index records it where it grows).
	cut.idxEnd, _ = slices.BinarySearchFunc(s.idx.offsets, rel, func(e offsetEntry, r int64) int { return int(int64(e.rel) - r) })
	from := int64(0)
	if cut.idxEnd > 0 {
		e := s.idx.offsets[cut.idxEnd-1]
		from = int64(e.pos)
		for _, t := range s.idx.times {
			if int64(t.rel) <= int64(e.rel) {
				cut.maxTs = max(cut.maxTs, t.ts)
			}
		}
	}
	sc := newScanner(s.f, from, s.size, lookupBufSize)
	for {
		pos := sc.pos
		h, _, err := sc.next(false)
		if err != nil && pos < s.size {
			return cut, fmt.Errorf("hot: %s: %w", s.logPath(), err)
		}
		if err != nil || h.BaseOffset == offset {
			cut.pos = pos // the end of the segment: offset == its next
			return cut, nil
		}
		if h.NextOffset() > offset {
			return cut, fmt.Errorf("%w: offset %d is inside the batch %d to %d", ErrNotBatchBoundary, offset, h.BaseOffset, h.LastOffset())
		}
		cut.maxTs = max(cut.maxTs, h.MaxTimestamp)
	}
}

// usableLocked is nil unless the log is closed or failed.
func (l *Log) usableLocked() error {
	if l.closed {
		return ErrClosed
	}
	if l.failed != nil {
		return l.failLocked(nil)
	}
	return nil
}
