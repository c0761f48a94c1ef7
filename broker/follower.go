package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/tiering"
)

// follow runs while this node follows a partition's leader: first it cuts
// its log where it diverges from the leader's (the end, on the leader, of
// its own newest epoch), then it fetches and appends the leader's batches
// as they are, taking the leader's high watermark as its own.
func (rm *replicaManager) follow(ctx context.Context, k partKey, part *tiering.Partition, r *role) {
	log := part.Log()
	backoff := newBackoff()
	truncated := false
	// The manifest is re-read beside the fetches, never in their way: a
	// bucket that stalls must not stop replication (only local retention
	// waits for it).
	refresher := make(chan struct{})
	go func() {
		defer close(refresher)
		rm.refreshManifest(ctx, k, part)
	}()
	defer func() { <-refresher }()
	for ctx.Err() == nil {
		if !truncated {
			if err := rm.truncateToLeader(ctx, k, log, r); err != nil {
				rm.followError(ctx, k, r, "truncate", err, backoff)
				continue
			}
			truncated = true
		}
		err := rm.fetchOnce(ctx, k, log, r)
		var oor *hot.OffsetOutOfRangeError
		switch {
		case err == nil:
			backoff.reset()
		case errors.As(err, &oor) && oor.Offset < oor.Start:
			// The leader no longer holds what this replica needs next
			// (a new or wiped replica, or one far behind while the leader
			// tiered and dropped it): start at the leader's local log start;
			// older history is in the bucket, not copied again.
			rm.log.Info("replica starts at the leader's log start", "topic", k.topic, "partition", k.partition, "from", log.LogEndOffset(), "to", oor.Start)
			if err := log.TruncateFullyAndStartAt(oor.Start); err != nil {
				rm.followError(ctx, k, r, "restart at leader's log start", err, backoff)
			}
		case errors.As(err, &oor):
			// Ahead of the leader: diverged. Cut again, by epoch.
			truncated = false
			rm.followError(ctx, k, r, "fetch", err, backoff)
		default:
			rm.followError(ctx, k, r, "fetch", err, backoff)
		}
	}
}

// followError logs and waits before the next try.
func (rm *replicaManager) followError(ctx context.Context, k partKey, r *role, what string, err error, b *backoff) {
	if ctx.Err() != nil {
		return
	}
	level := slog.LevelDebug // a leader change makes a few failures normal
	if b.n >= 3 {
		level = slog.LevelWarn
	}
	rm.log.Log(ctx, level, "replica fetch failed; retrying", "topic", k.topic, "partition", k.partition,
		"leader", r.leader, "epoch", r.epoch, "step", what, "err", err)
	b.wait(ctx)
}

// truncateToLeader cuts the log to the offset where its newest epoch
// ends on the leader (Kafka's OffsetForLeaderEpoch truncation), so the
// two logs agree up to this replica's log end.
func (rm *replicaManager) truncateToLeader(ctx context.Context, k partKey, log *hot.Log, r *role) error {
	entries := log.EpochEntries()
	if len(entries) == 0 || log.LogEndOffset() == log.StartOffset() {
		return nil
	}
	last := entries[len(entries)-1].Epoch
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ans, err := rm.o.Peers.EndOffsetForEpoch(rctx, r.leader, EpochEndRequest{Topic: k.topic, Partition: k.partition,
		ReplicaID: rm.self, CurrentEpoch: r.epoch, Epoch: last})
	if err != nil {
		return err
	}
	end := log.LogEndOffset()
	var cut int64
	switch {
	case ans.Epoch < 0 || ans.End < 0:
		// The leader holds none of this replica's epochs: nothing here is
		// known to match, keep nothing past the leader's log start.
		cut = min(end, ans.LogStart)
	default:
		cut = min(end, ans.End)
		if ans.Epoch < last {
			// The leader never had our newest epoch: our log agrees with
			// it only up to where the leader's epoch ends in ours.
			if _, ours := log.EndOffsetForEpoch(ans.Epoch); ours >= 0 {
				cut = min(cut, ours)
			}
		}
	}
	if cut >= end {
		return nil
	}
	if cut < log.StartOffset() {
		rm.log.Warn("replica diverged before its log start; starting over at the leader's log start", "topic", k.topic, "partition", k.partition, "start", ans.LogStart)
		return log.TruncateFullyAndStartAt(ans.LogStart)
	}
	rm.truncations.Inc()
	rm.log.Info("truncating replica to the leader's epoch boundary", "topic", k.topic, "partition", k.partition,
		"from", end, "to", cut, "our_epoch", last, "leader_epoch_end", ans.Epoch, "leader", r.leader)
	return log.TruncateTo(cut)
}

// fetchOnce fetches from the leader and appends what it got.
func (rm *replicaManager) fetchOnce(ctx context.Context, k partKey, log *hot.Log, r *role) error {
	fctx, cancel := context.WithTimeout(ctx, rm.o.FetchMaxWait+10*time.Second)
	defer cancel()
	resp, err := rm.o.Peers.ReplicaFetch(fctx, r.leader, ReplicaFetchRequest{Topic: k.topic, Partition: k.partition,
		ReplicaID: rm.self, LeaderEpoch: r.epoch, Offset: log.LogEndOffset(), MaxBytes: rm.o.FetchMaxBytes, MaxWait: rm.o.FetchMaxWait})
	if err != nil {
		return err
	}
	recs := resp.Records
	var pending []*hot.PendingAppend
	for len(recs) > 0 {
		h, err := batch.ParseHeader(recs)
		if err != nil || h.Size() > len(recs) {
			return fmt.Errorf("%w: replica fetch from node %d returned a bad batch: %v", hot.ErrCorruptBatch, r.leader, err)
		}
		if h.NextOffset() <= log.LogEndOffset() {
			recs = recs[h.Size():] // already held (a batch that began before the fetch offset)
			continue
		}
		pa, err := log.AppendReplicaDeferred(recs[:h.Size()])
		if err != nil {
			return err
		}
		pending = append(pending, pa)
		recs = recs[h.Size():]
	}
	for _, pa := range pending {
		if _, err := pa.Wait(); err != nil {
			return err
		}
	}
	log.SetHighWatermark(min(resp.HighWatermark, log.LogEndOffset()))
	return nil
}

// manifestRefresh is how often a follower re-reads its partition's
// manifest, so local retention frees what the leader uploaded; one
// attempt may take manifestRefreshTimeout.
const (
	manifestRefresh        = 30 * time.Second
	manifestRefreshTimeout = 20 * time.Second
)

// refreshManifest re-reads a followed partition's manifest every
// manifestRefresh until ctx ends.
func (rm *replicaManager) refreshManifest(ctx context.Context, k partKey, part *tiering.Partition) {
	t := time.NewTicker(manifestRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, manifestRefreshTimeout)
		err := part.RefreshManifest(rctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			rm.log.Warn("follower: re-read the partition's manifest", "topic", k.topic, "partition", k.partition, "err", err)
		}
	}
}

// backoff spaces retries: 50 ms doubling to 1 s.
type backoff struct {
	n int
	d time.Duration
}

func newBackoff() *backoff { return &backoff{d: 50 * time.Millisecond} }

func (b *backoff) reset() { b.n, b.d = 0, 50*time.Millisecond }

func (b *backoff) wait(ctx context.Context) {
	t := time.NewTimer(b.d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	b.n++
	b.d = min(2*b.d, time.Second)
}
