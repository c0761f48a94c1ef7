package kafka

import (
	"errors"
	"math"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/cluster"
)

// metadata describes the brokers (this node alone, or the cluster's nodes)
// and the controller, and the
// topics asked for — all of them for a nil list (an empty list before v1).
// An unknown topic is created when the server and the request allow it
// (AllowAutoTopicCreation, v4+; always before v4, as in Kafka).
func (s *Server) metadata(_ *clientConn, req *kmsg.MetadataRequest) reply {
	resp := req.ResponseKind().(*kmsg.MetadataResponse)
	for _, n := range s.nodes() {
		resp.Brokers = append(resp.Brokers, kmsg.MetadataResponseBroker{NodeID: n.id, Host: n.host, Port: n.port})
	}
	resp.ControllerID = s.b.Controller()
	if id := s.b.ClusterID(); id != "" {
		resp.ClusterID = &id
	}
	resp.AuthorizedOperations = math.MinInt32 // not computed (no ACLs)

	all := req.Topics == nil || (req.Version == 0 && len(req.Topics) == 0)
	if all {
		for _, t := range s.b.Topics() {
			resp.Topics = append(resp.Topics, s.topicMetadata(t, nil))
		}
		return reply{resp: resp}
	}
	create := s.opts.AutoCreateTopics && (req.Version < 4 || req.AllowAutoTopicCreation)
	for _, rt := range req.Topics {
		if rt.Topic == nil {
			// A lookup by topic id (v10+): tierlog topics have no ids.
			t := kmsg.NewMetadataResponseTopic()
			t.TopicID = rt.TopicID
			t.ErrorCode = kerr.UnknownTopicID.Code
			resp.Topics = append(resp.Topics, t)
			continue
		}
		name := *rt.Topic
		info, err := s.b.Topic(name)
		if errors.Is(err, broker.ErrUnknownTopic) && create {
			info, err = s.autoCreate(name)
		}
		resp.Topics = append(resp.Topics, s.topicMetadata(info, err, name))
	}
	return reply{resp: resp}
}

// autoCreate creates a topic a client asked for with the server's default
// partitions and topic config. A create that lost a race with another is
// the same topic.
func (s *Server) autoCreate(name string) (broker.TopicInfo, error) {
	if err := broker.ValidateTopicName(name); err != nil {
		return broker.TopicInfo{}, err
	}
	info, err := s.b.CreateTopic(name, s.opts.NumPartitions, nil)
	if errors.Is(err, broker.ErrTopicExists) {
		return s.b.Topic(name)
	}
	if err == nil {
		s.log.Info("topic auto-created", "topic", name, "partitions", s.opts.NumPartitions)
	}
	return info, err
}

// topicMetadata describes one topic; name is the requested name when err
// says the topic could not be described.
func (s *Server) topicMetadata(info broker.TopicInfo, err error, name ...string) kmsg.MetadataResponseTopic {
	t := kmsg.NewMetadataResponseTopic()
	if err != nil {
		n := name[0]
		t.Topic = &n
		t.ErrorCode = errorCode(err)
		if errors.Is(err, broker.ErrTopicDeletionPending) {
			t.ErrorCode = kerr.UnknownTopicOrPartition.Code
		}
		return t
	}
	n := info.Name
	t.Topic = &n
	for _, p := range info.Partitions {
		mp := kmsg.NewMetadataResponseTopicPartition()
		mp.Partition = p.Partition
		r, err := s.b.Route(info.Name, p.Partition)
		if err != nil {
			mp.ErrorCode = errorCode(err)
			t.Partitions = append(t.Partitions, mp)
			continue
		}
		mp.Leader, mp.LeaderEpoch, mp.Replicas, mp.ISR = r.Leader, r.LeaderEpoch, r.Replicas, r.ISR
		if r.Leader == cluster.NoLeader {
			// Every in-sync replica is down: clients wait and refresh.
			mp.ErrorCode = kerr.LeaderNotAvailable.Code
		}
		t.Partitions = append(t.Partitions, mp)
	}
	return t
}
