package broker

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/tiering"
)

// ErrObjectLockUnavailable refuses a topic config asking for S3 Object
// Lock (remote.object.lock.*) on a node whose bucket cannot lock objects:
// none, a file bucket, or an S3/MinIO bucket created without Object Lock.
// It is an invalid config (Kafka: INVALID_CONFIG) that no retry fixes
// (gRPC: FailedPrecondition).
var ErrObjectLockUnavailable = fmt.Errorf("%w: the bucket has no S3 Object Lock", ErrInvalidConfig)

// Object Lock modes as remote.object.lock.mode spells them.
const (
	LockModeNone       = "none"
	LockModeGovernance = "governance"
	LockModeCompliance = "compliance"
)

// lockModeKey is remote.object.lock.mode.
var lockModeKey = configKey{
	valid: "none, governance or compliance",
	set: func(c *TopicConfig, v string) error {
		switch m := strings.ToLower(strings.TrimSpace(v)); m {
		case LockModeNone, LockModeGovernance, LockModeCompliance:
			c.ObjectLockMode = m
			return nil
		}
		return fmt.Errorf("%q is not none, governance or compliance", v)
	},
	get: func(c TopicConfig) string { return c.ObjectLockMode },
}

// checkLockConfig checks the lock keys against each other.
func (c TopicConfig) checkLockConfig() error {
	locked := c.ObjectLockMode != "" && c.ObjectLockMode != LockModeNone
	switch {
	case locked && c.ObjectLockDays < 1:
		return fmt.Errorf("%w: remote.object.lock.mode=%s needs remote.object.lock.days of at least 1", ErrInvalidConfig, c.ObjectLockMode)
	case !locked && c.ObjectLockDays > 0:
		return fmt.Errorf("%w: remote.object.lock.days=%d locks nothing without remote.object.lock.mode (governance or compliance)", ErrInvalidConfig, c.ObjectLockDays)
	}
	return nil
}

// objectLock is what the tiering daemon does with the lock keys.
func (c TopicConfig) objectLock() tiering.ObjectLock {
	l := tiering.ObjectLock{LegalHold: c.ObjectLockLegalHold}
	switch c.ObjectLockMode {
	case LockModeGovernance:
		l.Mode = cold.LockGovernance
	case LockModeCompliance:
		l.Mode = cold.LockCompliance
	}
	if l.Mode != "" {
		l.Period = time.Duration(c.ObjectLockDays) * 24 * time.Hour
	}
	return l
}

// checkObjectLock refuses a config that locks objects unless the node's
// bucket can: a topic would otherwise be acknowledged as WORM and then
// fail every upload. It asks the bucket (one request) only for such a
// config.
func (b *Broker) checkObjectLock(c TopicConfig) error {
	l := c.objectLock()
	if !l.On() {
		return nil
	}
	what := "remote.object.lock.legal.hold=true"
	if l.Mode != "" {
		what = "remote.object.lock.mode=" + c.ObjectLockMode
	}
	if b.store == nil {
		return fmt.Errorf("%w: %s: this node has no bucket (start it with --bucket, on a bucket created with Object Lock)", ErrObjectLockUnavailable, what)
	}
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	on, err := cold.LockEnabled(ctx, b.store.Bucket)
	if err != nil {
		return fmt.Errorf("broker: %s: ask %s whether it has Object Lock: %w", what, b.store.Bucket.Name(), err)
	}
	if !on {
		return fmt.Errorf("%w: %s: bucket %s was not created with S3 Object Lock, so it cannot keep objects write-once; create a bucket with Object Lock enabled (it cannot be turned on later; a file bucket never has it) or leave the topic unlocked",
			ErrObjectLockUnavailable, what, b.store.Bucket.Name())
	}
	return nil
}
