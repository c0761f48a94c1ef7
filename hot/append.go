package hot

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/tierlog/tierlog/internal/batch"
)

// Append validates one RecordBatch v2 from a producer as Kafka's log
// validator does (max.message.bytes, then checkBatch: CRC-32C, dense
// offsets, every record decompressed and parsed, no control batch),
// checks an idempotent producer's epoch and sequence (producers.go),
// stamps the topic's timestamp type, the log's leader epoch and its base
// offset (written into b: the caller hands the buffer over) and appends
// it. It returns once the flush policy's promise holds: under FlushAlways
// the batch is fsynced (group commit shares one fsync among concurrent
// appends); under FlushInterval it is fsynced inline only when
// flush.messages unflushed records have gathered; otherwise it is in the
// page cache. The result's Durability says which. A retry of a batch the
// producer already appended returns the original's offsets (Duplicate
// set) once the original is as durable, and writes nothing.
func (l *Log) Append(b []byte) (AppendResult, error) {
	p, err := l.AppendDeferred(b)
	if err != nil {
		return AppendResult{}, err
	}
	return p.Wait()
}

// PendingAppend is a batch AppendDeferred has written (or recognised as a
// retry) whose flush-policy promise may not hold yet.
type PendingAppend struct {
	l     *Log
	res   AppendResult
	seq   uint64 // appends to fsync through before the promise holds; 0: none
	start time.Time
}

// Duplicate says the batch was a retry of one already in the log: nothing
// was written.
func (p *PendingAppend) Duplicate() bool { return p.res.Duplicate }

// MustWait says whether Wait blocks for an fsync; if not, the promise
// already holds.
func (p *PendingAppend) MustWait() bool { return p.seq > 0 }

// Wait returns once the flush policy's promise holds for the batch (see
// Append) and the result, whose Durability says what was reached.
func (p *PendingAppend) Wait() (AppendResult, error) {
	res := p.res
	if p.seq > 0 {
		if err := p.l.syncTo(p.seq); err != nil {
			return AppendResult{}, err
		}
		res.Durability = DurabilityFsynced
	}
	end := float64(p.l.visible.Load().offset)
	p.l.m.endOffset.Set(end)
	if !p.l.opts.Replicated {
		p.l.m.highWatermark.Set(end) // (a replicated log's moves with SetHighWatermark)
	}
	p.l.m.m.appendLatency.Observe(time.Since(p.start).Seconds())
	return res, nil
}

// AppendDeferred is the first half of Append: it validates and writes the
// batch (or recognises a producer's retry) and returns without waiting for
// the flush policy's promise, which Wait on the result does. Appends take
// their offsets and producer sequences in the order AppendDeferred calls
// happen, so a caller serving one connection's requests in order calls it
// in order and may wait for several results together: their fsyncs are
// shared by the group commit. Every result must be waited for, even if
// nobody hears the answer: under FlushAlways a batch becomes visible to
// readers only through the fsync a Wait makes (or a later append's).
func (l *Log) AppendDeferred(b []byte) (*PendingAppend, error) {
	start := time.Now()
	l.mu.RLock()
	cfg := l.cfg
	l.mu.RUnlock()
	if len(b) > cfg.MaxMessageBytes {
		return nil, &TooLargeError{Size: len(b), Max: cfg.MaxMessageBytes}
	}
	// Validation (decompressing and parsing every record) and any CRC
	// rewrite happen before the lock, so appends to the log do not queue
	// behind them.
	now := l.opts.Now()
	// Stamping rewrites header fields of b; an append refused after it
	// puts them back, so that retrying the same buffer after ErrRetriable
	// is the same call (a stamped LogAppendTime batch would be refused).
	var sent [batch.HeaderSize]byte
	copy(sent[:], b)
	h, err := checkBatch(b, cfg, now)
	if err != nil {
		copy(b, sent[:])
		return nil, err
	}

	l.mu.Lock()
	if err := l.usableLocked(); err != nil {
		l.mu.Unlock()
		copy(b, sent[:])
		return nil, err
	}
	policy := l.cfg.FlushPolicy
	dup, err := l.producers.check(h, l.next == 0 && l.segments[0].base == 0)
	if err != nil || dup != nil {
		// A retry waits for what its original waits for: everything
		// written so far, the original included, under FlushAlways.
		var seq uint64
		if dup != nil && policy == FlushAlways {
			seq = l.seq
		}
		l.mu.Unlock()
		copy(b, sent[:])
		if err != nil {
			return nil, err
		}
		l.m.m.duplicates.Inc()
		res := AppendResult{BaseOffset: dup.BaseOffset, LastOffset: dup.LastOffset, LogAppendTime: now.UnixMilli(),
			TimestampType: cfg.TimestampType, Durability: DurabilityPageCache, Duplicate: true}
		if cfg.TimestampType == LogAppendTime {
			res.LogAppendTime = dup.MaxTimestamp // the original's append time
		}
		if policy == FlushAlways {
			// Durable once the fsync through seq returns (at once if
			// nothing was written since the log opened: Open fsyncs).
			res.Durability = DurabilityFsynced
		}
		return &PendingAppend{l: l, seq: seq, start: start, res: res}, nil
	}
	if l.shouldRollLocked(len(b), now) || l.offsetsOverflowLocked(h.NumRecords) {
		if err := l.rollLocked(); err != nil {
			l.mu.Unlock() // retriable: nothing was written, the next append retries the roll
			copy(b, sent[:])
			return nil, err
		}
	}
	base := l.next
	batch.SetBaseOffset(b, base)
	h.BaseOffset = base
	// The epoch is the log's, not the producer's (outside the CRC).
	batch.SetLeaderEpoch(b, l.opts.LeaderEpoch)
	h.PartitionLeaderEpoch = l.opts.LeaderEpoch
	return l.writeLocked(b, h, now, start, cfg)
}

// writeLocked is the common end of AppendDeferred and AppendReplica: it
// writes a batch whose offsets and epoch are set (h describes it) to the
// active segment, records it in the producer and epoch state, and returns
// what the flush policy still waits for. Called with l.mu held; unlocks
// it. A new epoch's checkpoint is fsynced before it returns.
func (l *Log) writeLocked(b []byte, h batch.Header, now, start time.Time, cfg Config) (*PendingAppend, error) {
	if err := l.active.append(b, h, l.cfg.IndexIntervalBytes); err != nil {
		err = l.failLocked(err)
		l.mu.Unlock()
		return nil, err
	}
	l.producers.update(h, now.UnixMilli())
	// A batch of an epoch the cache does not know (a follower's first
	// batch of a new leader, or the leader's first after a truncation
	// removed its epoch's entry).
	newEpoch := l.epochs.assign(h.PartitionLeaderEpoch, h.BaseOffset)
	// A follower's log takes its leader's epoch: an Append after it (the
	// follower made leader) never stamps an older one.
	l.opts.LeaderEpoch = max(l.opts.LeaderEpoch, h.PartitionLeaderEpoch)
	if len(l.dirty) == 0 || l.dirty[len(l.dirty)-1] != l.active {
		l.dirty = append(l.dirty, l.active)
	}
	l.next = h.NextOffset()
	l.written = &position{offset: l.next, seg: l.active, pos: l.active.size}
	l.seq++
	seq := l.seq
	l.unsynced += int64(h.NumRecords)
	policy := l.cfg.FlushPolicy
	needSync := policy == FlushAlways ||
		(policy == FlushInterval && l.cfg.FlushMessages > 0 && l.unsynced >= l.cfg.FlushMessages)
	if !needSync {
		l.publishLocked()
		seq = 0
	}
	l.mu.Unlock()
	if newEpoch {
		if err := l.persistEpochs(); err != nil {
			// The batch is written but the checkpoint is not: Open would
			// rebuild it, but this log can no longer tell the truth.
			l.mu.Lock()
			err = l.failLocked(err)
			l.mu.Unlock()
			return nil, err
		}
	}

	l.m.bytesIn.Add(float64(len(b)))
	l.m.recordsIn.Add(float64(h.NumRecords))
	return &PendingAppend{l: l, seq: seq, start: start, res: AppendResult{BaseOffset: h.BaseOffset, LastOffset: h.LastOffset(),
		LogAppendTime: now.UnixMilli(), TimestampType: cfg.TimestampType, Durability: DurabilityPageCache}}, nil
}

// groupCommit lets one appender fsync on behalf of all that wrote before the
// fsync began; the rest wait for it instead of issuing their own.
type groupCommit struct {
	mu      sync.Mutex
	cond    *sync.Cond
	synced  uint64 // appends known durable
	running bool
	waiting int // callers waiting for the fsync in flight
}

func (g *groupCommit) init() { g.cond = sync.NewCond(&g.mu) }

// syncTo returns once append number seq is fsynced, fsyncing itself if no
// other caller is.
func (l *Log) syncTo(seq uint64) error {
	g := &l.gc
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.synced < seq {
		if g.running {
			g.waiting++
			g.cond.Wait()
			g.waiting--
			continue
		}
		g.running = true
		g.mu.Unlock()
		done, err := l.syncDirty()
		g.mu.Lock()
		g.running = false
		if err == nil {
			g.synced = max(g.synced, done)
		}
		g.cond.Broadcast()
		if err != nil {
			return err
		}
	}
	return nil
}

// syncDirty fsyncs every segment written since the last fsync and publishes
// what it covered. It returns the append count it made durable.
func (l *Log) syncDirty() (uint64, error) {
	l.mu.Lock()
	if l.failed != nil {
		err := l.failLocked(nil)
		l.mu.Unlock()
		return 0, err
	}
	seq, target, dirty, truncations := l.seq, l.written, l.dirty, l.truncations
	l.dirty = nil
	prevSeq := l.gc.syncedLocked()
	l.unsynced = 0
	l.mu.Unlock()
	for _, s := range dirty {
		if err := l.timedSync(s); err != nil {
			l.mu.Lock()
			// Sealing may have fsynced this rolled segment meanwhile, and
			// retention then closed it: its bytes are durable, so this
			// redundant fsync that never ran is not a failure of the log.
			// Any other error is: an fsync that ran and failed may have
			// consumed the writeback error that let sealing's fsync
			// succeed (Linux reports it once), so that success proves
			// nothing.
			// The same for a segment TruncateTo deleted: its bytes are gone.
			if (s.durable || s.deleted.Load()) && errors.Is(err, os.ErrClosed) {
				l.mu.Unlock()
				continue
			}
			err = l.failLocked(err)
			l.mu.Unlock()
			return 0, err
		}
	}
	l.m.m.fsyncBatch.Observe(float64(seq - prevSeq))
	l.mu.RLock()
	if l.truncations == truncations {
		// (TruncateTo published its new end itself.)
		l.publish(target)
	}
	l.mu.RUnlock()
	return seq, nil
}

// waitingNow is how many callers wait for the fsync in flight.
func (g *groupCommit) waitingNow() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting
}

func (g *groupCommit) syncedLocked() uint64 {
	// Read without g.mu: only used for the group-size histogram.
	return g.synced
}

// timedSync is the one place segment data is fsynced: it times the call and
// warns when the disk is slow.
func (l *Log) timedSync(s *segment) error {
	start := time.Now()
	err := s.f.Sync()
	d := time.Since(start)
	l.m.m.fsyncLatency.Observe(d.Seconds())
	if d > time.Second {
		l.opts.Logger.Warn("slow fsync", "segment", s.logPath(), "duration", d)
	}
	if err != nil {
		l.m.m.fsyncErrors.Inc()
		return fmt.Errorf("hot: fsync %s: %w", s.logPath(), err)
	}
	return nil
}

func (l *Log) shouldRollLocked(n int, now time.Time) bool {
	a := l.active
	if a.size == 0 {
		return false
	}
	return a.size+int64(n) > l.cfg.SegmentBytes || now.Sub(a.created) >= l.cfg.SegmentAge
}

// rollLocked starts a new active segment at the next offset. The old one is
// handed to the log's scheduler job, which fsyncs it and writes its indexes
// (sealing); a crash before that is covered by recovery, which scans every
// segment past the recovery point. A new segment that cannot be opened (out
// of file descriptors, say) changes nothing: the error wraps ErrRetriable
// and the log stays usable, so the next append tries the roll again.
func (l *Log) rollLocked() error {
	s, err := l.openSegment(l.next, true)
	if err != nil {
		return fmt.Errorf("hot: roll to a new segment at offset %d (%w): %w", l.next, ErrRetriable, err)
	}
	l.active.rolled = true
	l.active.producers = l.producerSnapshotLocked()
	l.toSeal = append(l.toSeal, l.active)
	l.segments = append(l.segments, s)
	l.active = s
	l.sched.kick(l) // seal the rolled segment now
	return nil
}

// Roll closes the active segment to appends now (if it holds anything), so
// that it is sealed and can be tiered. If the new segment cannot be opened
// the error wraps ErrRetriable and nothing changes.
func (l *Log) Roll() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if l.failed != nil {
		return l.failLocked(nil)
	}
	if l.active.size == 0 {
		return nil
	}
	return l.rollLocked()
}

// Flush fsyncs everything appended so far.
func (l *Log) Flush() error {
	l.mu.RLock()
	seq := l.seq
	l.mu.RUnlock()
	return l.syncTo(seq)
}
