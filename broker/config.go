package broker

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tierlog/tierlog/hot"
)

// TopicConfig is a topic's configuration, with Kafka's names where Kafka has
// one.
type TopicConfig struct {
	SegmentBytes    int64           // segment.bytes
	SegmentMs       int64           // segment.ms
	RetentionMs     int64           // retention.ms; -1 keeps forever
	RetentionBytes  int64           // retention.bytes; -1 is unlimited
	MaxMessageBytes int32           // max.message.bytes: the largest batch
	FlushPolicy     hot.FlushPolicy // flush.policy: always | interval | os
	FlushMessages   int64           // flush.messages (interval); 0 = off
	FlushMs         int64           // flush.ms (interval)
	// LocalRetentionMs and LocalRetentionBytes (local.retention.ms/bytes)
	// bound what stays on local disk once uploaded; -2 means "same as
	// retention.ms/bytes", as in Kafka.
	LocalRetentionMs    int64
	LocalRetentionBytes int64
	// RemoteStorageEnable (remote.storage.enable) tiers sealed segments to
	// the bucket.
	RemoteStorageEnable bool
	// TimestampType (message.timestamp.type): CreateTime keeps producers'
	// timestamps, LogAppendTime stamps each batch with the append time.
	TimestampType hot.TimestampType
	// LocalDiskMaxBytes (local.disk.max.bytes) caps one partition's local
	// segments: past it producers get a retriable error until uploads and
	// local retention free space; -1 leaves only the server's ceiling.
	LocalDiskMaxBytes int64
	// MinInsyncReplicas (min.insync.replicas): an acks=all produce is
	// refused (NOT_ENOUGH_REPLICAS) while fewer replicas are in sync, and
	// answered only once that many hold it. Meaningful in a cluster.
	MinInsyncReplicas int64
	// UncleanLeaderElection (unclean.leader.election.enable) lets a replica
	// outside the in-sync set lead when no in-sync one is alive: the
	// partition comes back, losing what only the dead replicas held.
	UncleanLeaderElection bool
	// ObjectLockMode (remote.object.lock.mode: none, governance or
	// compliance) uploads the topic's objects with an S3 Object Lock
	// retention of ObjectLockDays (remote.object.lock.days) days;
	// ObjectLockLegalHold (remote.object.lock.legal.hold) puts a legal
	// hold on all of them. See objectlock.go.
	ObjectLockMode      string
	ObjectLockDays      int64
	ObjectLockLegalHold bool
}

// DefaultTopicConfig holds the server's built-in defaults: 64 MiB or 1 hour
// segments, history kept forever, Kafka's 1 MiB max batch, fsync before
// every acknowledgement.
func DefaultTopicConfig() TopicConfig {
	return TopicConfig{
		SegmentBytes:    64 << 20,
		SegmentMs:       3_600_000,
		RetentionMs:     -1,
		RetentionBytes:  -1,
		MaxMessageBytes: 1048588,
		FlushPolicy:     hot.FlushAlways,
		FlushMessages:   0,
		FlushMs:         1000,
		// A day of history on local disk; everything older is served from
		// the bucket.
		LocalRetentionMs:    86_400_000,
		LocalRetentionBytes: -2,
		RemoteStorageEnable: true,
		TimestampType:       hot.CreateTime,
		LocalDiskMaxBytes:   -1,
		MinInsyncReplicas:   1,
		ObjectLockMode:      LockModeNone,
	}
}

// configKey describes one setting: how to parse it into a TopicConfig and
// print it back.
type configKey struct {
	valid string
	set   func(c *TopicConfig, v string) error
	get   func(c TopicConfig) string
}

func intKey(valid string, lo, hi int64, field func(c *TopicConfig) *int64) configKey {
	return configKey{
		valid: valid,
		set: func(c *TopicConfig, v string) error {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil || n < lo || n > hi {
				return fmt.Errorf("%q is not %s", v, valid)
			}
			*field(c) = n
			return nil
		},
		get: func(c TopicConfig) string { return strconv.FormatInt(*field(&c), 10) },
	}
}

func boolKey(field func(c *TopicConfig) *bool) configKey {
	return configKey{
		valid: "true or false",
		set: func(c *TopicConfig, v string) error {
			b, err := strconv.ParseBool(strings.TrimSpace(v))
			if err != nil {
				return fmt.Errorf("%q is not true or false", v)
			}
			*field(c) = b
			return nil
		},
		get: func(c TopicConfig) string { return strconv.FormatBool(*field(&c)) },
	}
}

var configKeys = map[string]configKey{
	"segment.bytes": intKey(fmt.Sprintf("an integer from 1024 to %d", hot.MaxSegmentBytes), 1024, hot.MaxSegmentBytes,
		func(c *TopicConfig) *int64 { return &c.SegmentBytes }),
	// The millisecond keys take any value up to Kafka's Long.MAX_VALUE
	// (9223372036854775807, the "forever" its tools write); msDuration caps
	// what no time.Duration can hold at the largest one (292 years), which
	// is forever for every timestamp a record can carry until 2262.
	"segment.ms":      intKey("a positive integer (milliseconds)", 1, math.MaxInt64, func(c *TopicConfig) *int64 { return &c.SegmentMs }),
	"retention.ms":    intKey("-1 (forever) or a positive integer (milliseconds)", -1, math.MaxInt64, func(c *TopicConfig) *int64 { return &c.RetentionMs }),
	"retention.bytes": intKey("-1 (unlimited) or a non-negative integer", -1, 1<<62, func(c *TopicConfig) *int64 { return &c.RetentionBytes }),
	"flush.messages":  intKey("0 (off) or a positive integer", 0, 1<<62, func(c *TopicConfig) *int64 { return &c.FlushMessages }),
	"flush.ms":        intKey("a positive integer (milliseconds)", 1, math.MaxInt64, func(c *TopicConfig) *int64 { return &c.FlushMs }),
	"local.retention.ms": intKey("-2 (same as retention.ms), -1 (forever) or a positive integer (milliseconds)", -2, math.MaxInt64,
		func(c *TopicConfig) *int64 { return &c.LocalRetentionMs }),
	"local.retention.bytes": intKey("-2 (same as retention.bytes), -1 (unlimited) or a non-negative integer", -2, 1<<62,
		func(c *TopicConfig) *int64 { return &c.LocalRetentionBytes }),
	"local.disk.max.bytes": intKey("-1 (only the server's local_disk_max_bytes) or a positive integer (bytes of local segments per partition)", -1, 1<<62,
		func(c *TopicConfig) *int64 { return &c.LocalDiskMaxBytes }),
	"min.insync.replicas":            intKey("an integer from 1 to 32767", 1, math.MaxInt16, func(c *TopicConfig) *int64 { return &c.MinInsyncReplicas }),
	"remote.storage.enable":          boolKey(func(c *TopicConfig) *bool { return &c.RemoteStorageEnable }),
	"unclean.leader.election.enable": boolKey(func(c *TopicConfig) *bool { return &c.UncleanLeaderElection }),
	"remote.object.lock.mode":        lockModeKey,
	"remote.object.lock.days": intKey("0 (no retention) or a number of days from 1 to 36500", 0, 36500,
		func(c *TopicConfig) *int64 { return &c.ObjectLockDays }),
	"remote.object.lock.legal.hold": boolKey(func(c *TopicConfig) *bool { return &c.ObjectLockLegalHold }),
	"max.message.bytes": {
		valid: fmt.Sprintf("an integer from 128 to %d", hot.MaxSegmentBytes),
		set: func(c *TopicConfig, v string) error {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32)
			if err != nil || n < 128 || n > hot.MaxSegmentBytes {
				return fmt.Errorf("%q is not an integer from 128 to %d", v, hot.MaxSegmentBytes)
			}
			c.MaxMessageBytes = int32(n)
			return nil
		},
		get: func(c TopicConfig) string { return strconv.Itoa(int(c.MaxMessageBytes)) },
	},
	"message.timestamp.type": {
		valid: "CreateTime or LogAppendTime",
		set: func(c *TopicConfig, v string) error {
			t, err := hot.ParseTimestampType(strings.TrimSpace(v))
			if err != nil {
				return fmt.Errorf("%q is not CreateTime or LogAppendTime", v)
			}
			c.TimestampType = t
			return nil
		},
		get: func(c TopicConfig) string { return string(c.TimestampType) },
	},
	"flush.policy": {
		valid: "always, interval or os",
		set: func(c *TopicConfig, v string) error {
			p, err := hot.ParseFlushPolicy(strings.TrimSpace(v))
			if err != nil {
				return fmt.Errorf("%q is not always, interval or os", v)
			}
			c.FlushPolicy = p
			return nil
		},
		get: func(c TopicConfig) string { return string(c.FlushPolicy) },
	},
}

// ConfigKeyDoc says what values key takes ("" for an unknown key).
func ConfigKeyDoc(key string) string { return configKeys[key].valid }

// ConfigKeys lists the settable keys, sorted.
func ConfigKeys() []string { return slices.Sorted(maps.Keys(configKeys)) }

// ParseTopicConfig overlays kv (Kafka-named keys) on base. An unknown key or
// a bad value fails with ErrInvalidConfig, naming the key and what is valid.
func ParseTopicConfig(base TopicConfig, kv map[string]string) (TopicConfig, error) {
	c := base
	for _, k := range slices.Sorted(maps.Keys(kv)) {
		ck, ok := configKeys[k]
		if !ok {
			return base, fmt.Errorf("%w: unknown key %q (valid keys: %s)", ErrInvalidConfig, k, strings.Join(ConfigKeys(), ", "))
		}
		// A setter's error says what is wrong with the value; the key is
		// named here, once.
		if err := ck.set(&c, kv[k]); err != nil {
			return base, fmt.Errorf("%w: %s: %v", ErrInvalidConfig, k, err)
		}
	}
	if err := c.checkLockConfig(); err != nil {
		return base, err
	}
	// The active segment alone may fill a smaller ceiling, and it rolls
	// (so it can be uploaded and the space freed) only at segment.ms:
	// producers would be refused for that long.
	if c.LocalDiskMaxBytes >= 0 && c.LocalDiskMaxBytes < 2*c.SegmentBytes {
		return base, fmt.Errorf("%w: local.disk.max.bytes %d: must be -1 or at least twice segment.bytes (%d), or the active segment alone could fill it", ErrInvalidConfig, c.LocalDiskMaxBytes, 2*c.SegmentBytes)
	}
	return c, nil
}

// Map returns every setting under its Kafka name.
func (c TopicConfig) Map() map[string]string {
	m := make(map[string]string, len(configKeys))
	for k, ck := range configKeys {
		m[k] = ck.get(c)
	}
	return m
}

// localRetention resolves local.retention.* against retention.*: the
// limits the hot tier enforces when the topic is tiered.
func (c TopicConfig) localRetention() (ms, bytes int64) {
	ms, bytes = c.LocalRetentionMs, c.LocalRetentionBytes
	if ms == -2 {
		ms = c.RetentionMs
	}
	if bytes == -2 {
		bytes = c.RetentionBytes
	}
	return ms, bytes
}

// hotConfig translates a topic config into the partition log's. With
// tiering on (tiered), the hot tier enforces local retention - and only on
// segments whose upload is committed (the deletion guard); total retention
// is the tiering daemon's job. Without it, the hot tier is the whole log.
func (c TopicConfig) hotConfig(tiered bool) hot.Config {
	h := hot.DefaultConfig()
	h.SegmentBytes = c.SegmentBytes
	h.SegmentAge = msDuration(c.SegmentMs)
	retMs, retBytes := c.RetentionMs, c.RetentionBytes
	if tiered && c.RemoteStorageEnable {
		retMs, retBytes = c.localRetention()
	}
	h.RetentionAge = msDuration(retMs)
	h.RetentionBytes = retBytes
	h.MaxMessageBytes = int(c.MaxMessageBytes)
	h.FlushPolicy = c.FlushPolicy
	h.FlushMessages = c.FlushMessages
	h.FlushInterval = msDuration(c.FlushMs)
	h.TimestampType = c.TimestampType
	return h
}

// msDuration converts a millisecond setting to a duration, saturating at
// the largest duration (about 292 years) instead of wrapping: past
// 9223372036854 ms the product overflows int64 nanoseconds and "keep for
// centuries" became "delete now" (or "roll on every append").
// Negative values (-1 forever, -2 inherit) pass through as they are.
func msDuration(ms int64) time.Duration {
	if ms > math.MaxInt64/int64(time.Millisecond) {
		return math.MaxInt64
	}
	return time.Duration(ms) * time.Millisecond
}
