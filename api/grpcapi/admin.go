package grpcapi

import (
	"context"

	"github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/broker"
)

// CreateTopic creates a topic; the broker validates the name, the partition
// count and the configuration keys. Messages do not name the operation:
// the client says what it was doing ("create topic x: ...").
func (s *Server) CreateTopic(ctx context.Context, req *tierlogv1.CreateTopicRequest) (*tierlogv1.CreateTopicResponse, error) {
	if req.GetName() == "" {
		return nil, invalidf("topic name is required")
	}
	if req.GetPartitions() < 1 {
		return nil, invalidf("partitions %d: a topic needs at least 1 partition", req.GetPartitions())
	}
	info, err := s.b.CreateTopicRF(req.GetName(), req.GetPartitions(), int(req.GetReplicationFactor()), req.GetConfig())
	if err != nil {
		return nil, s.statusFor("CreateTopic", err)
	}
	return &tierlogv1.CreateTopicResponse{Topic: topicProto(info)}, nil
}

// DeleteTopic deletes a topic and its data.
func (s *Server) DeleteTopic(ctx context.Context, req *tierlogv1.DeleteTopicRequest) (*tierlogv1.DeleteTopicResponse, error) {
	if req.GetName() == "" {
		return nil, invalidf("topic name is required")
	}
	if err := s.b.DeleteTopic(req.GetName()); err != nil {
		return nil, s.statusFor("DeleteTopic", err)
	}
	return &tierlogv1.DeleteTopicResponse{}, nil
}

// ListTopics lists every topic, sorted by name.
func (s *Server) ListTopics(ctx context.Context, req *tierlogv1.ListTopicsRequest) (*tierlogv1.ListTopicsResponse, error) {
	topics := s.b.Topics()
	resp := &tierlogv1.ListTopicsResponse{Topics: make([]*tierlogv1.TopicInfo, len(topics))}
	for i, t := range topics {
		resp.Topics[i] = topicProto(t)
	}
	return resp, nil
}

// DescribeTopic describes one topic.
func (s *Server) DescribeTopic(ctx context.Context, req *tierlogv1.DescribeTopicRequest) (*tierlogv1.DescribeTopicResponse, error) {
	if req.GetName() == "" {
		return nil, invalidf("topic name is required")
	}
	info, err := s.b.Topic(req.GetName())
	if err != nil {
		return nil, s.statusFor("DescribeTopic", err)
	}
	return &tierlogv1.DescribeTopicResponse{Topic: topicProto(info)}, nil
}

// ListOffsets resolves earliest, latest or a timestamp for one partition or
// for all partitions of a topic.
func (s *Server) ListOffsets(ctx context.Context, req *tierlogv1.ListOffsetsRequest) (*tierlogv1.ListOffsetsResponse, error) {
	topic := req.GetTopic()
	if topic == "" {
		return nil, invalidf("list offsets: topic is required")
	}
	if ts, ok := req.GetSpec().(*tierlogv1.ListOffsetsRequest_TimestampMs); ok && ts.TimestampMs < 0 {
		return nil, invalidf("list offsets: timestamp_ms %d is negative: use Unix milliseconds, or earliest/latest", ts.TimestampMs)
	}
	var parts []int32
	if req.Partition != nil {
		parts = []int32{req.GetPartition()}
	} else {
		info, err := s.b.Topic(topic)
		if err != nil {
			return nil, s.statusFor("ListOffsets", err)
		}
		for _, p := range info.Partitions {
			parts = append(parts, p.Partition)
		}
	}
	resp := &tierlogv1.ListOffsetsResponse{}
	for _, p := range parts {
		start, end, err := s.b.Offsets(topic, p)
		if err != nil {
			return nil, s.statusFor("ListOffsets", err)
		}
		po := &tierlogv1.PartitionOffset{Partition: p, LogStartOffset: start, LogEndOffset: end}
		switch spec := req.GetSpec().(type) {
		case *tierlogv1.ListOffsetsRequest_Earliest:
			po.Offset = start
		case *tierlogv1.ListOffsetsRequest_TimestampMs:
			if po.Offset, err = s.b.OffsetForTime(ctx, topic, p, spec.TimestampMs); err != nil {
				return nil, s.statusFor("ListOffsets", err)
			}
		default: // latest, or no spec given
			po.Offset = end
		}
		resp.Partitions = append(resp.Partitions, po)
	}
	return resp, nil
}

func topicProto(t broker.TopicInfo) *tierlogv1.TopicInfo {
	pt := &tierlogv1.TopicInfo{
		Name:       t.Name,
		Partitions: make([]*tierlogv1.PartitionInfo, len(t.Partitions)),
		Config:     t.Config,
	}
	for i, p := range t.Partitions {
		pt.Partitions[i] = &tierlogv1.PartitionInfo{
			Partition:   p.Partition,
			StartOffset: p.StartOffset,
			EndOffset:   p.EndOffset,
			Segments:    int32(p.Segments),
			SizeBytes:   p.Bytes,
		}
	}
	return pt
}

// AlterTopicConfig changes a topic's configuration; the broker validates
// the keys and values as it does for CreateTopic.
func (s *Server) AlterTopicConfig(ctx context.Context, req *tierlogv1.AlterTopicConfigRequest) (*tierlogv1.AlterTopicConfigResponse, error) {
	if req.GetName() == "" {
		return nil, invalidf("alter topic config: name is required")
	}
	if len(req.GetSet()) == 0 && len(req.GetDelete()) == 0 {
		return nil, invalidf("alter topic config %q: nothing to change: give keys to set or to delete", req.GetName())
	}
	info, err := s.b.AlterTopicConfig(req.GetName(), req.GetSet(), req.GetDelete())
	if err != nil {
		return nil, s.statusFor("AlterTopicConfig", err)
	}
	return &tierlogv1.AlterTopicConfigResponse{Topic: topicProto(info)}, nil
}
