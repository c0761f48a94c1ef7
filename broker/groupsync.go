package broker

import (
	"context"
	"time"

	"github.com/tierlog/tierlog/broker/groups"
	"github.com/tierlog/tierlog/cluster"
)

// In a cluster the controller coordinates every consumer group (Kafka
// clients find it with FindCoordinator), and each durable change of the
// committed offsets is committed to the Raft log before the client is
// answered (groups.Options.Replicate), so a majority of the nodes holds
// it. A node that becomes the controller loads the offsets from its Raft
// state before it serves group requests: committed offsets survive the
// loss of any one node. Group membership is not replicated: members
// rejoin the new coordinator, as they do when Kafka's moves.

// groupReplicateTimeout bounds one batch's commit to the Raft log.
const groupReplicateTimeout = 10 * time.Second

// replicateGroupOffsets commits a batch of offset changes to the Raft log.
func (b *Broker) replicateGroupOffsets(offs []groups.OffsetOf) error {
	if b.rm == nil {
		// Open's own clean-ups (offsets of topics gone from disk, a
		// restore's revision): local only. The node serves no group
		// request before it loads the cluster's copy as coordinator, and
		// the metadata drops a deleted topic's offsets itself.
		return nil
	}
	out := make([]cluster.GroupOffset, len(offs))
	for i, o := range offs {
		g := cluster.GroupOffset{Group: o.Group, Topic: o.Topic, Partition: o.Partition, Offset: o.Offset.Offset,
			LeaderEpoch: o.LeaderEpoch, Metadata: o.Metadata, CommitMs: o.CommitTime.UnixMilli()}
		if !o.ExpireTime.IsZero() {
			g.ExpireMs = o.ExpireTime.UnixMilli()
		}
		if g.Offset < 0 {
			g.Offset = -1
		}
		out[i] = g
	}
	ctx, cancel := context.WithTimeout(b.ctx, groupReplicateTimeout)
	defer cancel()
	// Applied on this node, which is the Raft leader while it coordinates:
	// the controller's Propose does not forward to a stale one.
	return b.opts.Cluster.Node.Apply(ctx, cluster.Command{CommitGroupOffsets: &cluster.CommitGroupOffsets{Offsets: out}})
}

// loadGroupOffsets replaces the coordinator's offsets with the Raft
// state's, on a node that just became the controller (its state is
// caught up: see replicaManager.coordinate).
func (b *Broker) loadGroupOffsets() error {
	return b.groups.Load(func() []groups.OffsetOf {
		offs := b.opts.Cluster.Node.GroupOffsets()
		out := make([]groups.OffsetOf, len(offs))
		for i, g := range offs {
			o := groups.Offset{Offset: g.Offset, LeaderEpoch: g.LeaderEpoch, Metadata: g.Metadata, CommitTime: time.UnixMilli(g.CommitMs)}
			if g.ExpireMs != 0 {
				o.ExpireTime = time.UnixMilli(g.ExpireMs)
			}
			out[i] = groups.OffsetOf{Group: g.Group, PartitionOffset: groups.PartitionOffset{Topic: g.Topic, Partition: g.Partition, Offset: o}}
		}
		return out
	})
}

// IsGroupCoordinator says whether this node answers group requests: a
// single node always; in a cluster, the controller once it has loaded the
// offsets in its current term (a node that lost the seat and won it back
// must load them again: another coordinator may have taken commits
// meanwhile).
func (b *Broker) IsGroupCoordinator() bool {
	if b.rm == nil {
		return true
	}
	n := b.rm.o.Node
	return n.IsLeader() && b.rm.coordTerm.Load() == n.Term()
}

// coordinate runs until the broker closes: whenever this node is the
// controller in a term it has not loaded the group offsets in, it loads
// them from the Raft state (once that is caught up). Its own loop: no
// bucket I/O or role change stands in its way.
func (rm *replicaManager) coordinate() {
	watch, unwatch := rm.o.Node.Watch()
	defer unwatch()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if term := rm.o.Node.Term(); rm.o.Node.IsLeader() && rm.coordTerm.Load() != term {
			if err := rm.loadCoordination(); err != nil {
				rm.log.Warn("group coordinator: cannot load the committed offsets; retrying", "err", err)
			} else {
				rm.coordTerm.Store(term)
				rm.log.Info("coordinating consumer groups", "term", term, "offsets", len(rm.o.Node.GroupOffsets()))
			}
		}
		select {
		case <-rm.ctx.Done():
			return
		case <-watch:
		case <-tick.C:
		}
	}
}

// loadCoordination waits for the Raft state to be caught up (every entry
// of earlier terms applied) and loads the group offsets from it.
func (rm *replicaManager) loadCoordination() error {
	ctx, cancel := context.WithTimeout(rm.ctx, 10*time.Second)
	defer cancel()
	if err := rm.o.Node.WaitCaughtUp(ctx); err != nil {
		return err
	}
	return rm.b.loadGroupOffsets()
}
