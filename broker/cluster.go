package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tierlog/tierlog/cluster"
	"github.com/tierlog/tierlog/hot"
)

// A broker in a cluster (Options.Cluster set) is one node of a replicated
// cluster: the topics, their replica assignment and each partition's
// leader, leader epoch and in-sync replicas (ISR) come from the Raft
// metadata (cluster package); the node's own partitions follow it
// (reconcile.go). Every node holds every topic's partition directories;
// only the assigned replicas ever hold data.
//
// A partition's leader takes appends and serves consumers, below the high
// watermark: the log end every in-sync replica has reached. Followers
// fetch from it over the peer service (follower.go), and the leader
// learns their positions from their fetches (leader.go, hot.ReplicaSet).

// ClusterOptions make the broker a node of a cluster.
type ClusterOptions struct {
	// NodeID is this node's id in the metadata.
	NodeID     int32
	Node       *cluster.Node
	Controller *cluster.Controller
	// Peers reaches the other nodes' peer services.
	Peers Peers
	// ReplicaLagMax is replica.lag.time.max.ms: an in-sync follower that
	// has not caught up with the leader's log end for this long leaves the
	// ISR (0: 10 s).
	ReplicaLagMax time.Duration
	// DefaultReplicationFactor is given to topics created without one (0:
	// min(3, nodes)).
	DefaultReplicationFactor int
	// FetchMaxWait bounds a follower's long poll (0: 500 ms).
	FetchMaxWait time.Duration
	// FetchMaxBytes bounds one replica fetch's records (0: 8 MiB).
	FetchMaxBytes int
}

func (o *ClusterOptions) fill() {
	if o.ReplicaLagMax <= 0 {
		o.ReplicaLagMax = 10 * time.Second
	}
	if o.FetchMaxWait <= 0 {
		o.FetchMaxWait = 500 * time.Millisecond
	}
	if o.FetchMaxBytes <= 0 {
		o.FetchMaxBytes = 8 << 20
	}
}

// Peers is how a follower reaches its leaders (the peer gRPC service).
// Errors are the broker's: *NotLeaderError, ErrFencedLeaderEpoch,
// ErrUnknownLeaderEpoch, *hot.OffsetOutOfRangeError, or transport errors.
type Peers interface {
	ReplicaFetch(ctx context.Context, leader int32, req ReplicaFetchRequest) (ReplicaFetchResponse, error)
	EndOffsetForEpoch(ctx context.Context, leader int32, req EpochEndRequest) (EpochEnd, error)
}

// ReplicaFetchRequest is a follower's fetch from a partition's leader.
type ReplicaFetchRequest struct {
	Topic       string
	Partition   int32
	ReplicaID   int32
	LeaderEpoch int32 // the epoch the follower follows
	Offset      int64 // the follower's log end
	MaxBytes    int
	MaxWait     time.Duration
}

// ReplicaFetchResponse holds whole batches as the leader stored them.
type ReplicaFetchResponse struct {
	Records       []byte
	HighWatermark int64
	LogStart      int64 // the leader's local log start
	LogEnd        int64
	LeaderEpoch   int32
}

// EpochEndRequest asks a leader where Epoch ends in its log (Kafka's
// OffsetForLeaderEpoch); CurrentEpoch is the epoch the asker follows.
type EpochEndRequest struct {
	Topic        string
	Partition    int32
	ReplicaID    int32
	CurrentEpoch int32
	Epoch        int32
}

// EpochEnd is the answer: the largest epoch <= the one asked the leader
// holds and the offset where it ends (-1, -1: none).
type EpochEnd struct {
	Epoch    int32
	End      int64
	LogStart int64
}

// NotLeaderError: this node does not lead the partition. Leader is the
// node that does, as this node knows it (cluster.NoLeader if none).
type NotLeaderError struct {
	Topic     string
	Partition int32
	Leader    int32
}

func (e *NotLeaderError) Error() string {
	if e.Leader == cluster.NoLeader {
		return fmt.Sprintf("%s/%d: this node is not the leader, and the partition has none now (its in-sync replicas are down)", e.Topic, e.Partition)
	}
	return fmt.Sprintf("%s/%d: this node is not the leader; node %d is", e.Topic, e.Partition, e.Leader)
}

// Unwrap makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }

// ErrNotLeader is what every *NotLeaderError is.
var ErrNotLeader = errors.New("not the partition leader")

// ErrFencedLeaderEpoch: the request's leader epoch is older than the
// partition's; the caller must refresh its metadata.
var ErrFencedLeaderEpoch = errors.New("fenced leader epoch")

// ErrUnknownLeaderEpoch: the request's leader epoch is newer than this
// node knows; retry once the metadata reached it.
var ErrUnknownLeaderEpoch = errors.New("unknown leader epoch")

// ErrNotEnoughReplicas refuses an acks=all produce, before anything is
// written, while the partition's ISR is smaller than min.insync.replicas.
var ErrNotEnoughReplicas = errors.New("not enough in-sync replicas")

// ErrNotEnoughReplicasAfterAppend: an acks=all produce was written on the
// leader but the ISR fell below min.insync.replicas before it reached
// them; it is not acknowledged (a retry may store it twice).
var ErrNotEnoughReplicasAfterAppend = hot.ErrNotEnoughReplicasAfterAppend

// NodeID is this node's id (0 for a single node).
func (b *Broker) NodeID() int32 {
	if b.rm == nil {
		return 0
	}
	return b.rm.self
}

// Clustered says whether the broker is a node of a cluster.
func (b *Broker) Clustered() bool { return b.rm != nil }

// Node is a cluster node's addresses as the metadata records them.
type Node = cluster.NodeInfo

// Nodes lists the cluster's registered nodes by id (nil for a single
// node: the front ends describe themselves).
func (b *Broker) Nodes() []Node {
	if b.rm == nil {
		return nil
	}
	s := b.rm.o.Node.View()
	out := make([]Node, 0, len(s.Nodes))
	for _, n := range s.Nodes {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b Node) int { return int(a.ID - b.ID) })
	return out
}

// DefaultReplicationFactor is what a topic created without one gets: the
// setting, else the smaller of 3 and the number of nodes (1 on a single
// node).
func (b *Broker) DefaultReplicationFactor() int {
	if b.rm == nil {
		return 1
	}
	if rf := b.rm.o.DefaultReplicationFactor; rf > 0 {
		return rf
	}
	return min(3, b.rm.o.Node.Voters())
}

// Voters is the number of nodes of the cluster (1 for a single node).
func (b *Broker) Voters() int {
	if b.rm == nil {
		return 1
	}
	return b.rm.o.Node.Voters()
}

// Controller is the node the Raft group follows (the controller), or
// cluster.NoLeader; a single node is its own.
func (b *Broker) Controller() int32 {
	if b.rm == nil {
		return 0
	}
	id, _ := b.rm.o.Node.Leader()
	return id
}

// Route is a partition's replication metadata.
type Route struct {
	Leader      int32
	LeaderEpoch int32
	Replicas    []int32
	ISR         []int32
}

// Route returns where a partition lives. A single node leads every
// partition alone at the log's leader epoch.
func (b *Broker) Route(name string, partition int32) (Route, error) {
	if b.rm == nil {
		p, err := b.Partition(name, partition)
		if err != nil {
			return Route{}, err
		}
		return Route{Leader: 0, LeaderEpoch: p.Log().LeaderEpoch(), Replicas: []int32{0}, ISR: []int32{0}}, nil
	}
	if _, err := b.Partition(name, partition); err != nil {
		return Route{}, err
	}
	p, err := b.rm.o.Node.View().Partition(name, partition)
	if err != nil {
		return Route{}, fmt.Errorf("%w: %v", ErrUnknownTopic, err)
	}
	return Route{Leader: p.Leader, LeaderEpoch: p.LeaderEpoch, Replicas: p.Replicas, ISR: p.ISR}, nil
}
