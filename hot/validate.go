package hot

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/tierlog/tierlog/internal/batch"
)

// TimestampType is message.timestamp.type: whose clock a batch's timestamps
// come from.
type TimestampType string

const (
	// CreateTime keeps the producer's record timestamps.
	CreateTime TimestampType = "CreateTime"
	// LogAppendTime stamps every batch with the broker's clock at append:
	// the batch gets the LogAppendTime attribute and its max timestamp is
	// the append time, which readers give to every record in it.
	LogAppendTime TimestampType = "LogAppendTime"
)

// ParseTimestampType checks a message.timestamp.type value.
func ParseTimestampType(s string) (TimestampType, error) {
	switch t := TimestampType(s); t {
	case CreateTime, LogAppendTime:
		return t, nil
	}
	return "", fmt.Errorf("message.timestamp.type %q: valid values are CreateTime, LogAppendTime", s)
}

// maxRelativeOffset is the largest offset distance from a segment's base
// that its indexes can hold: they store relative offsets as uint32.
const maxRelativeOffset = math.MaxUint32

// checkBatch is the validation step of Append, run before the log lock is
// taken: it validates a producer's batch fully (batch.CheckProduced: CRC,
// dense offsets, every record decompressed and parsed, the record count
// within batch.RecordLimit of max.message.bytes) and applies the topic's
// timestamp type as Kafka's log validator does. Under LogAppendTime the
// batch is stamped with now; under CreateTime its max timestamp is set to
// the largest record timestamp. Stamping rewrites the CRC, which covers
// those fields; a batch that already holds them is left as sent. The
// returned header describes b as it will be stored.
func checkBatch(b []byte, cfg Config, now time.Time) (batch.Header, error) {
	p, err := batch.ProduceOptions{MaxRecords: batch.RecordLimit(cfg.MaxMessageBytes), MaxHeaders: batch.HeaderLimit(cfg.MaxMessageBytes)}.CheckProduced(b)
	if errors.Is(err, batch.ErrTooLarge) || errors.Is(err, batch.ErrTooManyRecords) {
		return p.Header, fmt.Errorf("%w: %v (max.message.bytes %d)", ErrTooLarge, err, cfg.MaxMessageBytes)
	}
	if err != nil {
		return p.Header, fmt.Errorf("%w: %v", ErrCorruptBatch, err)
	}
	if p.Size() != len(b) {
		return p.Header, fmt.Errorf("%w: batch length field says %d bytes, %d were given (one batch per append)", ErrCorruptBatch, p.Size(), len(b))
	}
	h := p.Header
	switch {
	case cfg.TimestampType == LogAppendTime && h.LogAppendTime():
		// Kafka refuses this too: the append time is the broker's to set.
		return h, fmt.Errorf("%w: batch has the LogAppendTime attribute (0x08) set: the topic stamps append times itself (message.timestamp.type=LogAppendTime); producers must send CreateTime batches", ErrCorruptBatch)
	case cfg.TimestampType == LogAppendTime:
		batch.SetMaxTimestamp(b, true, now.UnixMilli())
	case h.LogAppendTime() && h.MaxTimestamp < 0:
		// What Kafka answers for a LogAppendTime batch without a time on
		// a CreateTime topic.
		return h, fmt.Errorf("%w: batch has the LogAppendTime attribute (0x08) set and max timestamp %d: producers must send CreateTime batches", ErrCorruptBatch, h.MaxTimestamp)
	default:
		// CreateTime: as Kafka, store a CreateTime batch whose max
		// timestamp is its records' largest, whatever the producer put
		// in the header (Kafka clears a producer's LogAppendTime bit on a
		// CreateTime topic too).
		batch.SetMaxTimestamp(b, false, p.CreateMaxTimestamp)
	}
	return batch.ParseHeader(b)
}

// SetLeaderEpoch sets the partition leader epoch that Append stamps on every
// batch from now on. Epochs only move forward: a lower one is refused. A
// new epoch enters the leader epoch cache starting at the log end, and the
// cache's checkpoint is fsynced before SetLeaderEpoch returns.
func (l *Log) SetLeaderEpoch(epoch int32) error {
	l.mu.Lock()
	cur := l.opts.LeaderEpoch
	if e, ok := l.epochs.latest(); ok {
		cur = max(cur, e.Epoch) // a follower's log holds its leaders' epochs
	}
	if epoch < cur {
		l.mu.Unlock()
		return fmt.Errorf("hot: leader epoch %d is below the log's current epoch %d", epoch, cur)
	}
	l.opts.LeaderEpoch = epoch
	changed := l.epochs.assign(epoch, l.next)
	l.mu.Unlock()
	if changed {
		return l.persistEpochs()
	}
	return nil
}

// LeaderEpoch is the epoch Append stamps on batches: the last one set, or
// the newest in the log if that is newer (a follower's, or after Open).
func (l *Log) LeaderEpoch() int32 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.opts.LeaderEpoch
}

// offsetsOverflowLocked reports whether appending a batch of records to the
// non-empty active segment would put an offset further from the segment's
// base than its index can address, so the segment must roll first. (An
// empty segment takes any batch: a batch holds at most MaxInt32 records.)
func (l *Log) offsetsOverflowLocked(records int32) bool {
	return l.active.size > 0 && l.next-l.active.base+int64(records) > l.maxRelOffset
}
