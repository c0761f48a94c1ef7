package kafka

import (
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/broker"
)

// CreateTopics, DeleteTopics and CreatePartitions. Each runs in the
// handler, in request order, and answers once the broker's call returned:
// a created topic (or added partitions) is durable in the data directory
// and, with a bucket, recorded there; a deleted topic is gone for clients
// and its removal from the bucket finishes in the background if the
// bucket is down. A single node holds every partition (replication factor
// 1); a cluster's controller assigns the replicas of the factor asked for.

// createTopics creates (or, validate-only, checks) each topic.
func (s *Server) createTopics(_ *clientConn, req *kmsg.CreateTopicsRequest) reply {
	resp := req.ResponseKind().(*kmsg.CreateTopicsResponse)
	dup := duplicates(req.Topics, func(t kmsg.CreateTopicsRequestTopic) string { return t.Topic })
	for _, rt := range req.Topics {
		t := kmsg.NewCreateTopicsResponseTopic()
		t.Topic = rt.Topic
		n, config, err := s.createTopic(rt, dup[rt.Topic], req.ValidateOnly)
		if err != nil {
			t.ErrorCode, t.ErrorMessage = adminErrorCode(err), errorMessage(err)
			resp.Topics = append(resp.Topics, t)
			continue
		}
		t.NumPartitions, t.ReplicationFactor = n, int16(s.b.DefaultReplicationFactor())
		if rt.ReplicationFactor > 0 {
			t.ReplicationFactor = rt.ReplicationFactor
		}
		// v5+: the topic's configs, as DescribeConfigs gives them.
		if cfg, err := broker.ParseTopicConfig(s.b.TopicDefaults(), config); err == nil {
			for _, e := range s.topicConfigEntries(cfg.Map(), config) {
				c := kmsg.NewCreateTopicsResponseTopicConfig()
				c.Name, c.Value, c.Source = e.name, &e.value, int8(e.source)
				t.Configs = append(t.Configs, c)
			}
		}
		resp.Topics = append(resp.Topics, t)
	}
	return reply{resp: resp}
}

// createTopic checks one topic of a CreateTopics request and creates it
// unless validateOnly, returning its partition count and config.
func (s *Server) createTopic(rt kmsg.CreateTopicsRequestTopic, dup, validateOnly bool) (int32, map[string]string, error) {
	if dup {
		return 0, nil, errInvalidRequest("the topic is named more than once in the request")
	}
	if err := broker.ValidateTopicName(rt.Topic); err != nil {
		return 0, nil, err
	}
	n := rt.NumPartitions
	if len(rt.ReplicaAssignment) > 0 {
		if rt.NumPartitions != -1 || rt.ReplicationFactor != -1 {
			return 0, nil, errInvalidRequest("with a replica assignment, num partitions and replication factor must be -1")
		}
		n = int32(len(rt.ReplicaAssignment))
		seen := map[int32]bool{}
		for _, a := range rt.ReplicaAssignment {
			if a.Partition < 0 || a.Partition >= n || seen[a.Partition] {
				return 0, nil, errReplicaAssignment(fmt.Sprintf("partitions must be numbered 0 to %d, each once", n-1))
			}
			seen[a.Partition] = true
			if err := s.checkReplicas(a.Replicas); err != nil {
				return 0, nil, err
			}
		}
	} else {
		switch {
		case rt.NumPartitions == -1:
			n = s.opts.NumPartitions
		case rt.NumPartitions < 1:
			return 0, nil, fmt.Errorf("%w: number of partitions must be larger than 0, or -1 for the server's num_partitions (%d)",
				broker.ErrInvalidPartition, s.opts.NumPartitions)
		}
		if err := s.checkReplicationFactor(rt.ReplicationFactor); err != nil {
			return 0, nil, err
		}
	}
	rf := max(int(rt.ReplicationFactor), 0) // -1: the server's default
	config := map[string]string{}
	for _, c := range rt.Configs {
		// A null value leaves the key to the server default, as in Kafka.
		if c.Value != nil {
			config[c.Name] = *c.Value
		}
	}
	if validateOnly {
		return n, config, s.b.CheckCreateTopic(rt.Topic, n, config)
	}
	_, err := s.b.CreateTopicRF(rt.Topic, n, rf, config)
	if err == nil {
		s.log.Info("topic created by a Kafka client", "topic", rt.Topic, "partitions", n)
	}
	return n, config, err
}

// checkReplicas accepts the only assignment one node can have: itself. A
// cluster assigns replicas itself (its controller spreads them).
func (s *Server) checkReplicas(replicas []int32) error {
	if s.b.Clustered() {
		return errReplicaAssignment("tierlog assigns replicas itself: give a replication factor instead of an assignment")
	}
	if len(replicas) != 1 || replicas[0] != s.opts.NodeID {
		return errReplicaAssignment(fmt.Sprintf("replicas %v: this single node (%d) is the only replica of every partition", replicas, s.opts.NodeID))
	}
	return nil
}

// checkReplicationFactor accepts -1 (the server default) and, on a single
// node, 1; in a cluster, 1 to the number of nodes.
func (s *Server) checkReplicationFactor(rf int16) error {
	if rf == 1 || rf == -1 {
		return nil
	}
	if n := s.b.Voters(); s.b.Clustered() && rf > 1 {
		if int(rf) > n {
			return errReplicationFactor(fmt.Sprintf("replication factor %d larger than available brokers: %d", rf, n))
		}
		return nil
	}
	if rf > 1 {
		return errReplicationFactor(fmt.Sprintf("replication factor %d larger than available brokers: 1 (tierlog is one node; its copy in the bucket is its durability)", rf))
	}
	return errReplicationFactor(fmt.Sprintf("replication factor %d: must be 1 or -1", rf))
}

// deleteTopics deletes topics by name. tierlog topics have no ids, so a
// deletion by id (v6+) finds none.
func (s *Server) deleteTopics(_ *clientConn, req *kmsg.DeleteTopicsRequest) reply {
	resp := req.ResponseKind().(*kmsg.DeleteTopicsResponse)
	type target struct {
		name *string
		id   [16]byte
	}
	var targets []target
	if req.Version < 6 {
		for _, n := range req.TopicNames {
			targets = append(targets, target{name: &n})
		}
	} else {
		for _, t := range req.Topics {
			targets = append(targets, target{name: t.Topic, id: t.TopicID})
		}
	}
	names := map[string]int{}
	for _, t := range targets {
		if t.name != nil {
			names[*t.name]++
		}
	}
	for _, tg := range targets {
		t := kmsg.NewDeleteTopicsResponseTopic()
		t.Topic, t.TopicID = tg.name, tg.id
		var err error
		switch {
		case tg.name == nil:
			err = errUnknownTopicID
		case names[*tg.name] > 1:
			err = errInvalidRequest("the topic is named more than once in the request")
		default:
			err = broker.ValidateTopicName(*tg.name)
			if err == nil {
				err = s.b.DeleteTopic(*tg.name)
			}
			if errors.Is(err, broker.ErrTopicDeletionPending) {
				// Deleted for clients; the bucket's copy goes in the
				// background ("marked for deletion", as Kafka says).
				s.log.Warn("topic deleted; removing it from the bucket continues in the background", "topic", *tg.name, "err", err)
				err = nil
			}
			if err == nil {
				s.log.Info("topic deleted by a Kafka client", "topic", *tg.name)
			}
		}
		t.ErrorCode, t.ErrorMessage = adminErrorCode(err), errorMessage(err)
		resp.Topics = append(resp.Topics, t)
	}
	return reply{resp: resp}
}

// createPartitions grows topics to the counts asked for (or, validate-only,
// checks that it could).
func (s *Server) createPartitions(_ *clientConn, req *kmsg.CreatePartitionsRequest) reply {
	resp := req.ResponseKind().(*kmsg.CreatePartitionsResponse)
	dup := duplicates(req.Topics, func(t kmsg.CreatePartitionsRequestTopic) string { return t.Topic })
	for _, rt := range req.Topics {
		err := func() error {
			if dup[rt.Topic] {
				return errInvalidRequest("the topic is named more than once in the request")
			}
			if err := broker.ValidateTopicName(rt.Topic); err != nil {
				return err
			}
			if rt.Assignment != nil {
				info, err := s.b.Topic(rt.Topic)
				if err != nil {
					return err
				}
				if want := int(rt.Count) - len(info.Partitions); len(rt.Assignment) != want {
					return errReplicaAssignment(fmt.Sprintf("%d assignments for %d new partitions", len(rt.Assignment), max(want, 0)))
				}
				for _, a := range rt.Assignment {
					if err := s.checkReplicas(a.Replicas); err != nil {
						return err
					}
				}
			}
			if req.ValidateOnly {
				return s.b.CheckAddPartitions(rt.Topic, rt.Count)
			}
			_, err := s.b.AddPartitions(rt.Topic, rt.Count)
			return err
		}()
		t := kmsg.NewCreatePartitionsResponseTopic()
		t.Topic = rt.Topic
		t.ErrorCode, t.ErrorMessage = adminErrorCode(err), errorMessage(err)
		resp.Topics = append(resp.Topics, t)
	}
	return reply{resp: resp}
}

// duplicates marks the names (or config resources) a request lists more
// than once; Kafka answers each of them INVALID_REQUEST.
func duplicates[T any, K comparable](ts []T, key func(T) K) map[K]bool {
	n := map[K]int{}
	for _, t := range ts {
		n[key(t)]++
	}
	dup := map[K]bool{}
	for k, c := range n {
		if c > 1 {
			dup[k] = true
		}
	}
	return dup
}

func errReplicaAssignment(msg string) error {
	return &codedError{kerr.InvalidReplicaAssignment, msg}
}

func errReplicationFactor(msg string) error {
	return &codedError{kerr.InvalidReplicationFactor, msg}
}

var errUnknownTopicID = &codedError{kerr.UnknownTopicID, "tierlog topics have no topic ids; name the topic"}
