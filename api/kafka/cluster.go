package kafka

import (
	"math"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// describeCluster describes the brokers (this node alone, or the cluster's
// nodes), the controller and the cluster id. There is no separate
// controller endpoint (v1's endpoint type 2).
func (s *Server) describeCluster(_ *clientConn, req *kmsg.DescribeClusterRequest) reply {
	resp := req.ResponseKind().(*kmsg.DescribeClusterResponse)
	resp.EndpointType = req.EndpointType
	switch {
	case req.Version >= 1 && req.EndpointType == 2:
		resp.ErrorCode = kerr.MismatchedEndpointType.Code
		msg := "this is a broker endpoint; tierlog has no separate controller endpoint"
		resp.ErrorMessage = &msg
		return reply{resp: resp}
	case req.Version >= 1 && req.EndpointType != 1:
		resp.ErrorCode = kerr.UnsupportedEndpointType.Code
		return reply{resp: resp}
	}
	resp.ClusterID = s.b.ClusterID()
	resp.ControllerID = s.b.Controller()
	for _, n := range s.nodes() {
		b := kmsg.NewDescribeClusterResponseBroker()
		b.NodeID, b.Host, b.Port = n.id, n.host, n.port
		resp.Brokers = append(resp.Brokers, b)
	}
	resp.ClusterAuthorizedOperations = math.MinInt32 // not computed (no ACLs), as in Metadata
	return reply{resp: resp}
}
