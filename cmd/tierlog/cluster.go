package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/tierlog/tierlog/api/kafka"
	"github.com/tierlog/tierlog/api/peer"
	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/cluster"
	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/config"
	"github.com/tierlog/tierlog/tiering"
)

// heartbeatInterval is how often a node tells the controller it is alive;
// session_timeout (default 2 s) is many of them, so a few lost beats do
// not move leadership.
const heartbeatInterval = 200 * time.Millisecond

// raftTimeout is the metadata Raft group's heartbeat and election timeout.
const raftTimeout = 700 * time.Millisecond

// clusterNode is what `tierlog serve --peers` adds to a single node: the
// Raft member holding the metadata, the controller, and the peer client.
// Its listeners are bound before the broker opens, so the node registers
// the addresses it really serves on.
type clusterNode struct {
	self     cluster.NodeInfo
	node     *cluster.Node
	ctl      *cluster.Controller
	peers    *peer.Client
	grpcLis  net.Listener
	kafkaLns []net.Listener
	kafkaOpt kafka.Options // AdvertisedHost/Port
	cancel   context.CancelFunc
	done     chan struct{}
	logger   *slog.Logger
}

// openCluster binds the gRPC and Kafka listeners and joins (or, on a
// first start, bootstraps) the cluster.
func openCluster(ctx context.Context, cfg config.Server, defaults broker.TopicConfig, bucket cold.Bucket, takeover bool,
	reg prometheus.Registerer, logger *slog.Logger) (_ *clusterNode, err error) {
	cc := cfg.Cluster
	raftAddr := cc.SelfRaftAddr()
	if !slices.ContainsFunc(cc.Peers, func(p config.Peer) bool { return p.ID == cc.NodeID }) {
		return nil, usageErrorf("peers does not list this node: add %d=HOST:PORT (its Raft address) or set node_id to one of them", cc.NodeID)
	}
	if cc.NodeID > broker.MaxNodeID {
		return nil, usageErrorf("node_id %d: a cluster's node ids are 0 to %d", cc.NodeID, broker.MaxNodeID)
	}
	c := &clusterNode{logger: logger, done: make(chan struct{})}
	defer func() {
		if err != nil {
			c.closeListeners()
		}
	}()
	if c.grpcLis, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		return nil, fmt.Errorf("listen for gRPC on %s: %w", cfg.GRPCAddr, err)
	}
	grpcAddr := cc.GRPCAdvertisedAddr
	if grpcAddr == "" {
		grpcAddr = c.grpcLis.Addr().String()
	}
	kafkaAddr := ""
	if cfg.KafkaAddr != "none" {
		if c.kafkaLns, err = kafka.Listen(cfg.KafkaAddr); err != nil {
			return nil, fmt.Errorf("listen for Kafka clients on %s: %w", cfg.KafkaAddr, err)
		}
		if c.kafkaOpt.AdvertisedHost, c.kafkaOpt.AdvertisedPort, err = advertisedKafka(cfg, c.kafkaLns[0].Addr()); err != nil {
			return nil, err
		}
		kafkaAddr = net.JoinHostPort(c.kafkaOpt.AdvertisedHost, strconv.Itoa(int(c.kafkaOpt.AdvertisedPort)))
	}
	c.self = cluster.NodeInfo{ID: cc.NodeID, RaftAddr: raftAddr, GRPCAddr: grpcAddr, KafkaAddr: kafkaAddr}
	peers := make([]cluster.Peer, len(cc.Peers))
	for i, p := range cc.Peers {
		peers[i] = cluster.Peer{ID: p.ID, RaftAddr: p.Addr}
	}
	// Raft's timeouts are shorter than its defaults (1 s, 1 s, 500 ms): a
	// dead controller is replaced in about a second, which with
	// session_timeout bounds a failover.
	// A node whose Raft state is gone waits here until the cluster takes it
	// back (cluster/admission.go); a signal ends the wait.
	c.node, err = cluster.Open(ctx, cluster.Options{ID: cc.NodeID, Dir: filepath.Join(cfg.DataDir, "cluster"), RaftAddr: raftAddr,
		Peers: peers, Logger: logger, HeartbeatTimeout: raftTimeout, ElectionTimeout: raftTimeout, LeaderLeaseTimeout: raftTimeout / 2})
	if err != nil {
		return nil, fmt.Errorf("join the cluster: %w", err)
	}
	// unclean.leader.election.enable as the topic's config in the metadata
	// says, else the server default.
	unclean := func(topic string) bool {
		t, ok := c.node.View().Topics[topic]
		if !ok {
			return defaults.UncleanLeaderElection
		}
		cfg, err := broker.ParseTopicConfig(defaults, t.Config)
		return err == nil && cfg.UncleanLeaderElection
	}
	// The cluster's id, when the controller names a new cluster: a single
	// node upgraded with --takeover converts its prefix into the shared
	// one first, under its own id, and every node's controller takes the
	// id of a prefix already shared (the controller waits a session for
	// it before it makes one up).
	if takeover && bucket != nil {
		if _, err := tiering.ClaimShared(ctx, bucket, cfg.DataDir, logger); err != nil {
			return nil, fmt.Errorf("take over the bucket prefix for the cluster: %w", err)
		}
	}
	localID := func() string {
		if id, _ := tiering.LocalClusterID(cfg.DataDir); id != "" {
			return id
		}
		if bucket == nil {
			return ""
		}
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		id, _ := tiering.SharedClusterID(rctx, bucket)
		return id
	}
	c.ctl = cluster.StartController(cluster.ControllerOptions{Node: c.node, Self: c.self, SessionTimeout: cc.SessionTimeout, ClusterID: localID,
		Unclean: unclean, Logger: logger, Registerer: reg})
	c.peers = peer.NewClient(c.node)
	c.ctl.SetForwarder(c.peers.Forward)
	logger.Info("cluster node", "node_id", cc.NodeID, "raft_addr", raftAddr, "grpc_addr", grpcAddr, "kafka_addr", kafkaAddr, "peers", len(peers))
	return c, nil
}

// brokerOptions connect the broker to the cluster.
func (c *clusterNode) brokerOptions(cfg config.Server) *broker.ClusterOptions {
	return &broker.ClusterOptions{NodeID: c.self.ID, Node: c.node, Controller: c.ctl, Peers: c.peers,
		ReplicaLagMax: cfg.Cluster.ReplicaLagMax, DefaultReplicationFactor: int(cfg.Cluster.DefaultReplicationFactor)}
}

// serve registers the peer service and starts the heartbeats.
func (c *clusterNode) serve(gs *grpc.Server, b *broker.Broker) {
	peer.NewServer(b, c.node, c.ctl).Register(gs)
	c.peers.SetReconciled(b.ReconciledIndex)
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go func() {
		defer close(c.done)
		c.peers.Heartbeats(ctx, c.ctl, c.self, heartbeatInterval, c.logger)
	}()
}

// registered says whether the cluster state holds this node with the
// addresses it serves on: until then the controller counts it neither
// for a topic's replicas nor as alive, so a topic created at once would
// get fewer replicas than the cluster has nodes.
func (c *clusterNode) registered() error {
	if got, ok := c.node.View().Nodes[c.self.ID]; !ok || !got.SameAddresses(c.self) {
		return fmt.Errorf("node %d not registered in the cluster yet (the controller registers it from its heartbeats)", c.self.ID)
	}
	return nil
}

// waitRegistered waits until registered, or ctx ends.
func (c *clusterNode) waitRegistered(ctx context.Context) error {
	watch, stop := c.node.Watch()
	defer stop()
	for c.registered() != nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-watch:
		}
	}
	return nil
}

// retire hands this node's leaderships to other in-sync replicas before a
// graceful stop, so clients move on without waiting for session_timeout.
func (c *clusterNode) retire(timeout time.Duration) {
	// Heartbeats stop first: one after the retirement would make the
	// node alive (and eligible to lead) again.
	c.stopHeartbeats()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.ctl.Retire(ctx, c.self.ID); err != nil {
		c.logger.Warn("shutdown: leadership not handed over; the controller moves it after session_timeout", "err", err)
		return
	}
	c.logger.Info("shutdown: leadership handed over to other in-sync replicas")
}

// close stops heartbeats, the controller and the Raft member (after the
// broker closed).
func (c *clusterNode) close() {
	c.stopHeartbeats()
	c.closeListeners() // if serve never got to serve on them (the broker failed to open)
	c.ctl.Close()
	if err := c.node.Close(); err != nil {
		c.logger.Warn("close cluster node", "err", err)
	}
	c.peers.Close()
}

func (c *clusterNode) closeListeners() {
	if c.grpcLis != nil {
		c.grpcLis.Close()
	}
	for _, ln := range c.kafkaLns {
		ln.Close()
	}
}

func (c *clusterNode) stopHeartbeats() {
	if c.cancel != nil {
		c.cancel()
		<-c.done
	}
}
