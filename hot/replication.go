package hot

import (
	"context"
	"slices"
	"sync"
	"time"
)

// ReplicaSet is the leader's state of one partition's replicas, by
// Kafka's rules (Partition.scala, Replica.scala):
//
//   - The high watermark is the smallest log end offset over the in-sync
//     replicas (the leader's own is its log's LogEndOffset), and never
//     moves back. A follower's log end is the offset of its last fetch;
//     until it first fetches from this leader it is unknown, and the high
//     watermark waits for it.
//   - A follower is caught up at a fetch whose offset is at least the
//     leader's log end at that moment; its LastCaughtUp is then that
//     fetch's time. A fetch that reaches the leader's log end as of the
//     follower's previous fetch proves it was caught up at the previous
//     fetch's time (under steady load the leader's end is always ahead, so
//     the first rule alone would drop every follower).
//   - OutOfSync lists in-sync followers not caught up for more than
//     replica.lag.time.max.ms; CaughtUp lists the others that hold
//     everything below the high watermark and at least this leader
//     epoch's first offset. The caller commits the change through the
//     cluster metadata and hands the committed ISR back with SetISR.
//
// It takes its own mutex and the log's high watermark lock only; it does no
// I/O and never blocks an append.
type ReplicaSet struct {
	l          *Log
	self       int32
	epochStart int64

	mu       sync.Mutex
	replicas []int32
	isr      []int32 // committed (cluster metadata)
	// joining are the replicas CaughtUp last returned: the high watermark
	// counts them as if in sync (Kafka's maximal ISR) until SetISR or the
	// next CaughtUp, so it never passes a log end they have not reached
	// while their joining is committed - else a member of the new ISR
	// could lack committed records.
	joining   []int32
	followers map[int32]*replicaState
	// isrMoved is closed when the ISR changes or the set closes.
	isrMoved chan struct{}
	closed   bool
	// lastNow is the newest time the set was given: the leader's own
	// LastCaughtUp, and the start of a new ISR member's.
	lastNow time.Time
}

// replicaState is what the leader knows of one other replica.
type replicaState struct {
	logEnd       int64 // offset of its last fetch; -1 until it fetches
	lastCaughtUp time.Time
	// The leader's log end and the time at the follower's previous fetch
	// (at first: when the set was made).
	lastFetchLeaderEnd int64
	lastFetch          time.Time
	// fetches counts its fetches; leftAt is the count when it last left
	// the ISR. It may rejoin only after fetching again: a dead replica that
	// had everything below an idle partition's high watermark would
	// otherwise rejoin and leave again every lag interval.
	fetches, leftAt uint64
}

// ReplicaPosition is one replica's state, for status and metrics.
type ReplicaPosition struct {
	ID     int32
	LogEnd int64 // -1: not known (it has not fetched from this leader)
	// LastCaughtUp is the last time it was known to hold the leader's
	// whole log (for the leader itself: the newest time the set was given).
	LastCaughtUp time.Time
	InSync       bool
}

// NewReplicaSet starts the leader's state for log l, on the node self,
// with the partition's replicas and committed ISR from cluster metadata;
// leaderEpochStart is the offset at which this leader's epoch began (its
// log end when it became leader). In-sync followers start caught up as of
// now.
func NewReplicaSet(l *Log, self int32, replicas, isr []int32, leaderEpochStart int64, now time.Time) *ReplicaSet {
	r := &ReplicaSet{l: l, self: self, epochStart: leaderEpochStart, replicas: slices.Clone(replicas),
		isr: slices.Clone(isr), followers: map[int32]*replicaState{}, isrMoved: make(chan struct{}), lastNow: now}
	end := l.LogEndOffset()
	for _, id := range slices.Concat(replicas, isr) {
		if id == self || r.followers[id] != nil {
			continue
		}
		f := &replicaState{logEnd: -1, lastFetchLeaderEnd: end, lastFetch: now}
		if slices.Contains(isr, id) {
			f.lastCaughtUp = now
		}
		r.followers[id] = f
	}
	r.mu.Lock()
	r.advanceLocked()
	r.mu.Unlock()
	return r
}

// FollowerFetched records a follower's fetch at fetchOffset (its log end),
// made at now, the leader's log end at that moment being its log's
// LogEndOffset; it moves the high watermark (l.SetHighWatermark) and
// returns it. A fetch by a node that is not a replica changes nothing.
func (r *ReplicaSet) FollowerFetched(id int32, fetchOffset int64, now time.Time) int64 {
	leaderEnd := r.l.LogEndOffset()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastNow = later(r.lastNow, now)
	f := r.followers[id]
	if f == nil {
		return r.l.HighWatermark()
	}
	f.logEnd = fetchOffset
	f.fetches++
	switch {
	case fetchOffset >= leaderEnd:
		f.lastCaughtUp = later(f.lastCaughtUp, now)
	case fetchOffset >= f.lastFetchLeaderEnd:
		f.lastCaughtUp = later(f.lastCaughtUp, f.lastFetch)
	}
	f.lastFetchLeaderEnd, f.lastFetch = leaderEnd, now
	return r.advanceLocked()
}

// Advance recomputes the high watermark after the leader's own log end
// moved (with no other replica in sync it follows the log end) and
// returns it.
func (r *ReplicaSet) Advance() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.advanceLocked()
}

// advanceLocked moves the high watermark to the smallest log end over the
// ISR and the joining replicas, and returns it. Called with r.mu held, so
// two computations never cross (a stale, higher one after an ISR grew).
func (r *ReplicaSet) advanceLocked() int64 {
	hw := r.l.LogEndOffset()
	for _, ids := range [][]int32{r.isr, r.joining} {
		for _, id := range ids {
			if f := r.followers[id]; f != nil {
				hw = min(hw, f.logEnd)
			}
		}
	}
	if hw >= 0 {
		r.l.SetHighWatermark(hw)
	}
	return r.l.HighWatermark()
}

// SetISR installs the ISR committed in the cluster metadata and recomputes
// the high watermark (a shrink may let it move). A member new to the ISR
// counts as caught up as of the newest time the set was given, so it is
// not dropped again before it can fetch.
func (r *ReplicaSet) SetISR(isr []int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.isr
	r.isr, r.joining = slices.Clone(isr), nil
	for _, id := range isr {
		if id == r.self || slices.Contains(old, id) {
			continue
		}
		f := r.followers[id]
		if f == nil {
			f = &replicaState{logEnd: -1, lastFetchLeaderEnd: r.l.LogEndOffset(), lastFetch: r.lastNow}
			r.followers[id] = f
		}
		f.lastCaughtUp = later(f.lastCaughtUp, r.lastNow)
	}
	for _, id := range old {
		if f := r.followers[id]; f != nil && !slices.Contains(isr, id) {
			f.leftAt = f.fetches
		}
	}
	close(r.isrMoved)
	r.isrMoved = make(chan struct{})
	r.advanceLocked()
}

// ISR is the committed in-sync replica set.
func (r *ReplicaSet) ISR() []int32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.isr)
}

// OutOfSync lists the ISR members (never the leader) that have not been
// caught up for more than maxLag (replica.lag.time.max.ms): the ones to
// drop from the ISR.
func (r *ReplicaSet) OutOfSync(now time.Time, maxLag time.Duration) []int32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastNow = later(r.lastNow, now)
	var out []int32
	for _, id := range r.isr {
		if f := r.followers[id]; f != nil && now.Sub(f.lastCaughtUp) > maxLag {
			out = append(out, id)
		}
	}
	return out
}

// CaughtUp lists the replicas outside the ISR that may rejoin it now:
// they have fetched since they left it, and their log end is at least the
// high watermark and this leader epoch's first offset (so they hold this
// epoch's records, not a former leader's). Until SetISR (or the next
// CaughtUp) the high watermark counts them as in sync.
func (r *ReplicaSet) CaughtUp() []int32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	hw := r.l.HighWatermark()
	var out []int32
	for _, id := range r.replicas {
		f := r.followers[id]
		if f == nil || slices.Contains(r.isr, id) || f.fetches == f.leftAt {
			continue
		}
		if f.logEnd >= hw && f.logEnd >= r.epochStart {
			out = append(out, id)
		}
	}
	r.joining = out
	return slices.Clone(out)
}

// WaitReplicated blocks until the high watermark reaches end (the offset
// after the caller's batch: acks=all), and returns nil if the ISR then has
// at least minISR members. It returns ErrNotEnoughReplicasAfterAppend if
// the ISR is (or falls) below minISR - the batch is written but not known
// to be on minISR replicas - ErrReplicaSetClosed if the set is closed
// (leadership moved), ErrClosed if the log closes, or ctx's error. It
// waits on channels, never polls.
func (r *ReplicaSet) WaitReplicated(ctx context.Context, end int64, minISR int) error {
	for {
		hwMoved, logClosed := r.l.Changed()
		endMoved, _ := r.l.ChangedEnd()
		r.mu.Lock()
		closed, n, isrMoved := r.closed, len(r.isr), r.isrMoved
		// The leader's own log end may have moved since anyone asked.
		hw := r.advanceLocked()
		alone := !r.othersCountedLocked()
		r.mu.Unlock()
		switch {
		case closed:
			return ErrReplicaSetClosed
		case hw >= end && n >= minISR:
			return nil
		case n < minISR:
			return ErrNotEnoughReplicasAfterAppend
		}
		if !alone {
			// Followers move the high watermark (FollowerFetched): a
			// move of the leader's end alone cannot, so it wakes nobody.
			endMoved = nil
		}
		select {
		case <-hwMoved:
		case <-endMoved:
		case <-isrMoved:
		case <-logClosed:
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// othersCountedLocked says whether a replica other than the leader counts
// in the high watermark.
func (r *ReplicaSet) othersCountedLocked() bool {
	for _, ids := range [][]int32{r.isr, r.joining} {
		for _, id := range ids {
			if r.followers[id] != nil {
				return true
			}
		}
	}
	return false
}

// Positions describes every replica (the replicas, then ISR members that
// are not among them), for status and metrics.
func (r *ReplicaSet) Positions() []ReplicaPosition {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []ReplicaPosition
	for _, id := range slices.Concat(r.replicas, r.isr) {
		if slices.ContainsFunc(out, func(p ReplicaPosition) bool { return p.ID == id }) {
			continue
		}
		p := ReplicaPosition{ID: id, InSync: slices.Contains(r.isr, id)}
		if f := r.followers[id]; f != nil {
			p.LogEnd, p.LastCaughtUp = f.logEnd, f.lastCaughtUp
		} else {
			p.LogEnd, p.LastCaughtUp = r.l.LogEndOffset(), r.lastNow
		}
		out = append(out, p)
	}
	return out
}

// Close ends the set (this node is no longer the leader): waiters in
// WaitReplicated return ErrReplicaSetClosed.
func (r *ReplicaSet) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		r.closed = true
		close(r.isrMoved)
	}
}
