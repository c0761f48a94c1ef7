package hot

import (
	"errors"
	"fmt"
)

// ErrOffsetOutOfRange is wrapped by *OffsetOutOfRangeError: a read asked for
// an offset the log does not hold.
var ErrOffsetOutOfRange = errors.New("offset out of range")

// ErrTooLarge is wrapped by *TooLargeError (a batch exceeds
// max.message.bytes) and by refusals of batches that expand past the
// decompression limit or hold more than batch.RecordLimit records.
var ErrTooLarge = errors.New("batch too large")

// ErrCorruptBatch wraps a batch rejected on append: bad length, magic or
// CRC, offsets that are not dense, records that do not decompress or parse,
// a control batch, a timestamp type the topic refuses. Nothing was written.
var ErrCorruptBatch = errors.New("corrupt batch")

// ErrLogFailed means an earlier write or fsync failed. The log refuses every
// later append until it is reopened (which recovers the tail), so a failed
// write is never followed by a silent success.
var ErrLogFailed = errors.New("log failed")

// ErrOverlappingSegments: Open found a segment whose offsets overlap the
// segment before it (two writers in one directory). The log refuses to open
// and removes nothing; the error names both files.
var ErrOverlappingSegments = errors.New("hot: overlapping segments")

// ErrSegmentGap: Open found offsets missing between two segments (a segment
// file went missing). The log refuses to open rather than serve a hole that
// no consumer can pass; it removes nothing, and the error names the range.
var ErrSegmentGap = errors.New("hot: missing segment")

// ErrRetriable is wrapped by an append (or roll) that failed for a reason
// that may pass, such as a new segment file that could not be opened
// (EMFILE, ENFILE): nothing was written, the log is not failed, and the
// same call may succeed later. Callers map it to a retriable status
// (gRPC UNAVAILABLE, Kafka a retriable error code).
var ErrRetriable = errors.New("retriable: nothing was written, try again")

// ErrClosed means the log was closed.
var ErrClosed = errors.New("log closed")

// OffsetOutOfRangeError says which offset was asked for and which are valid.
type OffsetOutOfRangeError struct {
	Offset, Start, End int64
}

func (e *OffsetOutOfRangeError) Error() string {
	return fmt.Sprintf("offset %d out of range: valid offsets are %d to %d (log start to log end, where the end is the next offset to be written)", e.Offset, e.Start, e.End)
}

func (e *OffsetOutOfRangeError) Unwrap() error { return ErrOffsetOutOfRange }

// TooLargeError names the size and the limit.
type TooLargeError struct {
	Size, Max int
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("batch of %d bytes exceeds max.message.bytes %d", e.Size, e.Max)
}

func (e *TooLargeError) Unwrap() error { return ErrTooLarge }

// ErrNotEnoughReplicasAfterAppend (Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND):
// an acks=all append was written to the leader's log, but the in-sync
// replica set is smaller than min.insync.replicas, so the batch is not
// known to be on that many replicas. It is not acknowledged; a retry may
// write it again (an idempotent producer's retry is recognised instead).
var ErrNotEnoughReplicasAfterAppend = errors.New("hot: fewer in-sync replicas than min.insync.replicas after the append")

// ErrReplicaSetClosed: the ReplicaSet was closed (this node stopped
// leading the partition) while an acks=all append waited for its
// followers; whether the batch is committed is for the new leader to say.
var ErrReplicaSetClosed = errors.New("hot: replica set closed: no longer the partition leader")
