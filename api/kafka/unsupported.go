package kafka

import (
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Requests for features tierlog lacks: each gets the Kafka error a broker
// without the feature gives, never a closed connection or a hang, so a
// client reports the problem instead of retrying for ever.
//
//   - Transactions: the kinds that act inside a transaction are answered but
//     not advertised (hidden), so librdkafka and franz-go refuse a
//     transactional producer up front ("broker does not support
//     transactions") instead of failing part way. Sent anyway, they get
//     INVALID_PRODUCER_ID_MAPPING: what Kafka's coordinator answers for a
//     transactional id it has no producer id for - here, every one.
//     ListTransactions and DescribeTransactions are advertised: "there are
//     none" and TRANSACTIONAL_ID_NOT_FOUND are true answers.
//   - ACLs: advertised, as Kafka advertises them with no authorizer
//     configured, and answered SECURITY_DISABLED, so admin tools say
//     "security is disabled" rather than "unsupported request". Only v0-v1:
//     kafka-python 2.0.2 infers a 2.5 broker from DescribeAcls v2, and the
//     Produce and Fetch versions it then picks are not ours to change here.
//   - SASL: SaslHandshake is advertised and answered
//     UNSUPPORTED_SASL_MECHANISM with no mechanisms, so a client configured
//     for SASL says which mechanisms the broker has (none). Not advertising
//     it would be worse: librdkafka then falls back to unframed SASL bytes,
//     which can only end in a closed connection. SaslAuthenticate can only
//     follow a successful handshake, so it is hidden and answered
//     ILLEGAL_SASL_STATE, as Kafka answers it outside a SASL exchange.

const noTransactions = "tierlog does not support transactions"

func (s *Server) addPartitionsToTxn(_ *clientConn, req *kmsg.AddPartitionsToTxnRequest) reply {
	resp := req.ResponseKind().(*kmsg.AddPartitionsToTxnResponse)
	code := kerr.InvalidProducerIDMapping.Code
	if req.Version >= 4 {
		resp.ErrorCode = code
	}
	for _, rt := range req.Topics {
		t := kmsg.NewAddPartitionsToTxnResponseTopic()
		t.Topic = rt.Topic
		for _, p := range rt.Partitions {
			rp := kmsg.NewAddPartitionsToTxnResponseTopicPartition()
			rp.Partition, rp.ErrorCode = p, code
			t.Partitions = append(t.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, t)
	}
	for _, rx := range req.Transactions {
		x := kmsg.NewAddPartitionsToTxnResponseTransaction()
		x.TransactionalID = rx.TransactionalID
		for _, rt := range rx.Topics {
			t := kmsg.NewAddPartitionsToTxnResponseTransactionTopic()
			t.Topic = rt.Topic
			for _, p := range rt.Partitions {
				rp := kmsg.NewAddPartitionsToTxnResponseTransactionTopicPartition()
				rp.Partition, rp.ErrorCode = p, code
				t.Partitions = append(t.Partitions, rp)
			}
			x.Topics = append(x.Topics, t)
		}
		resp.Transactions = append(resp.Transactions, x)
	}
	return reply{resp: resp}
}

func (s *Server) addOffsetsToTxn(_ *clientConn, req *kmsg.AddOffsetsToTxnRequest) reply {
	resp := req.ResponseKind().(*kmsg.AddOffsetsToTxnResponse)
	resp.ErrorCode = kerr.InvalidProducerIDMapping.Code
	return reply{resp: resp}
}

func (s *Server) endTxn(_ *clientConn, req *kmsg.EndTxnRequest) reply {
	resp := req.ResponseKind().(*kmsg.EndTxnResponse)
	resp.ErrorCode = kerr.InvalidProducerIDMapping.Code
	resp.ProducerID, resp.ProducerEpoch = -1, -1
	return reply{resp: resp}
}

func (s *Server) txnOffsetCommit(_ *clientConn, req *kmsg.TxnOffsetCommitRequest) reply {
	resp := req.ResponseKind().(*kmsg.TxnOffsetCommitResponse)
	for _, rt := range req.Topics {
		t := kmsg.NewTxnOffsetCommitResponseTopic()
		t.Topic = rt.Topic
		for _, p := range rt.Partitions {
			rp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
			rp.Partition, rp.ErrorCode = p.Partition, kerr.InvalidProducerIDMapping.Code
			t.Partitions = append(t.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, t)
	}
	return reply{resp: resp}
}

func (s *Server) describeTransactions(_ *clientConn, req *kmsg.DescribeTransactionsRequest) reply {
	resp := req.ResponseKind().(*kmsg.DescribeTransactionsResponse)
	for _, id := range req.TransactionalIDs {
		st := kmsg.NewDescribeTransactionsResponseTransactionState()
		st.TransactionalID, st.ErrorCode = id, kerr.TransactionalIDNotFound.Code
		st.ProducerID, st.ProducerEpoch = -1, -1
		resp.TransactionStates = append(resp.TransactionStates, st)
	}
	return reply{resp: resp}
}

// txnStates are the states Kafka's ListTransactions filters on; others
// come back as unknown filters, as Kafka reports them.
var txnStates = []string{"Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit", "CompleteAbort", "Dead", "PrepareEpochFence"}

func (s *Server) listTransactions(_ *clientConn, req *kmsg.ListTransactionsRequest) reply {
	resp := req.ResponseKind().(*kmsg.ListTransactionsResponse)
	for _, f := range req.StateFilters {
		if !slices.Contains(txnStates, f) {
			resp.UnknownStateFilters = append(resp.UnknownStateFilters, f)
		}
	}
	return reply{resp: resp}
}

const noAuthorizer = "security is disabled: tierlog has no authorizer, so there are no ACLs"

func (s *Server) describeACLs(_ *clientConn, req *kmsg.DescribeACLsRequest) reply {
	resp := req.ResponseKind().(*kmsg.DescribeACLsResponse)
	resp.ErrorCode, resp.ErrorMessage = kerr.SecurityDisabled.Code, strPtr(noAuthorizer)
	return reply{resp: resp}
}

func (s *Server) createACLs(_ *clientConn, req *kmsg.CreateACLsRequest) reply {
	resp := req.ResponseKind().(*kmsg.CreateACLsResponse)
	for range req.Creations {
		r := kmsg.NewCreateACLsResponseResult()
		r.ErrorCode, r.ErrorMessage = kerr.SecurityDisabled.Code, strPtr(noAuthorizer)
		resp.Results = append(resp.Results, r)
	}
	return reply{resp: resp}
}

func (s *Server) deleteACLs(_ *clientConn, req *kmsg.DeleteACLsRequest) reply {
	resp := req.ResponseKind().(*kmsg.DeleteACLsResponse)
	for range req.Filters {
		r := kmsg.NewDeleteACLsResponseResult()
		r.ErrorCode, r.ErrorMessage = kerr.SecurityDisabled.Code, strPtr(noAuthorizer)
		resp.Results = append(resp.Results, r)
	}
	return reply{resp: resp}
}

func (s *Server) saslHandshake(_ *clientConn, req *kmsg.SASLHandshakeRequest) reply {
	resp := req.ResponseKind().(*kmsg.SASLHandshakeResponse)
	resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
	resp.SupportedMechanisms = []string{} // none: tierlog has no SASL
	return reply{resp: resp}
}

func (s *Server) saslAuthenticate(_ *clientConn, req *kmsg.SASLAuthenticateRequest) reply {
	resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
	resp.ErrorCode = kerr.IllegalSaslState.Code
	resp.ErrorMessage = strPtr("tierlog has no SASL; no handshake can have started an exchange")
	return reply{resp: resp}
}

func strPtr(s string) *string { return &s }
