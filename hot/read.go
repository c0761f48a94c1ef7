package hot

import (
	"context"
	"sort"
	"sync/atomic"
)

// Read returns whole batches from the batch containing offset, up to about
// maxBytes but at least one batch, from a single segment. Reading at the
// end (EndOffset) returns no records and no error; outside [start, log
// end] it returns an *OffsetOutOfRangeError. Readers see only what the
// flush policy has made visible: under FlushAlways, fsynced batches. With
// Options.Replicated they see only whole batches below the high watermark
// (a batch that crosses it is not served), FetchResult.EndOffset is the
// high watermark, and a read between it and the log end returns no
// records and no error, as Kafka answers a consumer there (its offset may
// come from a former leader whose high watermark was ahead of this one's).
func (l *Log) Read(offset int64, maxBytes int) (FetchResult, error) {
	return l.ReadBuf(offset, maxBytes, nil)
}

// ReadBuf is Read into buf's memory when it is large enough (the records
// alias buf), so a reader that streams can reuse one buffer instead of
// allocating a fresh one per read.
func (l *Log) ReadBuf(offset int64, maxBytes int, buf []byte) (FetchResult, error) {
	return l.readRetrying(offset, maxBytes, buf, false)
}

// readRetrying is ReadBuf (replica false) and ReadReplica (replica true).
func (l *Log) readRetrying(offset int64, maxBytes int, buf []byte, replica bool) (FetchResult, error) {
	for {
		res, s, stale, err := l.read(offset, maxBytes, buf, replica)
		if stale {
			continue // TruncateTo cut the segment under the read: read again
		}
		// Retention deleted the segment between lookup and read (its file
		// closed: a short read or ErrClosed). The read lost a race, not
		// found damage: it answers as a read after the deletion does, with
		// the new start (out of range, or the next segment's batches).
		if err != nil && s != nil && s.deleted.Load() {
			continue
		}
		if err != nil && s != nil && l.isClosed() {
			// Close closed the file under the read: not bad input.
			return res, ErrClosed
		}
		return res, err
	}
}

func (l *Log) isClosed() bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.closed
}

// read returns the segment it read from (nil if none) with its result;
// stale says TruncateTo cut that segment during the read.
func (l *Log) read(offset int64, maxBytes int, buf []byte, replica bool) (res FetchResult, s *segment, stale bool, err error) {
	l.mu.RLock()
	vis := l.visible.Load()
	start := l.segments[0].base
	// bound is the reader's end: the log end, or a consumer's high
	// watermark (read under l.mu: truncations lower both together).
	bound := vis.offset
	if !replica && l.opts.Replicated {
		bound = min(bound, l.hw.off.Load())
	}
	res = FetchResult{StartOffset: start, EndOffset: bound}
	if offset < start || offset > vis.offset {
		l.mu.RUnlock()
		return res, nil, false, &OffsetOutOfRangeError{Offset: offset, Start: start, End: vis.offset}
	}
	if offset >= bound {
		l.mu.RUnlock()
		return res, nil, false, nil
	}
	s = l.segmentForLocked(offset)
	cuts := s.truncations.Load()
	limit := s.size
	if s == vis.seg {
		limit = vis.pos
	}
	from := int64(0)
	if offset > s.base {
		from = int64(s.idx.lookup(uint32(offset - s.base)))
	}
	l.mu.RUnlock()

	pos, err := s.scanFrom(from, offset, limit)
	n := 0
	if err == nil {
		res.Records, n, err = s.read(pos, limit, maxBytes, buf, bound)
	}
	if s.truncations.Load() != cuts {
		return res, s, true, err
	}
	if err != nil {
		return res, s, false, err
	}
	l.m.bytesOut.Add(float64(len(res.Records)))
	l.m.batchesOut.Add(float64(n))
	return res, s, false, nil
}

// segmentForLocked returns the last segment whose base is <= offset.
func (l *Log) segmentForLocked(offset int64) *segment {
	i := sort.Search(len(l.segments), func(i int) bool { return l.segments[i].base > offset })
	return l.segments[max(i-1, 0)]
}

// OffsetForTime returns the base offset of the first batch whose max
// timestamp is >= ts (Unix ms), or the end (EndOffset: with
// Options.Replicated the high watermark, never more) if there is none
// below it. As in Kafka
// the answer has batch granularity: records before it in that batch may be
// older, and readers skip them by timestamp if they care.
func (l *Log) OffsetForTime(ts int64) (int64, error) {
	for {
		off, s, stale, err := l.offsetForTime(ts)
		if stale {
			continue
		}
		// As in ReadBuf: a scan whose segment retention deleted under it
		// lost a race; the answer is the one after the deletion.
		if err != nil && s != nil && s.deleted.Load() {
			continue
		}
		if err != nil && s != nil && l.isClosed() {
			return 0, ErrClosed
		}
		return off, err
	}
}

// offsetForTime returns the segment it scanned (nil if none) with its
// answer; stale says TruncateTo cut that segment during the scan.
func (l *Log) offsetForTime(ts int64) (int64, *segment, bool, error) {
	l.mu.RLock()
	vis := l.visible.Load()
	bound := vis.offset
	if l.opts.Replicated {
		bound = min(bound, l.hw.off.Load())
	}
	var s *segment
	for _, c := range l.segments {
		if c.maxTs >= ts {
			s = c
			break
		}
	}
	if s == nil || s.base >= bound {
		l.mu.RUnlock()
		return bound, nil, false, nil
	}
	limit := s.size
	if s == vis.seg {
		limit = vis.pos
	}
	from := s.timeScanStart(ts)
	cuts := s.truncations.Load()
	l.mu.RUnlock()
	off, err := s.firstAtOrAfterTime(from, ts, limit)
	if s.truncations.Load() != cuts {
		return 0, s, true, nil
	}
	if err != nil {
		return 0, s, false, err
	}
	if off < 0 || off > bound {
		return bound, s, false, nil
	}
	return off, s, false, nil
}

// StartOffset is the first offset held locally.
func (l *Log) StartOffset() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.segments[0].base
}

// EndOffset is the next offset consumers will see: the high watermark
// (HighWatermark), everything below which is readable. On a single node
// that is the log end.
func (l *Log) EndOffset() int64 { return l.HighWatermark() }

// Wait blocks until the end offset (EndOffset: with Options.Replicated the
// high watermark) is past offset, the log closes, or ctx is done.
func (l *Log) Wait(ctx context.Context, offset int64) error {
	if l.opts.Replicated {
		return l.waitPast(ctx, offset, &l.hw.notify, l.hw.off.Load)
	}
	return l.waitPast(ctx, offset, &l.notify, func() int64 { return l.visible.Load().offset })
}

// waitPast blocks until end() is past offset, the log closes, or ctx is
// done; notify's channel is closed (and replaced) when end moves.
func (l *Log) waitPast(ctx context.Context, offset int64, notify *atomic.Pointer[chan struct{}], end func() int64) error {
	for {
		ch := *notify.Load()
		if end() > offset {
			return nil
		}
		select {
		case <-ch:
		case <-l.stop:
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Changed returns a channel closed when the end offset (EndOffset: with
// Options.Replicated the high watermark) next moves and one closed when
// the log closes. A reader waiting on many logs at once (a
// Kafka fetch of many partitions) selects on all of theirs from one
// goroutine instead of running a Wait per log; it reads EndOffset after
// taking the channels, so a move between the two is not missed.
func (l *Log) Changed() (moved, closed <-chan struct{}) {
	if l.opts.Replicated {
		return *l.hw.notify.Load(), l.stop
	}
	return *l.notify.Load(), l.stop
}

// Segments describes every local segment, oldest first.
func (l *Log) Segments() []SegmentInfo {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make([]SegmentInfo, len(l.segments))
	for i, s := range l.segments {
		out[i] = s.info()
	}
	return out
}

// SealedEnd is the offset after the newest sealed segment, 0 if none is:
// segments below it never change again. With Options.Replicated only
// segments that end at or below the high watermark count (what is above
// may still be truncated). It takes no lock unless a sealed segment ends
// above the high watermark (followers behind by a segment).
func (l *Log) SealedEnd() int64 {
	end := l.sealedEnd.Load()
	if !l.opts.Replicated || end <= l.hw.off.Load() {
		return end
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.sealedEndLocked()
}

// sealedEndLocked is SealedEnd under l.mu with Options.Replicated.
func (l *Log) sealedEndLocked() int64 {
	hw, end := l.hw.off.Load(), int64(0)
	for _, s := range l.segments {
		if !s.sealed || s.next > hw {
			break
		}
		end = s.next
	}
	return end
}

// LocalBytes sums the .log bytes of the local segments and of those that
// end after offset from (for the bytes not yet uploaded), without
// allocating: the disk ceiling measures every partition each interval.
func (l *Log) LocalBytes(from int64) (total, after int64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, s := range l.segments {
		total += s.size
		if s.next > from {
			after += s.size
		}
	}
	return total, after
}

// SealedSegments lists the segments that will never change again (rolled,
// fsynced, indexes written), oldest first: what the tiering daemon
// uploads. With Options.Replicated it lists only those that end at or
// below the high watermark.
func (l *Log) SealedSegments() []SegmentInfo {
	l.mu.RLock()
	defer l.mu.RUnlock()
	hw := l.HighWatermark()
	var out []SegmentInfo
	for _, s := range l.segments {
		if s.sealed && (!l.opts.Replicated || s.next <= hw) {
			out = append(out, s.info())
		}
	}
	return out
}
