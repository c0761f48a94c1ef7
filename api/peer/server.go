// Package peer serves and calls the node-to-node gRPC service of a
// tierlog cluster (tierlog.v1.Peer): followers' replica fetches and
// epoch-end queries, heartbeats to the controller, metadata commands
// forwarded to the Raft leader, and each node's status.
package peer

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"google.golang.org/grpc"

	"github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/cluster"
	"github.com/tierlog/tierlog/hot"
)

// Server implements tierlogv1.PeerServer for one node.
type Server struct {
	tierlogv1.UnimplementedPeerServer
	b    *broker.Broker
	node *cluster.Node
	ctl  *cluster.Controller
}

// NewServer returns the peer service of a node.
func NewServer(b *broker.Broker, node *cluster.Node, ctl *cluster.Controller) *Server {
	return &Server{b: b, node: node, ctl: ctl}
}

// Register adds the service to g.
func (s *Server) Register(g *grpc.Server) { tierlogv1.RegisterPeerServer(g, s) }

// ReplicaFetch serves a follower (broker.ServeReplicaFetch).
func (s *Server) ReplicaFetch(ctx context.Context, req *tierlogv1.ReplicaFetchRequest) (*tierlogv1.ReplicaFetchResponse, error) {
	res, err := s.b.ServeReplicaFetch(ctx, broker.ReplicaFetchRequest{Topic: req.Topic, Partition: req.Partition,
		ReplicaID: req.ReplicaId, LeaderEpoch: req.LeaderEpoch, Offset: req.FetchOffset, MaxBytes: int(req.MaxBytes),
		MaxWait: time.Duration(req.MaxWaitMs) * time.Millisecond})
	out := &tierlogv1.ReplicaFetchResponse{LeaderEpoch: res.LeaderEpoch, Records: res.Records, HighWatermark: res.HighWatermark,
		LogStartOffset: res.LogStart, LogEndOffset: res.LogEnd}
	out.Error, out.Message, out.LeaderId = encodeError(err)
	return out, nil
}

// EndOffsetForEpoch serves a follower's truncation query.
func (s *Server) EndOffsetForEpoch(_ context.Context, req *tierlogv1.EndOffsetForEpochRequest) (*tierlogv1.EndOffsetForEpochResponse, error) {
	res, err := s.b.ServeEndOffsetForEpoch(broker.EpochEndRequest{Topic: req.Topic, Partition: req.Partition,
		ReplicaID: req.ReplicaId, CurrentEpoch: req.CurrentLeaderEpoch, Epoch: req.Epoch})
	out := &tierlogv1.EndOffsetForEpochResponse{Epoch: res.Epoch, EndOffset: res.End, LogStartOffset: res.LogStart}
	out.Error, out.Message, out.LeaderId = encodeError(err)
	return out, nil
}

// Heartbeat records a node as alive. Every node gets every node's beats,
// so whichever becomes the controller knows when each was last heard.
func (s *Server) Heartbeat(_ context.Context, req *tierlogv1.HeartbeatRequest) (*tierlogv1.HeartbeatResponse, error) {
	s.ctl.Heartbeat(cluster.Beat{Node: cluster.NodeInfo{ID: req.NodeId, RaftAddr: req.RaftAddr, GRPCAddr: req.GrpcAddr, KafkaAddr: req.KafkaAddr},
		Incarnation: req.Incarnation, Reconciled: req.ReconciledIndex}, time.Now())
	id, _ := s.node.Leader()
	return &tierlogv1.HeartbeatResponse{LeaderId: id}, nil
}

// Propose applies a command forwarded by another node, through the
// controller (which assigns replicas to a CreateTopic, counts an
// AddPartitions, retires a node). A command that meets a leadership
// change is forwarded on, within the caller's deadline.
func (s *Server) Propose(ctx context.Context, req *tierlogv1.ProposeRequest) (*tierlogv1.ProposeResponse, error) {
	out := &tierlogv1.ProposeResponse{}
	cmd, err := cluster.DecodeCommand(req.Command)
	if err == nil {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
		}
		err = s.ctl.Propose(ctx, cmd)
	}
	out.Error, out.Message, out.LeaderId = encodeError(err)
	return out, nil
}

// NodeStatus reports this node's view of the cluster.
func (s *Server) NodeStatus(context.Context, *tierlogv1.NodeStatusRequest) (*tierlogv1.NodeStatusResponse, error) {
	state, err := json.Marshal(s.node.View())
	if err != nil {
		return nil, err
	}
	ctlID, _ := s.node.Leader()
	out := &tierlogv1.NodeStatusResponse{NodeId: s.b.NodeID(), ControllerId: ctlID, State: state, Alive: map[int32]int64{}}
	if s.node.IsLeader() {
		out.SessionTimeoutMs = s.ctl.SessionTimeout().Milliseconds()
		for id, t := range s.ctl.Alive() {
			out.Alive[id] = t.UnixMilli()
		}
	}
	for _, p := range s.b.ReplicationStatus() {
		pr := &tierlogv1.PartitionReplication{Topic: p.Topic, Partition: p.Partition, LeaderEpoch: p.LeaderEpoch,
			HighWatermark: p.HighWatermark, LogEndOffset: p.LogEnd, LogStartOffset: p.LogStart}
		for _, r := range p.Replicas {
			pr.Replicas = append(pr.Replicas, &tierlogv1.ReplicaPosition{NodeId: r.ID, LogEndOffset: r.LogEnd,
				InSync: r.InSync, LastCaughtUpMs: r.LastCaughtUp.UnixMilli()})
		}
		out.Partitions = append(out.Partitions, pr)
	}
	return out, nil
}

// encodeError turns a broker or cluster error into the wire's.
func encodeError(err error) (tierlogv1.ReplicaError, string, int32) {
	if err == nil {
		return tierlogv1.ReplicaError_REPLICA_ERROR_UNSPECIFIED, "", 0
	}
	var nl *broker.NotLeaderError
	var cnl *cluster.NotLeaderError
	var oor *hot.OffsetOutOfRangeError
	switch {
	case errors.As(err, &nl):
		return tierlogv1.ReplicaError_REPLICA_ERROR_NOT_LEADER, err.Error(), nl.Leader
	case errors.As(err, &cnl):
		return tierlogv1.ReplicaError_REPLICA_ERROR_NOT_LEADER, err.Error(), cnl.LeaderID
	case errors.Is(err, broker.ErrFencedLeaderEpoch):
		return tierlogv1.ReplicaError_REPLICA_ERROR_FENCED_LEADER_EPOCH, err.Error(), 0
	case errors.Is(err, broker.ErrUnknownLeaderEpoch):
		return tierlogv1.ReplicaError_REPLICA_ERROR_UNKNOWN_LEADER_EPOCH, err.Error(), 0
	case errors.As(err, &oor):
		return tierlogv1.ReplicaError_REPLICA_ERROR_OFFSET_OUT_OF_RANGE, err.Error(), 0
	case errors.Is(err, broker.ErrUnknownTopic), errors.Is(err, broker.ErrInvalidPartition):
		return tierlogv1.ReplicaError_REPLICA_ERROR_UNKNOWN_PARTITION, err.Error(), 0
	case cluster.IsRefusal(err):
		return tierlogv1.ReplicaError_REPLICA_ERROR_REFUSED, err.Error(), 0
	}
	return tierlogv1.ReplicaError_REPLICA_ERROR_UNAVAILABLE, err.Error(), 0
}
