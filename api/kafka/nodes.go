package kafka

import (
	"net"
	"strconv"

	"github.com/tierlog/tierlog/cluster"
)

// node is a broker as Kafka clients are told about it.
type node struct {
	id   int32
	host string
	port int32
}

// nodes lists the brokers clients may connect to: every registered node
// of a cluster with a Kafka address, or this node alone.
func (s *Server) nodes() []node {
	ns := s.b.Nodes()
	if ns == nil {
		return []node{{s.opts.NodeID, s.opts.AdvertisedHost, s.opts.AdvertisedPort}}
	}
	out := make([]node, 0, len(ns))
	for _, n := range ns {
		host, port, err := net.SplitHostPort(n.KafkaAddr)
		p, perr := strconv.ParseUint(port, 10, 16)
		if err != nil || perr != nil {
			continue // a node with its Kafka listener off
		}
		out = append(out, node{n.ID, host, int32(p)})
	}
	return out
}

// coordinator is the node that coordinates consumer groups: this node
// alone, or in a cluster the controller (every node names the same one, so
// a group's members meet there).
func (s *Server) coordinator() (node, bool) {
	id := s.b.Controller()
	if id == cluster.NoLeader {
		return node{}, false
	}
	for _, n := range s.nodes() {
		if n.id == id {
			return n, true
		}
	}
	return node{}, false
}
