package broker

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/tierlog/tierlog/broker/groups"
	"github.com/tierlog/tierlog/tiering"
)

// What survives what, for committed consumer-group offsets:
//
//   - An OffsetCommit is acknowledged once it is written and fsynced to
//     DATA/groups/offsets.log: it survives a crash of the process or the
//     machine (groups.Coordinator.Commit).
//   - With a bucket, the live offsets are also copied to the bucket
//     (tiering.GroupOffsetsKey): every GroupsCopyInterval (30 s) when they
//     changed, and at a graceful shutdown (serve, after the Kafka listener
//     drained). A node restored into an empty data directory (serve
//     --takeover) takes them from there, so losing the data directory
//     loses at most the commits of the last interval, and none after a
//     graceful shutdown whose copy succeeded.
//   - Offsets of topics that do not exist after the restore are dropped,
//     as at every open.

// groupCopy is the state of the copies of the group offsets to the bucket.
type groupCopy struct {
	// turn lets one copy run at a time (a 1-slot semaphore, not a mutex,
	// so a copy waiting for its turn gives up when its context ends: the
	// shutdown copy's deadline holds even behind a copy hung on the
	// bucket). It guards the fields below.
	turn chan struct{}
	// ctx is the periodic copies' context: StopGroupOffsetsCopies ends it
	// (cancelling a copy in flight) before the shutdown copy.
	ctx  context.Context
	stop context.CancelFunc
	// kick asks the periodic loop for a copy now (DeleteTopic).
	kick chan struct{}

	// copied is the groups.Coordinator.Snapshot change count of the last
	// copy the bucket took; ok is false until one did (so a start copies
	// once: a crash may have left the bucket behind the local log).
	copied uint64
	ok     bool
	// fenced: another node owns the prefix; nothing more is copied.
	fenced   bool
	last     prometheus.Gauge
	failures prometheus.Counter
}

func newGroupCopy(reg prometheus.Registerer) *groupCopy {
	f := promauto.With(reg)
	ctx, stop := context.WithCancel(context.Background())
	return &groupCopy{turn: make(chan struct{}, 1), ctx: ctx, stop: stop, kick: make(chan struct{}, 1),
		last: f.NewGauge(prometheus.GaugeOpts{Name: "tierlog_groups_offsets_copied_timestamp_seconds",
			Help: "When the bucket last took a copy of the committed group offsets (Unix time; 0: not since start)."}),
		failures: f.NewCounter(prometheus.CounterOpts{Name: "tierlog_groups_offsets_copy_failures_total",
			Help: "Copies of the committed group offsets to the bucket that failed (retried at the next interval)."}),
	}
}

// CopyGroupOffsets copies the committed offsets of every group to the
// bucket if they changed since the last copy (a no-op without a bucket).
// A node fenced off the bucket prefix copies nothing: the new owner's copy
// is never overwritten (tiering.Store.PutGroupOffsets). Copies run one at
// a time; waiting for another ends with ctx. A cluster keeps the offsets
// in its Raft log instead (groupsync.go): no copy.
func (b *Broker) CopyGroupOffsets(ctx context.Context) error {
	if b.store == nil || b.opts.Cluster != nil {
		return nil
	}
	c := b.gcopy
	select {
	case c.turn <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("broker: copy the group offsets: waiting for the copy in flight: %w", ctx.Err())
	}
	defer func() { <-c.turn }()
	if c.fenced {
		return fmt.Errorf("broker: copy the group offsets: %w", tiering.ErrFenced)
	}
	// Checked before encoding a snapshot: most intervals change nothing,
	// and the encoding holds the lock commits take.
	if c.ok && b.groups.Changes() == c.copied {
		return nil
	}
	data, changes := b.groups.Snapshot()
	if err := b.store.PutGroupOffsets(ctx, data); err != nil {
		c.failures.Inc()
		if errors.Is(err, tiering.ErrFenced) {
			c.fenced = true
		}
		return err
	}
	c.copied, c.ok = changes, true
	c.last.SetToCurrentTime()
	return nil
}

// StopGroupOffsetsCopies ends the periodic copies of the group offsets,
// cancelling one in flight, so that the shutdown copy (serve's
// uploadAtShutdown, bounded by its own deadline) does not wait behind a
// periodic copy hung on the bucket, whose context would end only at Close.
func (b *Broker) StopGroupOffsetsCopies() { b.gcopy.stop() }

// copyGroupOffsetsSoon asks the periodic loop for a copy now rather than
// at the next interval (without waiting for it).
func (b *Broker) copyGroupOffsetsSoon() {
	select {
	case b.gcopy.kick <- struct{}{}:
	default: // one is asked for already
	}
}

// copyGroupOffsetsLoop copies the group offsets every GroupsCopyInterval,
// and when asked (copyGroupOffsetsSoon), until Close or
// StopGroupOffsetsCopies: one goroutine per broker, whatever the number of
// groups.
func (b *Broker) copyGroupOffsetsLoop() {
	defer b.ops.Done()
	ctx := b.gcopy.ctx
	tick := time.NewTicker(b.opts.GroupsCopyInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-b.gcopy.kick:
		}
		err := b.CopyGroupOffsets(ctx)
		switch {
		case errors.Is(err, tiering.ErrFenced):
			b.opts.Logger.Error("committed group offsets no longer copied to the bucket: another node owns it", "err", err)
			return
		case err != nil && ctx.Err() == nil:
			b.opts.Logger.Warn("committed group offsets not copied to the bucket; the next interval retries",
				"in", b.opts.GroupsCopyInterval, "err", err)
		}
	}
}

// restoreGroupOffsets gives a data directory restored from the bucket the
// bucket's copy of the group offsets, before the coordinator opens. A
// directory that has an offset log keeps it (it is newer than any copy).
func (b *Broker) restoreGroupOffsets(ctx context.Context) error {
	dir := filepath.Join(b.opts.Dir, groupsDir)
	if has, err := groups.HasLog(dir); err != nil || has {
		return err
	}
	data, found, err := b.store.GroupOffsets(ctx)
	if errors.Is(err, tiering.ErrBadGroupOffsets) {
		return fmt.Errorf("broker: %w; delete %s from the bucket to restore without committed offsets", err, tiering.GroupOffsetsKey)
	}
	if err != nil || !found {
		return err
	}
	if err := groups.RestoreSnapshot(dir, data); err != nil {
		return fmt.Errorf("broker: restore the group offsets from %s: %w; delete %s from the bucket to restore without them",
			b.opts.Bucket.Name(), err, tiering.GroupOffsetsKey)
	}
	b.opts.Logger.Info("restored committed group offsets from the bucket", "bucket", b.opts.Bucket.Name(), "bytes", len(data))
	return nil
}
