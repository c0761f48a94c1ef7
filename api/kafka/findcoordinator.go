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

// findCoordinator names this node as every group's coordinator (a single
// node coordinates all groups). Transactional ids get INVALID_REQUEST:
// tierlog has no transactions, and a retriable error would leave a
// transactional producer retrying for ever. v4 answers a batch of keys.
func (s *Server) findCoordinator(_ *clientConn, req *kmsg.FindCoordinatorRequest) reply {
	resp := req.ResponseKind().(*kmsg.FindCoordinatorResponse)
	answer := func(key string) kmsg.FindCoordinatorResponseCoordinator {
		c := kmsg.NewFindCoordinatorResponseCoordinator()
		c.Key = key
		switch req.CoordinatorType {
		case coordinatorGroup:
			c.NodeID, c.Host, c.Port = s.opts.NodeID, s.opts.AdvertisedHost, s.opts.AdvertisedPort
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
