package broker

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/tierlog/tierlog/cluster"
	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/tiering"
)

// lead runs while this node leads a replicated partition: it moves the
// high watermark when the leader's own log end moves (the followers'
// fetches move it too, in ServeReplicaFetch), and asks the controller to
// shrink the ISR by followers that fell behind for ReplicaLagMax and to
// expand it by those that caught up.
func (rm *replicaManager) lead(ctx context.Context, k partKey, part *tiering.Partition, r *role) {
	log := part.Log()
	check := time.NewTicker(max(rm.o.ReplicaLagMax/4, 50*time.Millisecond))
	defer check.Stop()
	for {
		moved, closed := log.ChangedEnd()
		r.rs.Advance()
		select {
		case <-ctx.Done():
			return
		case <-closed:
			return
		case <-moved:
		case <-r.expand:
			rm.changeISR(ctx, k, r, r.rs.CaughtUp(), true)
		case now := <-check.C:
			rm.changeISR(ctx, k, r, r.rs.OutOfSync(now, rm.o.ReplicaLagMax), false)
			rm.changeISR(ctx, k, r, r.rs.CaughtUp(), true)
			rm.recordLogStart(ctx, k, part, r)
		}
	}
}

// recordLogStart records in the metadata's remote log start how far total
// retention has moved the partition's first offset (in the bucket or
// local), so every node and `cluster status` see where its history
// begins. Only forward, only at the leader's epoch (the state refuses the
// rest).
func (rm *replicaManager) recordLogStart(ctx context.Context, k partKey, part *tiering.Partition, r *role) {
	p, err := rm.o.Node.View().Partition(k.topic, k.partition)
	start := part.StartOffset()
	if err != nil || start <= p.RemoteLogStart {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err = rm.o.Controller.Propose(pctx, cluster.Command{SetRemoteLogStart: &cluster.SetRemoteLogStart{
		Topic: k.topic, Partition: k.partition, LeaderEpoch: r.epoch, Offset: start}})
	if err != nil && ctx.Err() == nil {
		rm.log.Warn("record the partition's log start in the metadata; retrying", "topic", k.topic, "partition", k.partition, "offset", start, "err", err)
	}
}

// changeISR proposes an ISR change decided at the role's epoch; the
// metadata watch then gives it to the ReplicaSet (reconcileRoles). A
// refused or failed proposal is retried at the next check.
func (rm *replicaManager) changeISR(ctx context.Context, k partKey, r *role, ids []int32, expand bool) {
	if len(ids) == 0 {
		return
	}
	c := &cluster.ChangeISR{Topic: k.topic, Partition: k.partition, LeaderEpoch: r.epoch, Replicas: ids}
	cmd := cluster.Command{ShrinkISR: c}
	what := "shrink"
	if expand {
		cmd, what = cluster.Command{ExpandISR: c}, "expand"
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rm.o.Controller.Propose(pctx, cmd); err != nil {
		if ctx.Err() == nil {
			rm.log.Warn("ISR change not accepted; retrying", "op", what, "topic", k.topic, "partition", k.partition, "replicas", ids, "err", err)
		}
		return
	}
	rm.isrChanges.WithLabelValues(what).Inc()
	rm.log.Info("ISR changed", "op", what, "topic", k.topic, "partition", k.partition, "replicas", ids, "epoch", r.epoch)
}

// ServeReplicaFetch answers a follower's fetch on the partition's leader:
// it records the follower's position (its fetch offset is its log end),
// which may move the high watermark, then returns batches from that
// offset up to the leader's log end, waiting up to req.MaxWait for some
// when there are none.
func (b *Broker) ServeReplicaFetch(ctx context.Context, req ReplicaFetchRequest) (ReplicaFetchResponse, error) {
	r, log, err := b.leaderFor(req.Topic, req.Partition, req.LeaderEpoch)
	if err != nil {
		return ReplicaFetchResponse{}, err
	}
	resp := ReplicaFetchResponse{LeaderEpoch: r.epoch}
	start, end := log.StartOffset(), log.LogEndOffset()
	if req.Offset < start || req.Offset > end {
		return ReplicaFetchResponse{LogStart: start, LogEnd: end, LeaderEpoch: r.epoch},
			&hot.OffsetOutOfRangeError{Offset: req.Offset, Start: start, End: end}
	}
	r.rs.FollowerFetched(req.ReplicaID, req.Offset, time.Now())
	if !slices.Contains(r.rs.ISR(), req.ReplicaID) {
		select {
		case r.expand <- struct{}{}:
		default:
		}
	}
	if req.Offset == end && req.MaxWait > 0 {
		wait := time.NewTimer(req.MaxWait)
		moved, closed := log.ChangedEnd()
		if log.LogEndOffset() == req.Offset {
			select {
			case <-moved:
			case <-closed:
			case <-wait.C:
			case <-ctx.Done():
			case <-r.ctx.Done():
			}
		}
		wait.Stop()
	}
	res, err := log.ReadReplica(req.Offset, req.MaxBytes, nil)
	if err != nil {
		return resp, err
	}
	resp.Records, resp.HighWatermark = res.Records, log.HighWatermark()
	resp.LogStart, resp.LogEnd = res.StartOffset, res.EndOffset
	return resp, nil
}

// ServeEndOffsetForEpoch answers a follower's OffsetForLeaderEpoch on the
// partition's leader.
func (b *Broker) ServeEndOffsetForEpoch(req EpochEndRequest) (EpochEnd, error) {
	_, log, err := b.leaderFor(req.Topic, req.Partition, req.CurrentEpoch)
	if err != nil {
		return EpochEnd{}, err
	}
	ep, end := log.EndOffsetForEpoch(req.Epoch)
	return EpochEnd{Epoch: ep, End: end, LogStart: log.StartOffset()}, nil
}

// leaderFor returns the role and log of a replicated partition this node
// leads at epoch, or the error a follower acts on.
func (b *Broker) leaderFor(name string, partition, epoch int32) (*role, *hot.Log, error) {
	if b.rm == nil {
		return nil, nil, &NotLeaderError{Topic: name, Partition: partition, Leader: cluster.NoLeader}
	}
	p, err := b.Partition(name, partition)
	if err != nil {
		return nil, nil, err
	}
	r, err := b.rm.leading(name, partition)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case epoch < r.epoch:
		return nil, nil, ErrFencedLeaderEpoch
	case epoch > r.epoch:
		return nil, nil, ErrUnknownLeaderEpoch
	case r.rs == nil:
		return nil, nil, &NotLeaderError{Topic: name, Partition: partition, Leader: cluster.NoLeader}
	}
	return r, p.Log(), nil
}

// PartitionReplication is a partition this node leads, as it sees its
// replicas.
type PartitionReplication struct {
	Topic                           string
	Partition, LeaderEpoch          int32
	HighWatermark, LogEnd, LogStart int64
	Replicas                        []hot.ReplicaPosition
}

// ReplicationStatus lists the partitions this node leads (for `tierlog
// cluster status`), in topic, partition order.
func (b *Broker) ReplicationStatus() []PartitionReplication {
	if b.rm == nil {
		return nil
	}
	b.rm.mu.RLock()
	keys := slices.Collect(maps.Keys(b.rm.parts))
	b.rm.mu.RUnlock()
	slices.SortFunc(keys, func(x, y partKey) int {
		return cmp.Or(strings.Compare(x.topic, y.topic), cmp.Compare(x.partition, y.partition))
	})
	var out []PartitionReplication
	for _, k := range keys {
		r := b.rm.current(k.topic, k.partition)
		p, err := b.Partition(k.topic, k.partition)
		if r == nil || r.leader != b.rm.self || err != nil {
			continue
		}
		log := p.Log()
		pr := PartitionReplication{Topic: k.topic, Partition: k.partition, LeaderEpoch: r.epoch,
			HighWatermark: log.HighWatermark(), LogEnd: log.LogEndOffset(), LogStart: log.StartOffset()}
		if r.rs != nil {
			pr.Replicas = r.rs.Positions()
		}
		out = append(out, pr)
	}
	return out
}
