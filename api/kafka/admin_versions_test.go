package kafka

import (
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/broker"
)

// Every advertised version of every admin kind, on one raw connection:
// create a topic, describe it, alter it both ways, grow it, describe the
// cluster, delete it - each answered at the version asked and doing what
// it says.
func TestAdminEveryVersion(t *testing.T) {
	n := startNode(t, "", Options{})
	r := dialRaw(t, n.addr)
	versions := func(k kmsg.Key) []int16 {
		a := apis[k.Int16()]
		var vs []int16
		for v := a.min; v <= a.max; v++ {
			vs = append(vs, v)
		}
		return vs
	}
	topic := func(v int16) string { return fmt.Sprintf("v%d", v) }
	for _, v := range versions(kmsg.CreateTopics) {
		req := kmsg.NewPtrCreateTopicsRequest()
		req.SetVersion(v)
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic(v), 1, 1
		rt.Configs = []kmsg.CreateTopicsRequestTopicConfig{{Name: "retention.ms", Value: strPtr("60000")}}
		req.Topics = append(req.Topics, rt)
		resp := r.roundTrip(req).(*kmsg.CreateTopicsResponse)
		if resp.Topics[0].ErrorCode != 0 {
			t.Fatalf("CreateTopics v%d: %v", v, kerr.ErrorForCode(resp.Topics[0].ErrorCode))
		}
		if v >= 5 && (resp.Topics[0].NumPartitions != 1 || len(resp.Topics[0].Configs) != len(broker.ConfigKeys())) {
			t.Errorf("CreateTopics v%d: %d partitions, %d configs", v, resp.Topics[0].NumPartitions, len(resp.Topics[0].Configs))
		}
	}
	name := topic(0)
	for _, v := range versions(kmsg.DescribeConfigs) {
		req := kmsg.NewPtrDescribeConfigsRequest()
		req.SetVersion(v)
		req.IncludeSynonyms, req.IncludeDocumentation = true, true
		req.Resources = []kmsg.DescribeConfigsRequestResource{{ResourceType: kmsg.ConfigResourceTypeTopic, ResourceName: name,
			ConfigNames: []string{"retention.ms", "segment.bytes", "not.a.key"}}}
		resp := r.roundTrip(req).(*kmsg.DescribeConfigsResponse)
		res := resp.Resources[0]
		if res.ErrorCode != 0 || len(res.Configs) != 2 {
			t.Fatalf("DescribeConfigs v%d: %v, %d configs, want the 2 named keys that exist", v, kerr.ErrorForCode(res.ErrorCode), len(res.Configs))
		}
		for _, c := range res.Configs {
			if c.Name == "retention.ms" && (*c.Value != "60000" || (v == 0 && c.IsDefault) || (v >= 1 && c.Source != kmsg.ConfigSourceDynamicTopicConfig)) {
				t.Errorf("DescribeConfigs v%d: retention.ms %+v", v, c)
			}
			if v >= 3 && c.Name == "segment.bytes" && (c.ConfigType != kmsg.ConfigTypeInt || c.Documentation == nil) {
				t.Errorf("DescribeConfigs v%d: segment.bytes type %s doc %v", v, c.ConfigType, c.Documentation)
			}
		}
	}
	for _, v := range versions(kmsg.IncrementalAlterConfigs) {
		req := kmsg.NewPtrIncrementalAlterConfigsRequest()
		req.SetVersion(v)
		req.Resources = []kmsg.IncrementalAlterConfigsRequestResource{{ResourceType: kmsg.ConfigResourceTypeTopic, ResourceName: name,
			Configs: []kmsg.IncrementalAlterConfigsRequestResourceConfig{{Name: "segment.ms", Value: strPtr(fmt.Sprint(1000 + v))}}}}
		if code := r.roundTrip(req).(*kmsg.IncrementalAlterConfigsResponse).Resources[0].ErrorCode; code != 0 {
			t.Fatalf("IncrementalAlterConfigs v%d: %v", v, kerr.ErrorForCode(code))
		}
		if ti, _ := n.b.Topic(name); ti.Overrides["segment.ms"] != fmt.Sprint(1000+v) || ti.Overrides["retention.ms"] != "60000" {
			t.Fatalf("IncrementalAlterConfigs v%d: overrides %v", v, ti.Overrides)
		}
	}
	for _, v := range versions(kmsg.AlterConfigs) {
		req := kmsg.NewPtrAlterConfigsRequest()
		req.SetVersion(v)
		req.Resources = []kmsg.AlterConfigsRequestResource{{ResourceType: kmsg.ConfigResourceTypeTopic, ResourceName: name,
			Configs: []kmsg.AlterConfigsRequestResourceConfig{{Name: "segment.ms", Value: strPtr(fmt.Sprint(2000 + v))}}}}
		if code := r.roundTrip(req).(*kmsg.AlterConfigsResponse).Resources[0].ErrorCode; code != 0 {
			t.Fatalf("AlterConfigs v%d: %v", v, kerr.ErrorForCode(code))
		}
		if ti, _ := n.b.Topic(name); len(ti.Overrides) != 1 || ti.Overrides["segment.ms"] != fmt.Sprint(2000+v) {
			t.Fatalf("AlterConfigs v%d: overrides %v, want segment.ms alone", v, ti.Overrides)
		}
	}
	for i, v := range versions(kmsg.CreatePartitions) {
		req := kmsg.NewPtrCreatePartitionsRequest()
		req.SetVersion(v)
		req.Topics = []kmsg.CreatePartitionsRequestTopic{{Topic: name, Count: int32(i + 2),
			Assignment: []kmsg.CreatePartitionsRequestTopicAssignment{{Replicas: []int32{0}}}}}
		if code := r.roundTrip(req).(*kmsg.CreatePartitionsResponse).Topics[0].ErrorCode; code != 0 {
			t.Fatalf("CreatePartitions v%d: %v", v, kerr.ErrorForCode(code))
		}
		if ti, _ := n.b.Topic(name); len(ti.Partitions) != i+2 {
			t.Fatalf("CreatePartitions v%d: %d partitions, want %d", v, len(ti.Partitions), i+2)
		}
	}
	for _, v := range versions(kmsg.DescribeCluster) {
		req := kmsg.NewPtrDescribeClusterRequest()
		req.SetVersion(v)
		req.EndpointType = 1
		resp := r.roundTrip(req).(*kmsg.DescribeClusterResponse)
		if resp.ErrorCode != 0 || resp.ClusterID != n.b.ClusterID() || len(resp.Brokers) != 1 {
			t.Fatalf("DescribeCluster v%d: %+v", v, resp)
		}
	}
	for _, v := range versions(kmsg.DeleteTopics) {
		req := kmsg.NewPtrDeleteTopicsRequest()
		req.SetVersion(v)
		req.TopicNames = []string{topic(v)}
		req.Topics = []kmsg.DeleteTopicsRequestTopic{{Topic: strPtr(topic(v))}}
		if code := r.roundTrip(req).(*kmsg.DeleteTopicsResponse).Topics[0].ErrorCode; code != 0 {
			t.Fatalf("DeleteTopics v%d: %v", v, kerr.ErrorForCode(code))
		}
		if _, err := n.b.Topic(topic(v)); err == nil {
			t.Fatalf("DeleteTopics v%d: topic still there", v)
		}
	}
}

// CreateTopics cases kadm does not send: duplicate names, replica
// assignments (only this node can hold a partition), and a server whose
// topic_defaults make a value STATIC_BROKER_CONFIG.
func TestCreateTopicsEdgeCases(t *testing.T) {
	defaults := broker.DefaultTopicConfig()
	defaults.SegmentMs = 600000
	n := startNodeWith(t, broker.Options{Defaults: defaults}, Options{NodeID: 0})
	r := dialRaw(t, n.addr)
	topicWith := func(name string, parts int32, rf int16, assign ...[]int32) kmsg.CreateTopicsRequestTopic {
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic, rt.NumPartitions, rt.ReplicationFactor = name, parts, rf
		for i, a := range assign {
			rt.ReplicaAssignment = append(rt.ReplicaAssignment, kmsg.CreateTopicsRequestTopicReplicaAssignment{Partition: int32(i), Replicas: a})
		}
		return rt
	}
	req := kmsg.NewPtrCreateTopicsRequest()
	req.SetVersion(7)
	req.Topics = []kmsg.CreateTopicsRequestTopic{
		topicWith("dup", 1, 1), topicWith("dup", 1, 1),
		topicWith("assigned", -1, -1, []int32{0}, []int32{0}),
		topicWith("elsewhere", -1, -1, []int32{1}),
		topicWith("two-replicas", -1, -1, []int32{0, 1}),
		topicWith("assign-and-count", 2, -1, []int32{0}),
		topicWith("rf0", 1, 0),
	}
	want := map[string]*kerr.Error{"assigned": {}, "elsewhere": kerr.InvalidReplicaAssignment, "two-replicas": kerr.InvalidReplicaAssignment,
		"assign-and-count": kerr.InvalidRequest, "rf0": kerr.InvalidReplicationFactor, "dup": kerr.InvalidRequest}
	resp := r.roundTrip(req).(*kmsg.CreateTopicsResponse)
	if len(resp.Topics) != len(req.Topics) {
		t.Fatalf("%d answers for %d topics", len(resp.Topics), len(req.Topics))
	}
	for _, rt := range resp.Topics {
		if w := want[rt.Topic]; rt.ErrorCode != w.Code {
			t.Errorf("%s: %v, want %s", rt.Topic, kerr.ErrorForCode(rt.ErrorCode), w.Message)
		}
		if rt.ErrorCode != 0 && rt.ErrorMessage == nil {
			t.Errorf("%s: error without a message", rt.Topic)
		}
	}
	ts := n.b.Topics()
	if len(ts) != 1 || ts[0].Name != "assigned" || len(ts[0].Partitions) != 2 {
		t.Fatalf("topics after the request: %+v, want only assigned with 2 partitions", ts)
	}
	// segment.ms comes from the server's topic_defaults.
	dc := kmsg.NewPtrDescribeConfigsRequest()
	dc.SetVersion(4)
	dc.IncludeSynonyms = true
	dc.Resources = []kmsg.DescribeConfigsRequestResource{{ResourceType: kmsg.ConfigResourceTypeTopic, ResourceName: "assigned", ConfigNames: []string{"segment.ms"}}}
	c := r.roundTrip(dc).(*kmsg.DescribeConfigsResponse).Resources[0].Configs[0]
	if *c.Value != "600000" || c.Source != kmsg.ConfigSourceStaticBrokerConfig || len(c.ConfigSynonyms) != 2 ||
		c.ConfigSynonyms[0].Name != "topic_defaults.segment.ms" || *c.ConfigSynonyms[1].Value != "3600000" {
		t.Errorf("segment.ms from the server's defaults: %+v", c)
	}
}
