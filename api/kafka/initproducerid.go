package kafka

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// initProducerID gives an idempotent producer its id (v0-v4: v3 added the
// caller's current id and epoch, KIP-360; v4 only error codes). As Kafka
// does for a producer without a transactional id, every call returns a
// new id with epoch 0, including a v3+ call that names the producer's
// current id and epoch to recover from a sequence error: a fresh id starts
// clean in every partition, which is what bumping the epoch achieves, and
// needs no state. (Kafka bumps the epoch only for transactional ids.)
//
// A non-null transactional id is refused with INVALID_REQUEST: tierlog
// has no transaction coordinator. That is Kafka's own answer for an empty
// transactional id and, being non-retriable, fails a transactional
// producer at once with the client's "incompatible broker" text instead
// of retrying for ever (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE) or
// sending the user to ACLs that do not exist
// (TRANSACTIONAL_ID_AUTHORIZATION_FAILED).
func (s *Server) initProducerID(c *clientConn, req *kmsg.InitProducerIDRequest) reply {
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.ProducerID, resp.ProducerEpoch = -1, -1
	switch {
	case req.TransactionalID != nil:
		s.log.Info("refused transactional producer: transactions are not supported",
			"transactional_id", *req.TransactionalID, "client_id", c.clientID)
		resp.ErrorCode = kerr.InvalidRequest.Code
	case (req.ProducerID < 0) != (req.ProducerEpoch < 0):
		// Kafka: an id without an epoch, or an epoch without an id.
		resp.ErrorCode = kerr.InvalidRequest.Code
	default:
		id, err := s.b.AllocateProducerID()
		if err != nil {
			// Retriable, as Kafka's answer when it has no id block.
			s.log.Warn("allocate producer id", "err", err)
			resp.ErrorCode = kerr.CoordinatorLoadInProgress.Code
			break
		}
		resp.ProducerID, resp.ProducerEpoch = id, 0
	}
	return reply{resp: resp}
}
