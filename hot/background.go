package hot

import (
	"time"

	"github.com/tierlog/tierlog/internal/fileutil"
)

// bgState is when a log's background work is next due. Only the log's
// scheduler job touches it, and a log has at most one job at a time.
type bgState struct {
	nextMaint  time.Time     // age roll and retention
	nextFlush  time.Time     // interval flush; zero unless flush.policy=interval
	flushEvery time.Duration // flush.ms that nextFlush was planned with
	hwDue      time.Time     // high watermark checkpoint; zero unless one waits
	hwWritten  time.Time     // last high watermark checkpoint written by the job
}

func (b *bgState) next() time.Time {
	next := b.nextMaint
	for _, t := range []time.Time{b.nextFlush, b.hwDue} {
		if !t.IsZero() && t.Before(next) {
			next = t
		}
	}
	return next
}

// startBackground hands the log to its scheduler: the one in Options, or a
// private one (one goroutine while the log is open).
func (l *Log) startBackground() error {
	l.sched = l.opts.Scheduler
	if l.sched == nil {
		l.sched, l.ownSched = NewScheduler(SchedulerOptions{Workers: 1}), true
	}
	now := time.Now()
	l.bg.nextMaint = now.Add(l.opts.BackgroundInterval)
	l.planFlush(now)
	return l.sched.register(l, l.bg.next())
}

// stopBackground takes the log off its scheduler, waiting for a job under
// way. Call once, after setting l.closed.
func (l *Log) stopBackground() {
	close(l.stop)
	l.sched.unregister(l)
	if l.ownSched {
		l.sched.Close()
	}
}

// runBackground is the log's scheduler job: it seals rolled segments, runs
// the interval flush and the maintenance (age roll, retention) when they
// are due, and returns when it is next due.
func (l *Log) runBackground(now time.Time) time.Time {
	l.mu.RLock()
	closed := l.closed
	l.mu.RUnlock()
	if closed {
		return now.Add(time.Hour) // Close takes the log off the scheduler
	}
	l.sealPending()
	l.checkpointHighWatermark(now)
	if !l.bg.nextFlush.IsZero() && !now.Before(l.bg.nextFlush) {
		l.intervalFlush()
		l.bg.nextFlush = time.Time{}
	}
	l.planFlush(now)
	if !now.Before(l.bg.nextMaint) {
		l.maintain(l.opts.Now())
		l.bg.nextMaint = now.Add(l.opts.BackgroundInterval)
	}
	return l.bg.next()
}

// planFlush schedules the next interval flush from the current config
// (SetConfig may have changed the policy or flush.ms).
func (l *Log) planFlush(now time.Time) {
	l.mu.RLock()
	policy, every := l.cfg.FlushPolicy, l.cfg.FlushInterval
	l.mu.RUnlock()
	switch {
	case policy != FlushInterval:
		l.bg.nextFlush = time.Time{}
	case l.bg.nextFlush.IsZero() || every != l.bg.flushEvery:
		l.bg.nextFlush, l.bg.flushEvery = now.Add(every), every
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
	// Shared with retention (they touch different segments, and ran side
	// by side before truncation existed): retention must not wait for a
	// seal's fsync, or one slow seal would hold up disk-ceiling relief.
	l.structMu.RLock()
	defer l.structMu.RUnlock()
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
			l.opts.Logger.Warn("roll aged segment", "err", err)
		}
	}
	l.mu.Unlock()
	l.sealPending()
	l.ApplyRetention(now)
}

// ApplyRetention deletes the oldest sealed segments past retention.ms or
// beyond retention.bytes, oldest first, never the active segment, and never
// a segment the deletion guard refuses. It returns how many it deleted.
func (l *Log) ApplyRetention(now time.Time) int { return l.applyRetention(now, -1) }

// ShrinkTo deletes the oldest sealed segments, as retention does, until the
// log's segments hold at most maxBytes, whatever retention keeps: for a
// caller that must free disk (a tiered log at its local-disk ceiling). The
// deletion guard still decides which segments may go.
func (l *Log) ShrinkTo(maxBytes int64) int { return l.applyRetention(l.opts.Now(), max(maxBytes, 0)) }

// applyRetention is ApplyRetention that also deletes while the segments
// hold more than limit bytes (limit < 0: no such bound).
func (l *Log) applyRetention(now time.Time, limit int64) int {
	l.structMu.RLock() // shared with sealing; see structMu
	defer l.structMu.RUnlock()
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
		if l.opts.Replicated && s.next > l.hw.off.Load() {
			// Not committed yet: a new leader may still cut it, and
			// consumers have not been able to read it.
			break
		}
		byTime := cfg.RetentionAge > 0 && s.maxTs >= 0 && now.UnixMilli()-s.maxTs > cfg.RetentionAge.Milliseconds()
		bySize := cfg.RetentionBytes >= 0 && total-s.size >= cfg.RetentionBytes
		byLimit := limit >= 0 && total > limit
		if !byTime && !bySize && !byLimit {
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
	l.opts.Logger.Info("retention deleted segments",
		"segments", len(victims), "through_offset", victims[len(victims)-1].next-1)
	l.updateGauges()
	return len(victims)
}
