package config

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Cluster holds the settings of a node of a replicated cluster. With no
// peers the node runs alone, as it always did.
type Cluster struct {
	// NodeID (node_id) is this node's id, Kafka's broker.id.
	NodeID int32
	// Peers (peers) are the cluster's voters as id=host:port of their Raft
	// listeners, this node included: "1=10.0.0.1:7072,2=...". Read only
	// when the node's data directory has no cluster state yet.
	Peers []Peer
	// RaftAddr (raft_addr) is the host:port the Raft transport listens on
	// (default: this node's entry in Peers).
	RaftAddr string
	// GRPCAdvertisedAddr (grpc_advertised_addr) is the host:port other
	// nodes reach this node's gRPC listener at (default: the bound one).
	GRPCAdvertisedAddr string
	// ReplicaLagMax (replica_lag_time_max, Kafka's replica.lag.time.max.ms)
	// is how long an in-sync follower may fail to catch up before it
	// leaves the in-sync set.
	ReplicaLagMax time.Duration
	// SessionTimeout (session_timeout) is how long the controller waits
	// for a node's heartbeat before it takes the node for dead and moves
	// its partitions' leadership.
	SessionTimeout time.Duration
	// DefaultReplicationFactor (default_replication_factor) is the
	// replication factor of topics created without one (0: the smaller of
	// 3 and the number of nodes).
	DefaultReplicationFactor int64
}

// Peer is one entry of peers.
type Peer struct {
	ID   int32
	Addr string
}

// Enabled says whether the node is part of a cluster.
func (c Cluster) Enabled() bool { return len(c.Peers) > 0 }

// SelfRaftAddr is the address the Raft transport listens on.
func (c Cluster) SelfRaftAddr() string {
	if c.RaftAddr != "" {
		return c.RaftAddr
	}
	for _, p := range c.Peers {
		if p.ID == c.NodeID {
			return p.Addr
		}
	}
	return ""
}

func formatPeers(ps []Peer) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = fmt.Sprintf("%d=%s", p.ID, p.Addr)
	}
	return strings.Join(parts, ",")
}

func parsePeers(v string) ([]Peer, error) {
	var out []Peer
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		id, addr, ok := strings.Cut(f, "=")
		n, err := strconv.ParseInt(strings.TrimSpace(id), 10, 32)
		if !ok || err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not id=host:port (e.g. 1=127.0.0.1:7072)", f)
		}
		var a string
		if err := setAddr(&a, strings.TrimSpace(addr)); err != nil {
			return nil, fmt.Errorf("peer %d: %v", n, err)
		}
		if slices.ContainsFunc(out, func(p Peer) bool { return p.ID == int32(n) }) {
			return nil, fmt.Errorf("node %d listed twice", n)
		}
		out = append(out, Peer{ID: int32(n), Addr: a})
	}
	return out, nil
}

var clusterSettings = []setting{
	{
		name: "node_id", usage: "this node's id in a cluster (Kafka's broker.id)", typ: "int",
		get: func(c *Server) string { return strconv.Itoa(int(c.Cluster.NodeID)) },
		set: func(c *Server, v string) error {
			var n int64
			if err := setInt(&n, v, 0); err != nil {
				return err
			}
			if n > 1<<30 {
				return fmt.Errorf("%q is too large a node id", v)
			}
			c.Cluster.NodeID = int32(n)
			return nil
		},
	},
	{
		name: "peers", usage: "the cluster's nodes as id=host:port of their Raft listeners, this node included, e.g. 1=127.0.0.1:7072,2=127.0.0.1:7172,3=127.0.0.1:7272 (empty: a single node)",
		get: func(c *Server) string { return formatPeers(c.Cluster.Peers) },
		set: func(c *Server, v string) error {
			ps, err := parsePeers(v)
			if err != nil {
				return err
			}
			c.Cluster.Peers = ps
			return nil
		},
	},
	{
		name: "raft_addr", usage: "host:port the cluster's Raft transport listens on (default: this node's entry in peers)",
		get: func(c *Server) string { return c.Cluster.RaftAddr },
		set: func(c *Server, v string) error {
			if v == "" {
				c.Cluster.RaftAddr = ""
				return nil
			}
			return setAddr(&c.Cluster.RaftAddr, v)
		},
	},
	{
		name: "grpc_advertised_addr", usage: "host:port the other nodes reach this node's gRPC listener at (default: the bound address)",
		get: func(c *Server) string { return c.Cluster.GRPCAdvertisedAddr },
		set: func(c *Server, v string) error {
			if v == "" {
				c.Cluster.GRPCAdvertisedAddr = ""
				return nil
			}
			return setAddr(&c.Cluster.GRPCAdvertisedAddr, v)
		},
	},
	{
		name: "replica_lag_time_max", usage: "an in-sync follower that has not caught up with its leader for this long leaves the in-sync set (Kafka's replica.lag.time.max.ms)",
		typ: "duration",
		get: func(c *Server) string { return c.Cluster.ReplicaLagMax.String() },
		set: func(c *Server, v string) error { return setDuration(&c.Cluster.ReplicaLagMax, v) },
	},
	{
		name: "session_timeout", usage: "a node whose heartbeats stop for this long is taken for dead and its partitions get new leaders",
		typ: "duration",
		get: func(c *Server) string { return c.Cluster.SessionTimeout.String() },
		set: func(c *Server, v string) error { return setDuration(&c.Cluster.SessionTimeout, v) },
	},
	{
		name: "default_replication_factor", usage: "replicas of a topic created without a replication factor (0: the smaller of 3 and the number of nodes)",
		typ: "int",
		get: func(c *Server) string { return strconv.FormatInt(c.Cluster.DefaultReplicationFactor, 10) },
		set: func(c *Server, v string) error { return setInt(&c.Cluster.DefaultReplicationFactor, v, 0) },
	},
}

func init() { settings = append(settings, clusterSettings...) }
