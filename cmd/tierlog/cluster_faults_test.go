package main

import (
	"context"
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/replcheck"
)

// partitionOf returns topic/p from a status (failing if it is absent).
func partitionOf(t *testing.T, st clusterStatus, topic string, p int32) partitionStatus {
	t.Helper()
	for _, ps := range st.Partitions {
		if ps.Topic == topic && ps.Partition == p {
			return ps
		}
	}
	t.Fatalf("no %s/%d in the cluster status: %+v", topic, p, st.Partitions)
	return partitionStatus{}
}

// waitISR asks node n (one that answers: not paused) until topic/0's ISR
// satisfies cond, and returns how long that took from since.
func waitISR(t *testing.T, n *node, topic string, what string, since time.Time, cond func(isr []int32) bool) time.Duration {
	t.Helper()
	eventually(t, what, func() error {
		ps := partitionOf(t, clusterStatusJSON(t, n), topic, 0)
		if !cond(ps.ISR) {
			return fmt.Errorf("ISR %v (leader %d, epoch %d)", ps.ISR, ps.Leader, ps.LeaderEpoch)
		}
		return nil
	})
	return time.Since(since)
}

// waitMoreAcks waits until the producer has n more acknowledgements than
// it had when called.
func waitMoreAcks(t *testing.T, acks *ackLog, n int, what string) {
	t.Helper()
	from := acks.count()
	eventually(t, what, func() error {
		if got := acks.count(); got < from+n {
			return fmt.Errorf("%d acknowledged, want %d", got, from+n)
		}
		return nil
	})
}

// probeProduce sends one record at acks=all straight to node leader in a
// ProduceRequest written by hand (no client retries), and returns the
// partition's error code and, when it is 0, the offset it was stored at.
func probeProduce(t *testing.T, cl *kgo.Client, leader int32, topic string, key, value []byte) (int16, int64) {
	t.Helper()
	b, err := batch.Build([]batch.Record{{Timestamp: time.Now().UnixMilli(), Key: key, Value: value}}, batch.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition, rp.Records = 0, b
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic, rt.Partitions = topic, []kmsg.ProduceRequestTopicPartition{rp}
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis, req.Topics = -1, 3000, []kmsg.ProduceRequestTopic{rt}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl.Broker(int(leader)))
	if err != nil {
		t.Fatalf("produce probe to node %d: %v", leader, err)
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		t.Fatalf("produce probe: response %+v", resp)
	}
	p := resp.Topics[0].Partitions[0]
	return p.ErrorCode, p.BaseOffset
}

// logEnd reads a stopped node's replica of topic/0 and returns its end.
func logEnd(t *testing.T, dir, topic string) int64 {
	t.Helper()
	recs, err := replcheck.Records(dir, topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 {
		return 0
	}
	return recs[len(recs)-1].Offset + 1
}

// TestClusterFollowerFaults: three nodes, a topic with three replicas and
// min.insync.replicas=2, a franz-go producer at acks=all throughout.
//  1. A follower killed (SIGKILL) leaves the ISR; acks=all goes on with
//     two in sync; restarted, it rejoins.
//  2. The other follower paused (SIGSTOP) leaves the ISR, acks=all goes
//     on; resumed (SIGCONT), it rejoins.
//  3. Both followers killed: acks=all is refused with NOT_ENOUGH_REPLICAS
//     and nothing is acknowledged beyond what a follower holds; with
//     them back, it works again.
//
// Every acknowledged record is then checked on all three replicas.
func TestClusterFollowerFaults(t *testing.T) {
	c := startCluster(t, 3, "--bucket", "file://"+t.TempDir(), "--replica-lag-time-max", "2s")
	const topic = "faults"
	adm := kadmFor(t, c)
	resp, err := adm.CreateTopic(context.Background(), 1, 3, map[string]*string{"min.insync.replicas": kadm.StringPtr("2")}, topic)
	if err != nil || resp.Err != nil {
		t.Fatalf("create topic: %v %v", err, resp.Err)
	}
	leader := leaderOf(t, c, topic, 0)
	waitInSync(t, c, topic, 0, 3)
	var followers []int32
	for _, r := range partitionOf(t, clusterStatusJSON(t, c.anyNode()), topic, 0).Replicas {
		if r != leader {
			followers = append(followers, r)
		}
	}
	if len(followers) != 2 {
		t.Fatalf("leader %d, followers %v: want 2", leader, followers)
	}
	f1, f2 := followers[0], followers[1]
	ln := c.node(int(leader)) // asked for the status: up throughout

	cl, err := kgo.NewClient(kgo.SeedBrokers(c.kafkaAddrs()...), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordRetries(1<<30), kgo.RecordDeliveryTimeout(2*time.Minute), kgo.ProduceRequestTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	acks := &ackLog{}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		produceLoop(ctx, t, cl, topic, acks)
	}()
	// On a failure, closing the client fails what it still buffers, so
	// the producer's flush returns.
	defer func() { stop(); cl.Close(); <-done }()
	waitMoreAcks(t, acks, 300, "acknowledgements with every replica up")

	// 1. A follower killed and restarted.
	at := time.Now()
	c.kill(int(f1), syscall.SIGKILL)
	leftKilled := waitISR(t, ln, topic, fmt.Sprintf("killed node %d leaves the ISR", f1), at, func(isr []int32) bool { return !slices.Contains(isr, f1) })
	waitMoreAcks(t, acks, 300, "acks=all with one follower killed")
	at = time.Now()
	c.start(int(f1))
	rejoinKilled := waitISR(t, ln, topic, fmt.Sprintf("restarted node %d rejoins the ISR", f1), at, func(isr []int32) bool { return slices.Contains(isr, f1) })
	waitMoreAcks(t, acks, 300, "acks=all after the restart")

	// 2. A follower paused and resumed.
	paused := c.node(int(f2))
	at = time.Now()
	if err := paused.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	leftPaused := waitISR(t, ln, topic, fmt.Sprintf("paused node %d leaves the ISR", f2), at, func(isr []int32) bool { return !slices.Contains(isr, f2) })
	waitMoreAcks(t, acks, 300, "acks=all with one follower paused")
	// The operator's view meanwhile: the hung node does not answer, the
	// leader does.
	st := clusterStatusJSON(t, ln)
	if ps := partitionOf(t, st, topic, 0); st.Errors[f2] == "" || ps.HighWatermark < 0 {
		t.Fatalf("cluster status with node %d paused: errors %v, high watermark %d; want it not answering and the leader's figures", f2, st.Errors, ps.HighWatermark)
	}
	at = time.Now()
	if err := paused.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	rejoinPaused := waitISR(t, ln, topic, fmt.Sprintf("resumed node %d rejoins the ISR", f2), at, func(isr []int32) bool { return slices.Contains(isr, f2) })
	waitInSync(t, c, topic, 0, 3)
	waitMoreAcks(t, acks, 300, "acks=all after the pause")

	// 3. Both followers down: acks=all is refused before anything is
	// acknowledged that only the leader holds.
	at = time.Now()
	c.kill(int(f1), syscall.SIGKILL)
	c.kill(int(f2), syscall.SIGKILL)
	probes, codes := 0, map[int16]int{}
	var refusedAfter time.Duration
	eventually(t, "acks=all refused with NOT_ENOUGH_REPLICAS, two nodes down", func() error {
		probes++
		code, off := probeProduce(t, cl, leader, topic, fmt.Appendf(nil, "probe-down-%d", probes), []byte("must not be acknowledged"))
		codes[code]++
		if code == 0 {
			t.Fatalf("acks=all produce acknowledged at offset %d with both followers down", off)
		}
		if code != kerr.NotEnoughReplicas.Code {
			return fmt.Errorf("probe %d: %v", probes, kerr.ErrorForCode(code))
		}
		refusedAfter = time.Since(at)
		return nil
	})
	// A few more, while the producer keeps retrying.
	for i := range 3 {
		if code, _ := probeProduce(t, cl, leader, topic, fmt.Appendf(nil, "probe-refused-%d", i), []byte("x")); code != kerr.NotEnoughReplicas.Code {
			t.Fatalf("probe after the first refusal: %v, want NOT_ENOUGH_REPLICAS", kerr.ErrorForCode(code))
		}
	}
	// Whatever was acknowledged is on the leader and a follower: below
	// the end of the longer of the stopped followers' logs.
	held := max(logEnd(t, c.dirs[f1-1], topic), logEnd(t, c.dirs[f2-1], topic))
	for _, a := range acks.all() {
		if a.Offset >= held {
			t.Fatalf("acknowledged %q at offset %d, but the followers hold offsets below %d only", a.Value, a.Offset, held)
		}
	}
	downAcks := acks.count()

	at = time.Now()
	c.start(int(f1))
	c.start(int(f2))
	var probeAck replcheck.Ack
	eventually(t, "acks=all works again with the followers back", func() error {
		key := []byte("probe-back")
		code, off := probeProduce(t, cl, leader, topic, key, []byte("acknowledged"))
		if code != 0 {
			return fmt.Errorf("probe: %v", kerr.ErrorForCode(code))
		}
		probeAck = replcheck.Ack{Partition: 0, Offset: off, Key: key, Value: []byte("acknowledged")}
		return nil
	})
	recovered := time.Since(at)
	waitMoreAcks(t, acks, 300, "the producer's acknowledgements resume")
	stop()
	<-done
	waitInSync(t, c, topic, 0, 3)

	want := append(acks.all(), probeAck)
	got := readAll(t, c.kafkaAddrs(), topic)
	byOffset := map[int64]string{}
	for _, r := range got {
		byOffset[r.Offset] = string(r.Value)
	}
	for _, a := range want {
		if v, ok := byOffset[a.Offset]; !ok || v != string(a.Value) {
			t.Fatalf("acknowledged %q at offset %d; the leader serves %q (present %v)", a.Value, a.Offset, v, ok)
		}
	}
	for id := range c.nodes {
		c.kill(id+1, syscall.SIGTERM)
	}
	rep, err := replcheck.Check(want, replcheck.Options{Topic: topic, Partitions: 1, Dirs: c.dataDirs()})
	if err != nil || !rep.OK() {
		t.Fatalf("replication check: %v\n%s", err, rep)
	}
	t.Logf("leader %d; killed follower %d left the ISR after %v, rejoined %v after its restart; paused follower %d left after %v, rejoined %v after SIGCONT",
		leader, f1, leftKilled.Round(time.Millisecond), rejoinKilled.Round(time.Millisecond), f2, leftPaused.Round(time.Millisecond), rejoinPaused.Round(time.Millisecond))
	t.Logf("two followers down: NOT_ENOUGH_REPLICAS %v after the kills (probe codes %v), %d acknowledged then; acks=all back %v after the restarts",
		refusedAfter.Round(time.Millisecond), codes, downAcks, recovered.Round(time.Millisecond))
	t.Logf("%d acknowledged records, %d producer send errors; %s", len(want), acks.errs, rep)
}
