package kafka

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/tiering"
)

// OffsetForLeaderEpoch, v0 to v4. Consumers (franz-go, librdkafka) send it
// after a leader epoch change to check that their position is still in the
// log. On one node the log's epochs only grow, batch by batch (the hot
// tier stamps the current epoch on every append), so:
//
//	the current epoch  -> (current epoch, the log end)
//	a later epoch      -> (-1, -1): unknown, as Kafka answers
//	an earlier epoch e -> (e, the first offset stamped with a later epoch),
//	                      found by a binary search over the batch headers
//	                      from the log start (the bucket's history included)
const (
	offsetForLeaderEpochMinVersion = 0
	offsetForLeaderEpochMaxVersion = 4
)

func (s *Server) offsetForLeaderEpoch(_ *clientConn, req *kmsg.OffsetForLeaderEpochRequest) reply {
	return reply{later: func(ctx context.Context) kmsg.Response {
		resp := req.ResponseKind().(*kmsg.OffsetForLeaderEpochResponse)
		for _, rt := range req.Topics {
			t := kmsg.NewOffsetForLeaderEpochResponseTopic()
			t.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				t.Partitions = append(t.Partitions, s.epochEnd(ctx, req.Version, rt.Topic, rp))
			}
			resp.Topics = append(resp.Topics, t)
		}
		return resp
	}}
}

func (s *Server) epochEnd(ctx context.Context, version int16, topic string, rp kmsg.OffsetForLeaderEpochRequestTopicPartition) kmsg.OffsetForLeaderEpochResponseTopicPartition {
	out := kmsg.NewOffsetForLeaderEpochResponseTopicPartition()
	out.Partition = rp.Partition
	out.LeaderEpoch, out.EndOffset = -1, -1
	p, err := s.b.Partition(topic, rp.Partition)
	if err != nil {
		out.ErrorCode = kerr.UnknownTopicOrPartition.Code
		return out
	}
	cur := p.Log().LeaderEpoch()
	current := int32(-1)
	if version >= 2 {
		current = rp.CurrentLeaderEpoch
	}
	if out.ErrorCode = s.checkLeaderEpoch(topic, rp.Partition, current, p); out.ErrorCode != 0 {
		return out
	}
	switch e := rp.LeaderEpoch; {
	case e == cur:
		// The log end, not the high watermark: where this epoch ends.
		out.LeaderEpoch, out.EndOffset = cur, p.Log().LogEndOffset()
	case e < cur && e >= 0:
		end, err := firstAfterEpoch(ctx, p, e)
		if err != nil {
			out.ErrorCode = errorCode(err)
			s.log.Warn("kafka offset for leader epoch failed", "topic", topic, "partition", rp.Partition, "epoch", e, "err", err)
			return out
		}
		out.LeaderEpoch, out.EndOffset = e, end
	}
	return out
}

// firstAfterEpoch is the first offset of a batch stamped with an epoch
// above e (the log end if none is), by binary search: epochs never go down
// along the log.
func firstAfterEpoch(ctx context.Context, p *tiering.Partition, e int32) (int64, error) {
	lo, hi := p.StartOffset(), p.EndOffset() // the answer is in [lo, hi]
	for lo < hi {
		mid := lo + (hi-lo)/2
		res, err := p.Read(ctx, mid, 1)
		if err != nil {
			return 0, err
		}
		h, err := batch.Peek(res.Records)
		if err != nil {
			return 0, err
		}
		if h.PartitionLeaderEpoch > e {
			hi = min(h.BaseOffset, mid)
		} else {
			lo = h.NextOffset()
		}
	}
	return lo, nil
}

// checkLeaderEpoch answers a request for a partition on a node that
// does not lead it (NOT_LEADER_OR_FOLLOWER) or with a leader epoch other
// than the partition's (checkEpoch); 0 when it may be served.
func (s *Server) checkLeaderEpoch(topic string, partition, client int32, p *tiering.Partition) int16 {
	if err := s.b.CheckLeader(topic, partition); err != nil {
		return errorCode(err)
	}
	return checkEpoch(client, p.Log().LeaderEpoch())
}

// checkEpoch compares the leader epoch a client names (-1: none) with the
// partition's: an older one is FENCED_LEADER_EPOCH (the client refreshes
// its metadata), a newer one UNKNOWN_LEADER_EPOCH (this node is behind),
// as in Kafka.
func checkEpoch(client, current int32) int16 {
	switch {
	case client < 0 || client == current:
		return 0
	case client < current:
		return kerr.FencedLeaderEpoch.Code
	}
	return kerr.UnknownLeaderEpoch.Code
}
