package hot

import (
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"time"
)

// FlushPolicy says when appended bytes are fsynced, and so what an
// acknowledgement means.
type FlushPolicy string

const (
	// FlushAlways fsyncs before acknowledging. Concurrent appends share one
	// fsync (group commit). Readers see a record only once it is fsynced.
	FlushAlways FlushPolicy = "always"
	// FlushInterval acknowledges from the page cache and fsyncs every
	// FlushMs, or inline once FlushMessages records are unflushed.
	FlushInterval FlushPolicy = "interval"
	// FlushOS leaves flushing to the operating system. Segments are still
	// fsynced when they roll (sealing).
	FlushOS FlushPolicy = "os"
)

// ParseFlushPolicy checks a flush.policy value.
func ParseFlushPolicy(s string) (FlushPolicy, error) {
	switch p := FlushPolicy(s); p {
	case FlushAlways, FlushInterval, FlushOS:
		return p, nil
	}
	return "", fmt.Errorf("flush.policy %q: valid values are always, interval, os", s)
}

// Config is one partition log's configuration (topic config, Kafka names in
// the comments).
type Config struct {
	SegmentBytes    int64         // segment.bytes
	SegmentAge      time.Duration // segment.ms
	RetentionAge    time.Duration // retention.ms; <= 0 keeps forever
	RetentionBytes  int64         // retention.bytes; < 0 is unlimited
	MaxMessageBytes int           // max.message.bytes: largest batch accepted
	FlushPolicy     FlushPolicy   // flush.policy
	FlushMessages   int64         // flush.messages (interval): fsync inline after this many unflushed records; <= 0 off
	FlushInterval   time.Duration // flush.ms (interval)
	// IndexIntervalBytes is the log bytes between sparse index entries.
	IndexIntervalBytes int
	// TimestampType (message.timestamp.type) says whose clock batches
	// carry; empty means CreateTime.
	TimestampType TimestampType
}

// MaxSegmentBytes bounds segment.bytes: index entries hold 32-bit positions.
const MaxSegmentBytes = 1 << 30

// DefaultConfig holds the design's defaults.
func DefaultConfig() Config {
	return Config{
		SegmentBytes:       64 << 20,
		SegmentAge:         time.Hour,
		RetentionAge:       -1,
		RetentionBytes:     -1,
		MaxMessageBytes:    1048588,
		FlushPolicy:        FlushAlways,
		FlushInterval:      time.Second,
		IndexIntervalBytes: 4096,
		TimestampType:      CreateTime,
	}
}

// Validate reports the first bad setting, naming the valid range.
func (c Config) Validate() error {
	switch {
	case c.SegmentBytes < 1024 || c.SegmentBytes > MaxSegmentBytes:
		return fmt.Errorf("segment.bytes %d: valid range is 1024 to %d", c.SegmentBytes, MaxSegmentBytes)
	case c.SegmentAge <= 0:
		return fmt.Errorf("segment.ms %d: must be positive", c.SegmentAge.Milliseconds())
	case c.MaxMessageBytes < 128 || c.MaxMessageBytes > MaxSegmentBytes:
		// A batch larger than segment.bytes gets a segment of its own.
		return fmt.Errorf("max.message.bytes %d: valid range is 128 to %d", c.MaxMessageBytes, MaxSegmentBytes)
	case c.FlushInterval <= 0:
		return fmt.Errorf("flush.ms %d: must be positive", c.FlushInterval.Milliseconds())
	case c.IndexIntervalBytes <= 0:
		return fmt.Errorf("index interval %d: must be positive", c.IndexIntervalBytes)
	}
	if c.TimestampType != "" {
		if _, err := ParseTimestampType(string(c.TimestampType)); err != nil {
			return err
		}
	}
	_, err := ParseFlushPolicy(string(c.FlushPolicy))
	return err
}

// File is the part of *os.File a segment uses. It exists so tests can wrap
// files with faults (short writes, fsync errors).
type File interface {
	io.ReaderAt
	io.Writer
	Sync() error
	Truncate(size int64) error
	Stat() (fs.FileInfo, error)
	Close() error
}

// OpenFileFunc opens a segment file; os.OpenFile by default.
type OpenFileFunc func(name string, flag int, perm fs.FileMode) (File, error)

func osOpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	return os.OpenFile(name, flag, perm)
}

// Options are the parts of a log that come from its surroundings rather
// than its topic config.
type Options struct {
	Logger  *slog.Logger
	Metrics *Metrics // nil: no metrics
	// Topic and Partition label metrics and logs.
	Topic     string
	Partition int32
	// OpenFile opens the .log files; tests inject faults through it.
	OpenFile OpenFileFunc
	// Now is the clock; time.Now by default.
	Now func() time.Time
	// DeletionGuard, if set, must return true before retention deletes a
	// sealed segment. The tiering daemon uses it to keep segments whose upload
	// is not yet committed.
	DeletionGuard func(SegmentInfo) bool
	// OnSealed, if set, is called (without the log's lock) each time a
	// rolled segment is sealed: the tiering daemon uses it to upload the
	// segment at once instead of at its next pass.
	OnSealed func()
	// InitialOffset is the first offset of a log created empty. A partition
	// restored from the cold tier starts its local log where the remote
	// history ends.
	InitialOffset int64
	// BackgroundInterval is how often the background work checks segment
	// age and retention; 0 means 5s.
	BackgroundInterval time.Duration
	// Scheduler runs the log's background work (sealing, interval flush,
	// age roll, retention) with other logs' on shared goroutines. nil: the
	// log makes a private one, which holds one goroutine while it is open.
	Scheduler *Scheduler
	// LeaderEpoch is the partition leader epoch Append stamps on every
	// batch, whatever the producer sent (0 on a single node; replication
	// moves it with SetLeaderEpoch).
	LeaderEpoch int32
	// ProducerIDExpiration is how long the log keeps the state of an
	// idempotent producer that has stopped appending (Kafka's
	// producer.id.expiration.ms); 0 means DefaultProducerIDExpiration.
	// Expired producers are dropped when a segment rolls.
	ProducerIDExpiration time.Duration
	// MaxProducers is the most idempotent producers the log keeps the
	// state of; 0 means DefaultMaxProducers. Past it the least recently
	// seen is dropped, and is then treated as an unknown producer: its
	// next batch is accepted whatever its sequence (KIP-360), so a retry
	// of a batch it had in flight would be written again.
	MaxProducers int
	// Replicated says the log is one replica of a replicated partition:
	// consumers (Read, ReadBuf, EndOffset, Wait, Changed, OffsetForTime)
	// see only what lies below the high watermark (highwater.go), which
	// the leader moves as its in-sync followers catch up (ReplicaSet) and
	// a follower takes from its leader; replicas read up to the log end
	// (ReadReplica, LogEndOffset, ChangedEnd). The high watermark is
	// checkpointed. False (a single node): the high watermark is the log
	// end and nothing else changes.
	Replicated bool
}

func (o *Options) fill() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Topic != "" {
		// Every line of this log names its partition; lines add only
		// their own attributes.
		o.Logger = o.Logger.With("topic", o.Topic, "partition", o.Partition)
	}
	if o.OpenFile == nil {
		o.OpenFile = osOpenFile
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.BackgroundInterval <= 0 {
		o.BackgroundInterval = 5 * time.Second
	}
	if o.ProducerIDExpiration <= 0 {
		o.ProducerIDExpiration = DefaultProducerIDExpiration
	}
	if o.MaxProducers <= 0 {
		o.MaxProducers = DefaultMaxProducers
	}
}
