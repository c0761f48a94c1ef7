package peer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/cluster"
	"github.com/tierlog/tierlog/hot"
)

// maxMessageBytes bounds a replica fetch answer (the broker asks for at
// most 8 MiB of records by default; a batch may be larger).
const maxMessageBytes = 256 << 20

// Client calls the other nodes' peer services. Nodes are found by id in
// the cluster metadata (their gRPC address); one connection per node is
// kept and redialled when the address changes. It implements
// broker.Peers and is the controller's forwarder.
type Client struct {
	node *cluster.Node
	// incarnation names this process in its heartbeats (random per start).
	incarnation uint64
	// reconciled reports how far this node's topics follow the metadata
	// (SetReconciled; 0 until the broker is open).
	reconciled atomic.Pointer[func() uint64]
	mu         sync.Mutex
	// conns by node id; addr is the address it was dialled at.
	conns map[int32]*peerConn
}

type peerConn struct {
	addr string
	cc   *grpc.ClientConn
	c    tierlogv1.PeerClient
}

// NewClient returns a client that looks nodes up in node's state.
func NewClient(node *cluster.Node) *Client {
	return &Client{node: node, conns: map[int32]*peerConn{}, incarnation: rand.Uint64()}
}

// peer returns a client for node id.
func (c *Client) peer(id int32) (tierlogv1.PeerClient, error) {
	info, ok := c.node.View().Nodes[id]
	if !ok || info.GRPCAddr == "" {
		return nil, fmt.Errorf("peer: node %d has no registered address", id)
	}
	return c.dial(id, info.GRPCAddr)
}

func (c *Client) dial(id int32, addr string) (tierlogv1.PeerClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pc, ok := c.conns[id]; ok {
		if pc.addr == addr {
			return pc.c, nil
		}
		pc.cc.Close()
		delete(c.conns, id)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes)))
	if err != nil {
		return nil, fmt.Errorf("peer: node %d at %s: %w", id, addr, err)
	}
	pc := &peerConn{addr: addr, cc: cc, c: tierlogv1.NewPeerClient(cc)}
	c.conns[id] = pc
	return pc.c, nil
}

// Close closes every connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for id, pc := range c.conns {
		errs = append(errs, pc.cc.Close())
		delete(c.conns, id)
	}
	return errors.Join(errs...)
}

// ReplicaFetch implements broker.Peers.
func (c *Client) ReplicaFetch(ctx context.Context, leader int32, req broker.ReplicaFetchRequest) (broker.ReplicaFetchResponse, error) {
	p, err := c.peer(leader)
	if err != nil {
		return broker.ReplicaFetchResponse{}, err
	}
	r, err := p.ReplicaFetch(ctx, &tierlogv1.ReplicaFetchRequest{Topic: req.Topic, Partition: req.Partition,
		ReplicaId: req.ReplicaID, LeaderEpoch: req.LeaderEpoch, FetchOffset: req.Offset, MaxBytes: int32(req.MaxBytes),
		MaxWaitMs: uint32(req.MaxWait / time.Millisecond)})
	if err != nil {
		return broker.ReplicaFetchResponse{}, err
	}
	out := broker.ReplicaFetchResponse{Records: r.Records, HighWatermark: r.HighWatermark, LogStart: r.LogStartOffset,
		LogEnd: r.LogEndOffset, LeaderEpoch: r.LeaderEpoch}
	return out, decodeError(r.Error, r.Message, r.LeaderId, req.Topic, req.Partition, req.Offset, r.LogStartOffset, r.LogEndOffset)
}

// EndOffsetForEpoch implements broker.Peers.
func (c *Client) EndOffsetForEpoch(ctx context.Context, leader int32, req broker.EpochEndRequest) (broker.EpochEnd, error) {
	p, err := c.peer(leader)
	if err != nil {
		return broker.EpochEnd{}, err
	}
	r, err := p.EndOffsetForEpoch(ctx, &tierlogv1.EndOffsetForEpochRequest{Topic: req.Topic, Partition: req.Partition,
		ReplicaId: req.ReplicaID, CurrentLeaderEpoch: req.CurrentEpoch, Epoch: req.Epoch})
	if err != nil {
		return broker.EpochEnd{}, err
	}
	return broker.EpochEnd{Epoch: r.Epoch, End: r.EndOffset, LogStart: r.LogStartOffset},
		decodeError(r.Error, r.Message, r.LeaderId, req.Topic, req.Partition, 0, r.LogStartOffset, 0)
}

// Forward sends a command to the Raft leader (the controller's
// forwarder).
func (c *Client) Forward(ctx context.Context, leader cluster.NodeInfo, cmd cluster.Command) error {
	data, err := cmd.Encode()
	if err != nil {
		return err
	}
	p, err := c.dial(leader.ID, leader.GRPCAddr)
	if err != nil {
		return err
	}
	r, err := p.Propose(ctx, &tierlogv1.ProposeRequest{Command: data})
	if err != nil {
		return err
	}
	return decodeError(r.Error, r.Message, r.LeaderId, "", 0, 0, 0, 0)
}

// Heartbeats tells every node every interval that self is alive, until
// ctx ends: the controller, and the nodes that may become controller (so
// they know when each node was last heard, see cluster.Controller). Beats
// go to registered nodes; the controller registers itself, then the
// others from their beats.
func (c *Client) Heartbeats(ctx context.Context, ctl *cluster.Controller, self cluster.NodeInfo, interval time.Duration, logger *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failures := 0
	for {
		ctl.Heartbeat(cluster.Beat{Node: self, Incarnation: c.incarnation, Reconciled: c.reconciledIndex()}, time.Now())
		if err := c.heartbeat(ctx, self, interval); err != nil {
			failures++
			if failures == 10 { // once per outage, not every beat
				logger.Warn("heartbeats to the controller fail", "err", err)
			}
		} else {
			failures = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// SetReconciled gives the heartbeats the broker's reconciled index.
func (c *Client) SetReconciled(f func() uint64) { c.reconciled.Store(&f) }

func (c *Client) reconciledIndex() uint64 {
	if f := c.reconciled.Load(); f != nil {
		return (*f)()
	}
	return 0
}

// heartbeat sends one beat to every other node at once; the error is the
// controller's (the others' failures are theirs to notice).
func (c *Client) heartbeat(ctx context.Context, self cluster.NodeInfo, timeout time.Duration) error {
	leader, leaderAddr := c.node.Leader()
	targets := map[int32]string{}
	for id, n := range c.node.View().Nodes {
		if id != self.ID && n.GRPCAddr != "" {
			targets[id] = n.GRPCAddr
		}
	}
	if _, ok := targets[leader]; !ok && leader >= 0 && leader != self.ID {
		return fmt.Errorf("controller %d (raft %s) has not registered its gRPC address yet", leader, leaderAddr)
	}
	hctx, cancel := context.WithTimeout(ctx, 2*timeout)
	defer cancel()
	req := &tierlogv1.HeartbeatRequest{NodeId: self.ID, RaftAddr: self.RaftAddr, GrpcAddr: self.GRPCAddr, KafkaAddr: self.KafkaAddr,
		Incarnation: c.incarnation, ReconciledIndex: c.reconciledIndex()}
	var wg sync.WaitGroup
	var leaderErr error
	for id, addr := range targets {
		p, err := c.dial(id, addr)
		if err != nil {
			if id == leader {
				leaderErr = err
			}
			continue
		}
		wg.Go(func() {
			_, err := p.Heartbeat(hctx, req)
			if id == leader {
				leaderErr = err
			}
		})
	}
	wg.Wait()
	if leader < 0 {
		return errors.New("no controller known")
	}
	return leaderErr
}

// Status asks one node (by gRPC address) for its view.
func Status(ctx context.Context, cc grpc.ClientConnInterface) (*tierlogv1.NodeStatusResponse, error) {
	return tierlogv1.NewPeerClient(cc).NodeStatus(ctx, &tierlogv1.NodeStatusRequest{})
}

// decodeError turns the wire's error back into the broker's and cluster's.
func decodeError(code tierlogv1.ReplicaError, msg string, leader int32, topic string, partition int32, offset, start, end int64) error {
	switch code {
	case tierlogv1.ReplicaError_REPLICA_ERROR_UNSPECIFIED:
		return nil
	case tierlogv1.ReplicaError_REPLICA_ERROR_NOT_LEADER:
		if topic == "" {
			return &cluster.NotLeaderError{LeaderID: leader}
		}
		return &broker.NotLeaderError{Topic: topic, Partition: partition, Leader: leader}
	case tierlogv1.ReplicaError_REPLICA_ERROR_FENCED_LEADER_EPOCH:
		return fmt.Errorf("%w: %s", broker.ErrFencedLeaderEpoch, msg)
	case tierlogv1.ReplicaError_REPLICA_ERROR_UNKNOWN_LEADER_EPOCH:
		return fmt.Errorf("%w: %s", broker.ErrUnknownLeaderEpoch, msg)
	case tierlogv1.ReplicaError_REPLICA_ERROR_OFFSET_OUT_OF_RANGE:
		return &hot.OffsetOutOfRangeError{Offset: offset, Start: start, End: end}
	case tierlogv1.ReplicaError_REPLICA_ERROR_UNKNOWN_PARTITION:
		return fmt.Errorf("%w: %s", broker.ErrUnknownTopic, msg)
	case tierlogv1.ReplicaError_REPLICA_ERROR_REFUSED:
		return cluster.ParseRefusal(msg)
	}
	return fmt.Errorf("peer: %s", msg)
}
