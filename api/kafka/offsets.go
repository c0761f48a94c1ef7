package kafka

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/broker/groups"
)

// offsetCommit stores a group's offsets. The answer means the commit is
// fsynced to the node's offset log (as flush.policy=always does for
// records): it survives a crash of the process or the machine. A partition
// the broker does not have, or metadata over 4096 bytes, gets its own
// error; the rest of the request is committed. Offsets of a group without
// members expire (see groups.Options.OffsetsRetention); v2 to v4's
// retention time, when not -1, replaces the node's for this commit.
func (s *Server) offsetCommit(_ *clientConn, req *kmsg.OffsetCommitRequest) reply {
	resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
	if err := s.notCoordinator(); err != nil {
		for _, t := range req.Topics {
			rt := kmsg.NewOffsetCommitResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewOffsetCommitResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, errorCode(err)
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return reply{resp: resp}
	}
	r := groups.CommitRequest{Group: req.Group, MemberID: req.MemberID, InstanceID: deref(req.InstanceID), Generation: req.Generation}
	if req.Version == 0 {
		r.MemberID, r.Generation = "", -1 // v0 commits outside group management
	}
	var accepted []*int16 // error codes the commit's outcome sets
	for _, t := range req.Topics {
		rt := kmsg.NewOffsetCommitResponseTopic()
		rt.Topic = t.Topic
		rt.Partitions = make([]kmsg.OffsetCommitResponseTopicPartition, len(t.Partitions))
		for i, p := range t.Partitions {
			rp := &rt.Partitions[i]
			*rp = kmsg.NewOffsetCommitResponseTopicPartition()
			rp.Partition = p.Partition
			o := groups.PartitionOffset{Topic: t.Topic, Partition: p.Partition,
				Offset: groups.Offset{Offset: p.Offset, LeaderEpoch: -1, Metadata: deref(p.Metadata)}}
			if req.Version >= 6 {
				o.LeaderEpoch = p.LeaderEpoch
			}
			if req.Version == 1 && p.Timestamp >= 0 {
				o.CommitTime = time.UnixMilli(p.Timestamp)
			}
			if req.Version >= 2 && req.Version <= 4 && req.RetentionTimeMillis >= 0 {
				// The client's retention replaces the node's (-1: the node's).
				o.ExpireTime = time.Now().Add(time.Duration(req.RetentionTimeMillis) * time.Millisecond)
			}
			// For the error code; Commit checks again under the lock a
			// topic deletion takes (a topic deleted in between has its
			// offsets left out, as if committed just before the deletion).
			if _, err := s.b.Partition(t.Topic, p.Partition); err != nil {
				rp.ErrorCode = errorCode(err)
				continue
			}
			if len(o.Metadata) > groups.MaxMetadataBytes {
				rp.ErrorCode = kerr.OffsetMetadataTooLarge.Code
				continue
			}
			r.Offsets = append(r.Offsets, o)
			accepted = append(accepted, &rp.ErrorCode)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	wait := s.b.Groups().Commit(r)
	return reply{later: func(context.Context) kmsg.Response {
		// Not cut short by the connection closing: the commit is in the
		// log's queue either way, and the fsync is brief.
		code := errorCode(wait())
		for _, c := range accepted {
			*c = code
		}
		return resp
	}}
}

// offsetFetch returns committed offsets: of the partitions asked for (-1
// for none), or every committed one for a null topic list (v2+); v8 asks
// for several groups at once. Only durable commits are returned.
func (s *Server) offsetFetch(_ *clientConn, req *kmsg.OffsetFetchRequest) reply {
	resp := req.ResponseKind().(*kmsg.OffsetFetchResponse)
	if err := s.notCoordinator(); err != nil {
		code := errorCode(err)
		resp.ErrorCode = code          // v2-v7
		for _, g := range req.Groups { // v8+
			rg := kmsg.NewOffsetFetchResponseGroup()
			rg.Group, rg.ErrorCode = g.Group, code
			resp.Groups = append(resp.Groups, rg)
		}
		if req.Version < 2 { // per partition before v2
			for _, t := range req.Topics {
				rt := kmsg.NewOffsetFetchResponseTopic()
				rt.Topic = t.Topic
				for _, p := range t.Partitions {
					rp := kmsg.NewOffsetFetchResponseTopicPartition()
					rp.Partition, rp.Offset, rp.ErrorCode = p, -1, code
					rt.Partitions = append(rt.Partitions, rp)
				}
				resp.Topics = append(resp.Topics, rt)
			}
		}
		return reply{resp: resp}
	}
	if req.Version >= 8 {
		for _, g := range req.Groups {
			rg := kmsg.NewOffsetFetchResponseGroup()
			rg.Group = g.Group
			var asked map[string][]int32
			if g.Topics != nil {
				asked = map[string][]int32{}
				for _, t := range g.Topics {
					asked[t.Topic] = append(asked[t.Topic], t.Partitions...)
				}
			}
			for _, ft := range s.fetchOffsets(g.Group, asked) {
				rt := kmsg.NewOffsetFetchResponseGroupTopic()
				rt.Topic = ft.topic
				for _, p := range ft.parts {
					rp := kmsg.NewOffsetFetchResponseGroupTopicPartition()
					rp.Partition, rp.Offset, rp.LeaderEpoch, rp.Metadata = p.Partition, p.Offset, p.LeaderEpoch, p.Metadata
					rt.Partitions = append(rt.Partitions, rp)
				}
				rg.Topics = append(rg.Topics, rt)
			}
			resp.Groups = append(resp.Groups, rg)
		}
		return reply{resp: resp}
	}
	var asked map[string][]int32
	if req.Topics != nil || req.Version < 2 {
		asked = map[string][]int32{}
		for _, t := range req.Topics {
			asked[t.Topic] = append(asked[t.Topic], t.Partitions...)
		}
	}
	for _, ft := range s.fetchOffsets(req.Group, asked) {
		rt := kmsg.NewOffsetFetchResponseTopic()
		rt.Topic = ft.topic
		rt.Partitions = ft.parts
		resp.Topics = append(resp.Topics, rt)
	}
	return reply{resp: resp}
}

// fetchOffsets answers for the partitions asked (nil: every committed
// partition of a topic that still exists), sorted by topic.
func (s *Server) fetchOffsets(group string, asked map[string][]int32) []fetchedTopic {
	have := s.b.Groups().Offsets(group)
	if asked == nil {
		asked = map[string][]int32{}
		for topic, parts := range have {
			for p := range parts {
				if _, err := s.b.Partition(topic, p); err == nil {
					asked[topic] = append(asked[topic], p)
				}
			}
		}
	}
	out := make([]fetchedTopic, 0, len(asked))
	for _, topic := range slices.Sorted(maps.Keys(asked)) {
		parts := asked[topic]
		slices.Sort(parts)
		ft := fetchedTopic{topic: topic}
		for _, p := range parts {
			rp := kmsg.NewOffsetFetchResponseTopicPartition()
			rp.Partition, rp.Offset, rp.LeaderEpoch = p, -1, -1
			empty := ""
			rp.Metadata = &empty
			if o, ok := have[topic][p]; ok {
				rp.Offset, rp.LeaderEpoch = o.Offset, o.LeaderEpoch
				md := o.Metadata
				rp.Metadata = &md
			}
			ft.parts = append(ft.parts, rp)
		}
		out = append(out, ft)
	}
	return out
}

type fetchedTopic struct {
	topic string
	parts []kmsg.OffsetFetchResponseTopicPartition
}

// offsetDelete deletes a group's offsets of partitions its members do not
// consume (Kafka refuses the others with GROUP_SUBSCRIBED_TO_TOPIC).
func (s *Server) offsetDelete(_ *clientConn, req *kmsg.OffsetDeleteRequest) reply {
	resp := req.ResponseKind().(*kmsg.OffsetDeleteResponse)
	if err := s.notCoordinator(); err != nil {
		resp.ErrorCode = errorCode(err)
		return reply{resp: resp}
	}
	if req.Group == "" {
		resp.ErrorCode = kerr.InvalidGroupID.Code
		return reply{resp: resp}
	}
	var parts []groups.PartitionOffset
	for _, t := range req.Topics {
		for _, p := range t.Partitions {
			parts = append(parts, groups.PartitionOffset{Topic: t.Topic, Partition: p.Partition})
		}
	}
	errs, wait := s.b.Groups().DeleteOffsets(req.Group, parts, consumerTopics)
	return reply{later: func(context.Context) kmsg.Response {
		if err := wait(); err != nil || errs == nil {
			resp.ErrorCode = errorCode(err)
			return resp
		}
		i := 0
		for _, t := range req.Topics {
			rt := kmsg.NewOffsetDeleteResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewOffsetDeleteResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, errorCode(errs[i])
				rt.Partitions = append(rt.Partitions, rp)
				i++
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	}}
}

// consumerTopics is the subscription in a consumer-protocol member's
// metadata; other protocol types subscribe to nothing the broker knows.
func consumerTopics(protocolType string, metadata []byte) []string {
	if protocolType != "consumer" {
		return nil
	}
	var m kmsg.ConsumerMemberMetadata
	if err := m.ReadFrom(metadata); err != nil {
		return nil
	}
	return m.Topics
}
