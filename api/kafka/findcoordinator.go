package kafka

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Coordinator key types in FindCoordinator.
const (
	coordinatorGroup       = 0
	coordinatorTransaction = 1
)

// findCoordinator names every group's coordinator: this node, or in a
// cluster the controller (see coordinator). Transactional ids get INVALID_REQUEST:
// tierlog has no transactions, and a retriable error would leave a
// transactional producer retrying for ever. v4 answers a batch of keys.
func (s *Server) findCoordinator(_ *clientConn, req *kmsg.FindCoordinatorRequest) reply {
	resp := req.ResponseKind().(*kmsg.FindCoordinatorResponse)
	answer := func(key string) kmsg.FindCoordinatorResponseCoordinator {
		c := kmsg.NewFindCoordinatorResponseCoordinator()
		c.Key = key
		switch req.CoordinatorType {
		case coordinatorGroup:
			n, ok := s.coordinator()
			if !ok {
				c.NodeID, c.Port = -1, -1
				c.ErrorCode = kerr.CoordinatorNotAvailable.Code
				break
			}
			c.NodeID, c.Host, c.Port = n.id, n.host, n.port
		case coordinatorTransaction:
			c.NodeID, c.Port = -1, -1
			c.ErrorCode = kerr.InvalidRequest.Code
			c.ErrorMessage = errorMessageText("tierlog has no transactions")
		default:
			c.NodeID, c.Port = -1, -1
			c.ErrorCode = kerr.InvalidRequest.Code
			c.ErrorMessage = errorMessageText("unknown coordinator type")
		}
		return c
	}
	if req.Version >= 4 {
		for _, k := range req.CoordinatorKeys {
			resp.Coordinators = append(resp.Coordinators, answer(k))
		}
		return reply{resp: resp}
	}
	c := answer(req.CoordinatorKey)
	resp.ErrorCode, resp.ErrorMessage, resp.NodeID, resp.Host, resp.Port = c.ErrorCode, c.ErrorMessage, c.NodeID, c.Host, c.Port
	return reply{resp: resp}
}

func errorMessageText(s string) *string { return &s }
