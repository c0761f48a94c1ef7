package kafka

import (
	"context"
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/tiering"
)

// ListOffsets, v1 to v7 (v0 answers a list of offsets in another shape;
// kafka-python 2.0.2 sends v1, librdkafka and franz-go the newest we
// advertise). Per partition, Timestamp asks for:
//
//	-2 (earliest)  the log start, the bucket's history included
//	-1 (latest)    the high watermark (a single node's: its log end)
//	-3 (max, v7+)  the first record with the partition's largest timestamp
//	t >= 0         the first record with a timestamp >= t, looked up in the
//	               tiered segments and the hot log (broker.OffsetForTime),
//	               then to the record within its batch; -1/-1 if none
//
// With no transactions the isolation level changes nothing. The leader
// epoch answered is the batch's for a timestamp, else the current one.
const (
	listOffsetsMinVersion = 1
	listOffsetsMaxVersion = 7
)

const (
	listEarliest = -2
	listLatest   = -1
	listMaxTime  = -3
)

func (s *Server) listOffsets(_ *clientConn, req *kmsg.ListOffsetsRequest) reply {
	return reply{later: func(ctx context.Context) kmsg.Response {
		resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
		for _, rt := range req.Topics {
			t := kmsg.NewListOffsetsResponseTopic()
			t.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				t.Partitions = append(t.Partitions, s.listOffset(ctx, req.Version, rt.Topic, rp))
			}
			resp.Topics = append(resp.Topics, t)
		}
		return resp
	}}
}

func (s *Server) listOffset(ctx context.Context, version int16, topic string, rp kmsg.ListOffsetsRequestTopicPartition) kmsg.ListOffsetsResponseTopicPartition {
	out := kmsg.NewListOffsetsResponseTopicPartition()
	out.Partition = rp.Partition
	out.Timestamp, out.Offset = -1, -1
	p, err := s.b.Partition(topic, rp.Partition)
	if err != nil {
		out.ErrorCode = kerr.UnknownTopicOrPartition.Code
		return out
	}
	epoch := p.Log().LeaderEpoch()
	current := int32(-1)
	if version >= 4 {
		current = rp.CurrentLeaderEpoch
	}
	if out.ErrorCode = s.checkLeaderEpoch(topic, rp.Partition, current, p); out.ErrorCode != 0 {
		return out
	}
	out.LeaderEpoch = epoch
	ts := rp.Timestamp
	switch {
	case ts == listEarliest:
		out.Offset = p.StartOffset()
		return out
	case ts == listLatest:
		out.Offset = p.EndOffset()
		return out
	case ts == listMaxTime && version >= 7:
		if ts = p.MaxTimestamp(); ts < 0 {
			return out // empty: -1/-1, as Kafka answers
		}
	case ts < 0:
		// -4 (earliest local) and -5 (latest tiered) belong to versions
		// this server does not implement; nothing else is defined.
		out.ErrorCode = kerr.UnsupportedVersion.Code
		return out
	}
	off, recTs, recEpoch, err := firstAtOrAfter(ctx, p, ts)
	if err != nil {
		out.ErrorCode = errorCode(err)
		s.log.Warn("kafka list offsets failed", "topic", topic, "partition", rp.Partition, "timestamp", rp.Timestamp, "err", err)
		return out
	}
	if off >= 0 {
		out.Offset, out.Timestamp, out.LeaderEpoch = off, recTs, recEpoch
	}
	return out
}

// firstAtOrAfter finds the first record with a timestamp >= ts: the index
// lookups (remote and local) find its batch, which is then read to find
// the record in it, so the answer is a record's offset as Kafka's is, not
// its batch's. off is -1 if there is none.
func firstAtOrAfter(ctx context.Context, p *tiering.Partition, ts int64) (off, recTs int64, epoch int32, err error) {
	at, err := p.OffsetForTime(ctx, ts)
	if err != nil {
		return 0, 0, 0, err
	}
	for at < p.EndOffset() {
		res, err := p.Read(ctx, at, 1) // the batch holding at, whole
		if err != nil {
			return 0, 0, 0, err
		}
		if len(res.Records) == 0 {
			break
		}
		off = -1
		h, err := batch.DecodeOptions{}.Each(res.Records, func(r batch.Record) bool {
			if r.Offset >= at && r.Timestamp >= ts {
				off, recTs = r.Offset, r.Timestamp
				return false
			}
			return true
		})
		if err != nil {
			return 0, 0, 0, err
		}
		if off >= 0 && !h.Control() {
			return off, recTs, h.PartitionLeaderEpoch, nil
		}
		// Not in this batch (a control batch, or timestamps out of order
		// within it): the next batch.
		if h.NextOffset() <= at {
			return 0, 0, 0, errors.New("list offsets: batch does not advance")
		}
		at = h.NextOffset()
	}
	return -1, -1, 0, nil
}
