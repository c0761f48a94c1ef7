package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tierlog/tierlog/internal/replcheck"
	"github.com/tierlog/tierlog/internal/testutil"
)

// testCluster is n `tierlog serve --peers` processes on loopback, each
// with its own data directory and a fixed Raft port (Raft peers are named
// up front); gRPC, Kafka and HTTP ports are picked by the kernel and read
// from each node's ready file.
type testCluster struct {
	t     testing.TB
	dirs  []string
	raft  []string
	args  []string // extra serve arguments for every node
	nodes []*node  // nil while a node is stopped
	// prep, when set, adjusts node id's command before it starts (the
	// partition test runs each node under its own group id).
	prep func(id int, cmd *exec.Cmd)
}

// startCluster starts n nodes (ids 1..n) and waits for each to be ready.
func startCluster(t testing.TB, n int, args ...string) *testCluster {
	t.Helper()
	c := newTestCluster(t, n, args...)
	c.startAll()
	return c
}

// newTestCluster names n nodes (ids 1..n), their data directories and
// Raft addresses, without starting them (startAll does).
func newTestCluster(t testing.TB, n int, args ...string) *testCluster {
	t.Helper()
	c := &testCluster{t: t, args: args, nodes: make([]*node, n)}
	for i := range n {
		c.dirs = append(c.dirs, filepath.Join(t.TempDir(), fmt.Sprintf("node%d", i+1)))
		c.raft = append(c.raft, testutil.FreeAddr(t))
	}
	return c
}

// startAll starts every node and waits until each is ready and alive.
func (c *testCluster) startAll() {
	c.t.Helper()
	n := len(c.nodes)
	// Launched together: no node is ready before a quorum has elected a
	// controller.
	var ready []func()
	for i := range n {
		ready = append(ready, c.launch(i+1))
	}
	for _, r := range ready {
		r()
	}
	c.waitAlive(n)
}

// waitAlive waits until the controller hears n nodes.
func (c *testCluster) waitAlive(n int) {
	c.t.Helper()
	eventually(c.t, "every node registered and alive", func() error {
		st := clusterStatusJSON(c.t, c.anyNode())
		alive := 0
		for _, ns := range st.Nodes {
			if ns.Alive {
				alive++
			}
		}
		if alive != n {
			return fmt.Errorf("%d of %d nodes alive: %+v", alive, n, st.Nodes)
		}
		return nil
	})
}

// peers is the --peers value naming every node.
func (c *testCluster) peers() string {
	var ps []string
	for i, a := range c.raft {
		ps = append(ps, fmt.Sprintf("%d=%s", i+1, a))
	}
	return strings.Join(ps, ",")
}

// start (re)starts node id.
func (c *testCluster) start(id int) *node {
	c.t.Helper()
	c.launch(id)()
	return c.nodes[id-1]
}

// launch starts node id and returns the wait for its readiness.
func (c *testCluster) launch(id int) func() {
	c.t.Helper()
	args := append([]string{"--node-id", fmt.Sprint(id), "--peers", c.peers()}, c.args...)
	var prep func(*exec.Cmd)
	if c.prep != nil {
		prep = func(cmd *exec.Cmd) { c.prep(id, cmd) }
	}
	n, ready := launchNodeWith(c.t, c.dirs[id-1], nil, prep, args...)
	c.nodes[id-1] = n
	return ready
}

// kill sends sig (SIGKILL or SIGTERM) to node id and waits for its exit.
func (c *testCluster) kill(id int, sig syscall.Signal) {
	c.t.Helper()
	c.nodes[id-1].signal(sig)
	c.nodes[id-1] = nil
}

// node returns node id (nil while stopped).
func (c *testCluster) node(id int) *node { return c.nodes[id-1] }

// kafkaAddrs lists the Kafka addresses of the running nodes: a client's
// seed brokers.
func (c *testCluster) kafkaAddrs() []string {
	var out []string
	for _, n := range c.nodes {
		if n != nil {
			out = append(out, n.kafkaAddr)
		}
	}
	return out
}

// anyNode returns a running node.
func (c *testCluster) anyNode() *node {
	for _, n := range c.nodes {
		if n != nil {
			return n
		}
	}
	c.t.Fatal("no node running")
	return nil
}

// dataDirs maps node ids to their data directories (for replcheck).
func (c *testCluster) dataDirs() map[int32]string {
	out := map[int32]string{}
	for i, d := range c.dirs {
		out[int32(i+1)] = d
	}
	return out
}

// ackLog collects what a producer was told: value -> partition and offset.
type ackLog struct {
	mu   sync.Mutex
	acks []replcheck.Ack
	errs int
}

func (a *ackLog) add(r *kgo.Record, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.errs++
		return
	}
	a.acks = append(a.acks, replcheck.Ack{Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value})
}

func (a *ackLog) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.acks)
}

func (a *ackLog) all() []replcheck.Ack {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.acks)
}

// produceLoop produces numbered records at acks=all (idempotent, retried
// until delivered) until ctx ends, then waits for every promise.
func produceLoop(ctx context.Context, t *testing.T, cl *kgo.Client, topic string, acks *ackLog) {
	for i := 0; ctx.Err() == nil; i++ {
		r := &kgo.Record{Topic: topic, Value: fmt.Appendf(nil, "v-%07d", i)}
		cl.Produce(context.Background(), r, acks.add)
		if i%64 == 63 {
			time.Sleep(5 * time.Millisecond) // a steady stream, not a flood of buffered records
		}
	}
	if err := cl.Flush(context.Background()); err != nil {
		t.Errorf("flush: %v", err)
	}
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

// createAcksAllTopic creates topic with one partition, the given number
// of replicas and min.insync.replicas=2.
func createAcksAllTopic(t *testing.T, c *testCluster, topic string, replicas int16) {
	t.Helper()
	resp, err := kadmFor(t, c).CreateTopic(context.Background(), 1, replicas, map[string]*string{"min.insync.replicas": kadm.StringPtr("2")}, topic)
	if err != nil || resp.Err != nil {
		t.Fatalf("create topic: %v %v", err, resp.Err)
	}
}

// startAcksAllProducer starts produceLoop on topic with a client of its
// own (acks=all, retried for up to 2 minutes, each Produce request
// waiting requestTimeout). stop ends the loop and waits until every
// promise is answered; on a failure before that, the test's cleanup
// closes the client first, failing what it still buffers, so the flush
// returns at once.
func startAcksAllProducer(t *testing.T, c *testCluster, topic string, requestTimeout time.Duration) (acks *ackLog, stop func()) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.kafkaAddrs()...), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordRetries(1<<30), kgo.RecordDeliveryTimeout(2*time.Minute), kgo.ProduceRequestTimeout(requestTimeout))
	if err != nil {
		t.Fatal(err)
	}
	acks = &ackLog{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		produceLoop(ctx, t, cl, topic, acks)
	}()
	t.Cleanup(func() { cancel(); cl.Close(); <-done })
	return acks, func() { cancel(); <-done }
}

// readBack reads partition 0 of topic from its leader, from its start to
// its high watermark, by offset; an offset served twice fails the test.
func readBack(t *testing.T, c *testCluster, topic string) map[int64]*kgo.Record {
	t.Helper()
	byOffset := map[int64]*kgo.Record{}
	for _, r := range readAll(t, c.kafkaAddrs(), topic) {
		if _, dup := byOffset[r.Offset]; dup {
			t.Fatalf("offset %d served twice", r.Offset)
		}
		byOffset[r.Offset] = r
	}
	return byOffset
}

// checkServed fails unless every acknowledged record is served at its
// offset with its value.
func checkServed(t *testing.T, served map[int64]*kgo.Record, want []replcheck.Ack) {
	t.Helper()
	for _, a := range want {
		r, ok := served[a.Offset]
		if !ok || !bytes.Equal(r.Value, a.Value) {
			var v []byte
			if ok {
				v = r.Value
			}
			t.Fatalf("acknowledged %q at offset %d; the leader serves %q (present %v)", a.Value, a.Offset, v, ok)
		}
	}
}

// stopAndCheckReplicas stops every running node with SIGTERM and checks
// that every replica of topic/0 holds the acknowledged records byte for
// byte (replcheck; tiered: history below every replica's local log start
// may be in the bucket only).
func stopAndCheckReplicas(t *testing.T, c *testCluster, topic string, want []replcheck.Ack, tiered bool) replcheck.Report {
	t.Helper()
	for id := range c.nodes {
		if c.node(id+1) != nil {
			c.kill(id+1, syscall.SIGTERM)
		}
	}
	rep, err := replcheck.Check(want, replcheck.Options{Topic: topic, Partitions: 1, Dirs: c.dataDirs(), Tiered: tiered})
	if err != nil || !rep.OK() {
		t.Fatalf("replication check: %v\n%s", err, rep)
	}
	return rep
}

// verifyAcknowledged is the end of an acks=all test: every acknowledged
// record read back from the leader at its offset, exactly once; then
// every node stopped and the replicas checked byte for byte.
func verifyAcknowledged(t *testing.T, c *testCluster, topic string, want []replcheck.Ack) replcheck.Report {
	t.Helper()
	checkServed(t, readBack(t, c, topic), want)
	return stopAndCheckReplicas(t, c, topic, want, false)
}
