package hot

import (
	"time"

	"github.com/tierlog/tierlog/internal/fileutil"
)

// background seals rolled segments, runs the interval flush, rolls segments
// that have aged past segment.ms and applies local retention.
func (l *Log) background() {
	defer close(l.done)
	l.mu.RLock()
	flushEvery := l.cfg.FlushInterval
	l.mu.RUnlock()
	maint := time.NewTicker(l.opts.BackgroundInterval)
	defer maint.Stop()
	flush := time.NewTicker(flushEvery)
	defer flush.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-l.work:
			l.sealPending()
		case <-flush.C:
			l.intervalFlush()
		case <-maint.C:
			l.maintain(l.opts.Now())
		}
	}
}

// intervalFlush fsyncs unflushed appends under flush.policy=interval.
func (l *Log) intervalFlush() {
	l.mu.RLock()
	policy, seq, failed := l.cfg.FlushPolicy, l.seq, l.failed
	l.mu.RUnlock()
	if policy != FlushInterval || failed != nil {
		return
	}
	l.syncTo(seq) // a failure fails the log and is logged there
}

// sealPending seals rolled segments in order and then moves the recovery
// point past them.
func (l *Log) sealPending() {
	for {
		l.mu.Lock()
		if len(l.toSeal) == 0 || l.failed != nil {
			l.mu.Unlock()
			return
		}
		s := l.toSeal[0]
		l.mu.Unlock()
		if err := l.sealSegment(s); err != nil {
			l.mu.Lock()
			l.failLocked(err)
			l.mu.Unlock()
			return
		}
		l.mu.Lock()
		l.toSeal = l.toSeal[1:]
		next := s.next
		l.mu.Unlock()
		if err := l.writeRecoveryPoint(next); err != nil {
			l.opts.Logger.Warn("write recovery point", "dir", l.dir, "err", err)
		}
		l.updateGauges()
	}
}

// maintain rolls an aged active segment and applies retention.
func (l *Log) maintain(now time.Time) {
	l.mu.Lock()
	if l.failed == nil && !l.closed && l.active.size > 0 && now.Sub(l.active.created) >= l.cfg.SegmentAge {
		if err := l.rollLocked(); err != nil {
			// Retriable: the segment keeps taking appends and the next
			// tick (or append) tries again.
			l.opts.Logger.Warn("roll aged segment", "topic", l.opts.Topic, "partition", l.opts.Partition, "err", err)
		}
	}
	l.mu.Unlock()
	l.sealPending()
	l.ApplyRetention(now)
}

// ApplyRetention deletes the oldest sealed segments past retention.ms or
// beyond retention.bytes, oldest first, never the active segment, and never
// a segment the deletion guard refuses. It returns how many it deleted.
func (l *Log) ApplyRetention(now time.Time) int {
	l.mu.Lock()
	cfg := l.cfg
	var total int64
	for _, s := range l.segments {
		total += s.size
	}
	var victims []*segment
	for len(l.segments) > 1 {
		s := l.segments[0]
		if !s.sealed {
			break
		}
		byTime := cfg.RetentionAge > 0 && s.maxTs >= 0 && now.UnixMilli()-s.maxTs > cfg.RetentionAge.Milliseconds()
		bySize := cfg.RetentionBytes >= 0 && total-s.size >= cfg.RetentionBytes
		if !byTime && !bySize {
			break
		}
		if l.opts.DeletionGuard != nil && !l.opts.DeletionGuard(s.info()) {
			break
		}
		victims = append(victims, s)
		s.deleted.Store(true)
		l.segments = l.segments[1:]
		total -= s.size
	}
	l.mu.Unlock()
	if len(victims) == 0 {
		return 0
	}
	for _, s := range victims {
		if err := s.remove(); err != nil {
			l.opts.Logger.Warn("remove segment", "segment", s.logPath(), "err", err)
		}
	}
	if err := fileutil.SyncDir(l.dir); err != nil {
		l.opts.Logger.Warn("fsync directory after retention", "err", err)
	}
	l.opts.Logger.Info("retention deleted segments", "topic", l.opts.Topic, "partition", l.opts.Partition,
		"segments", len(victims), "through_offset", victims[len(victims)-1].next-1)
	l.updateGauges()
	return len(victims)
}
