package hot

import (
	"errors"
	"fmt"
	"time"

	"github.com/tierlog/tierlog/internal/batch"
)

// Replication primitives: what a follower does to its log. A follower
// fetches the leader's batches as the leader stored them and appends them
// with AppendReplica; when it follows a new leader it asks where its last
// epoch ends on the leader (EndOffsetForEpoch there) and cuts its own log
// to that offset with TruncateTo (truncate.go), so the two logs never
// diverge.

// ErrReplicaOffset refuses a replica batch that does not start at the
// log end: the follower's fetch position and its log disagree (a batch
// skipped or repeated). Nothing was written.
var ErrReplicaOffset = errors.New("hot: replica batch does not start at the log end")

// ErrReplicaEpoch refuses a replica batch whose leader epoch is below the
// newest epoch the log holds: epochs never go down along a log, so the
// follower must truncate (to the new leader's epoch boundary) first.
var ErrReplicaEpoch = errors.New("hot: replica batch has an older leader epoch than the log")

// AppendReplica appends one batch as the leader stored it: its base
// offset, leader epoch and timestamps are the leader's and are kept (the
// bytes are written unchanged). The base offset must be the log end
// (ErrReplicaOffset otherwise) and the epoch at least the newest in the
// log (ErrReplicaEpoch); the batch's length, magic, CRC-32C and record
// framing are checked (ErrCorruptBatch), the producer rules are not: the
// leader applied them. The producer state is updated from the header, so
// that a follower that becomes leader recognises a producer's retries,
// and a new epoch enters the epoch cache (its checkpoint fsynced before
// the call returns) and becomes the log's epoch (LeaderEpoch), so that an
// Append after the follower is made leader never stamps an older one. It
// returns, like Append, once the flush policy's
// promise holds; Durability says which.
func (l *Log) AppendReplica(b []byte) (AppendResult, error) {
	p, err := l.AppendReplicaDeferred(b)
	if err != nil {
		return AppendResult{}, err
	}
	return p.Wait()
}

// AppendReplicaDeferred is AppendReplica without the wait for the flush
// policy's promise (see AppendDeferred): a follower appending a fetch
// response of many batches waits for their fsyncs together.
func (l *Log) AppendReplicaDeferred(b []byte) (*PendingAppend, error) {
	start := time.Now()
	h, err := batch.Validate(b)
	if err != nil {
		return nil, fmt.Errorf("%w: replica batch: %v", ErrCorruptBatch, err)
	}
	if h.Size() != len(b) {
		return nil, fmt.Errorf("%w: replica batch length field says %d bytes, %d were given (one batch per append)", ErrCorruptBatch, h.Size(), len(b))
	}
	now := l.opts.Now()
	l.mu.Lock()
	cfg := l.cfg
	if err := l.usableLocked(); err != nil {
		l.mu.Unlock()
		return nil, err
	}
	if h.BaseOffset != l.next {
		next := l.next
		l.mu.Unlock()
		return nil, fmt.Errorf("%w: batch base offset %d, log end %d", ErrReplicaOffset, h.BaseOffset, next)
	}
	if e, ok := l.epochs.latest(); ok && h.PartitionLeaderEpoch < e.Epoch {
		l.mu.Unlock()
		return nil, fmt.Errorf("%w: batch at offset %d has epoch %d, the log holds epoch %d from offset %d", ErrReplicaEpoch, h.BaseOffset, h.PartitionLeaderEpoch, e.Epoch, e.StartOffset)
	}
	if l.shouldRollLocked(len(b), now) || l.offsetsOverflowLocked(h.NumRecords) {
		if err := l.rollLocked(); err != nil {
			l.mu.Unlock()
			return nil, err
		}
	}
	return l.writeLocked(b, h, now, start, cfg)
}
