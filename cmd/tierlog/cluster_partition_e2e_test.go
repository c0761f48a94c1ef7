package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/internal/batch"
)

// TestClusterPartitionedLeader: three nodes, a franz-go producer at
// acks=all (min.insync.replicas=2), then the partition's leader is cut
// off from the other two by iptables rules on the loopback - its Raft
// and gRPC traffic dropped both ways, its Kafka port still reachable.
// The isolated old leader, asked directly, never acknowledges acks=all
// (it cannot reach an in-sync replica, nor commit an ISR change without
// the Raft majority); the majority elects a new leader and acks=all goes
// on there. Once healed, the old leader follows the new one: the records
// it took while isolated (never acknowledged) are gone, every
// acknowledged record is read back at its offset, and the three replicas
// hold the same bytes (replcheck).
func TestClusterPartitionedLeader(t *testing.T) {
	fw := newFirewall(t)
	c := newTestCluster(t, 3, "--bucket", "file://"+t.TempDir())
	c.prep = runAsNodeGID
	c.startAll()
	const topic = "part"
	createAcksAllTopic(t, c, topic, 3)
	acks, stop := startAcksAllProducer(t, c, topic, 3*time.Second)
	eventually(t, "records acknowledged before the partition", func() error {
		if n := acks.count(); n < 300 {
			return fmt.Errorf("%d acknowledged", n)
		}
		return nil
	})

	old := leaderOf(t, c, topic, 0)
	oldEpoch := partitionStatusOf(t, c.node(int(old)), topic).LeaderEpoch
	var majority []int32
	own := []string{c.raft[old-1], c.node(int(old)).grpcAddr}
	var peers []string
	for id := int32(1); id <= 3; id++ {
		if id != old {
			majority = append(majority, id)
			peers = append(peers, c.raft[id-1], c.node(int(id)).grpcAddr)
		}
	}
	fw.isolate(nodeGID(int(old)), own, peers)
	cutAt, ackedAtCut := time.Now(), acks.count()
	t.Logf("node %d (leader at epoch %d) cut off from nodes %v with %d records acknowledged", old, oldEpoch, majority, ackedAtCut)

	// Produce straight to the isolated node: stored there, perhaps, but
	// never acknowledged.
	isolated := pinTo(t, c.node(int(old)).kafkaAddr)
	var unacked [][]byte
	refuse := func(when string) {
		t.Helper()
		v := fmt.Appendf(nil, "isolated-%d", len(unacked))
		unacked = append(unacked, v)
		code := isolated.produce(t, topic, v, 2000)
		switch code {
		case kerr.RequestTimedOut.Code, kerr.NotEnoughReplicas.Code, kerr.NotEnoughReplicasAfterAppend.Code, kerr.NotLeaderForPartition.Code:
			t.Logf("acks=all to the isolated old leader %s: %s", when, kerr.ErrorForCode(code))
		default:
			t.Fatalf("acks=all to the isolated old leader %s: error code %d (%v); want REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS(_AFTER_APPEND) or NOT_LEADER_OR_FOLLOWER", when, code, kerr.ErrorForCode(code))
		}
	}
	refuse("at once")

	// The majority elects one of its own with a higher epoch, and the
	// producer's acks=all resumes there.
	asked := c.node(int(majority[0]))
	var now partitionStatus
	eventually(t, "a new leader among the majority", func() error {
		now = partitionStatusOf(t, asked, topic)
		if !slices.Contains(majority, now.Leader) || now.LeaderEpoch <= oldEpoch {
			return fmt.Errorf("leader %d at epoch %d", now.Leader, now.LeaderEpoch)
		}
		return nil
	})
	eventually(t, "acks=all resumes on the new leader", func() error {
		if n := acks.count(); n < ackedAtCut+300 {
			return fmt.Errorf("%d acknowledged, %d at the partition", n, ackedAtCut)
		}
		return nil
	})
	t.Logf("node %d leads at epoch %d; acks=all resumed %v after the partition", now.Leader, now.LeaderEpoch, time.Since(cutAt).Round(time.Millisecond))
	refuse("while another node leads")

	// `cluster status` asked of the majority: the old leader is down and
	// not answering, and does not hold up the others' answers (the new
	// leader's high watermark is there).
	eventually(t, "cluster status during the partition", func() error {
		st := clusterStatusJSON(t, asked)
		for _, n := range st.Nodes {
			if n.Alive == (n.ID == old) {
				return fmt.Errorf("node %d alive %v: %+v", n.ID, n.Alive, st.Nodes)
			}
		}
		if _, ok := st.Errors[old]; !ok || len(st.Errors) != 1 {
			return fmt.Errorf("nodes not answering: %v; want only node %d", st.Errors, old)
		}
		for _, ps := range st.Partitions {
			if ps.Topic == topic && (ps.Leader == old || ps.HighWatermark < 0) {
				return fmt.Errorf("partition %+v", ps)
			}
		}
		return nil
	})

	fw.heal()
	waitInSync(t, c, topic, 0, 3)
	stop()
	waitInSync(t, c, topic, 0, 3)

	want := acks.all()
	served := readBack(t, c, topic)
	for _, off := range slices.Sorted(maps.Keys(served)) {
		for _, u := range unacked {
			if bytes.Equal(served[off].Value, u) {
				t.Fatalf("%q, never acknowledged by the isolated old leader, is served at offset %d", u, off)
			}
		}
	}
	checkServed(t, served, want)
	// Byte for byte: the old leader truncated what it took while isolated.
	rep := stopAndCheckReplicas(t, c, topic, want, false)
	t.Logf("%d acknowledged records, %d send errors; replicas agree: %s", len(want), acks.errs, rep)
}

// partitionStatusOf is partition 0 of topic as `cluster status` on n
// reports it.
func partitionStatusOf(t *testing.T, n *node, topic string) partitionStatus {
	t.Helper()
	for _, ps := range clusterStatusJSON(t, n).Partitions {
		if ps.Topic == topic && ps.Partition == 0 {
			return ps
		}
	}
	t.Fatalf("cluster status on %s: no %s/0", n.grpcAddr, topic)
	return partitionStatus{}
}

// pinnedProducer sends Produce requests, written with kmsg, to one
// broker's connection whatever the metadata says.
type pinnedProducer struct{ cl *kgo.Client }

func pinTo(t *testing.T, addr string) *pinnedProducer {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &pinnedProducer{cl: cl}
}

// produce sends one record to partition 0 of topic at acks=all and
// returns the partition's error code.
func (p *pinnedProducer) produce(t *testing.T, topic string, value []byte, timeoutMs int32) int16 {
	t.Helper()
	b, err := batch.Build([]batch.Record{{Timestamp: time.Now().UnixMilli(), Value: value}}, batch.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, timeoutMs
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = b
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(context.Background(), clientRunTimeout)
	defer cancel()
	seeds := p.cl.SeedBrokers()
	resp, err := seeds[0].Request(ctx, req)
	if err != nil {
		t.Fatalf("produce to the pinned broker: %v", err)
	}
	r := resp.(*kmsg.ProduceResponse)
	if len(r.Topics) != 1 || len(r.Topics[0].Partitions) != 1 {
		t.Fatalf("produce answer: %+v", r)
	}
	return r.Topics[0].Partitions[0].ErrorCode
}
