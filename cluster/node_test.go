package cluster

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tierlog/tierlog/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 10 * time.Second

// testCluster is n real nodes: raft over loopback TCP, bolt files in
// t.TempDir(). A node keeps its dir and address across Close and reopen.
type testCluster struct {
	t     *testing.T
	peers []Peer
	dirs  map[int32]string
	nodes map[int32]*Node // open nodes only
	opts  func(*Options)
}

// newCluster starts a new cluster of n nodes.
func newCluster(t *testing.T, n int, opts func(*Options)) *testCluster {
	t.Helper()
	c := newEmptyCluster(t, n, opts)
	c.startAll()
	return c
}

// newEmptyCluster is the n nodes of a new cluster, none started yet.
func newEmptyCluster(t *testing.T, n int, opts func(*Options)) *testCluster {
	c := &testCluster{t: t, dirs: map[int32]string{}, nodes: map[int32]*Node{}, opts: opts}
	base := t.TempDir()
	for id := int32(1); id <= int32(n); id++ {
		c.peers = append(c.peers, Peer{ID: id, RaftAddr: testutil.FreeAddr(t)})
		c.dirs[id] = filepath.Join(base, "node"+strconv.Itoa(int(id)))
	}
	t.Cleanup(func() {
		for id := range c.nodes {
			c.stop(id)
		}
	})
	return c
}

// startAll opens every node at once: a new cluster's nodes each wait in
// Open until a majority of them answer.
func (c *testCluster) startAll() {
	c.t.Helper()
	var opens []*opening
	for _, p := range c.peers {
		opens = append(opens, c.startAsync(p.ID))
	}
	for _, o := range opens {
		if o.within(time.Minute) == nil {
			c.t.Fatalf("node %d still in Open after a minute", o.id)
		}
	}
}

// opening is a node's Open running on its own goroutine (startAsync): a
// node without Raft state returns from Open only once it bootstrapped or
// was re-admitted.
type opening struct {
	c  *testCluster
	id int32
	ch chan openResult
	n  *Node
}

type openResult struct {
	n   *Node
	err error
}

// startAsync opens node id on its own goroutine. The test's cleanup stops
// a wait still under way and closes a node nobody took.
func (c *testCluster) startAsync(id int32) *opening {
	return c.startAsyncWith(c.options(id))
}

func (c *testCluster) startAsyncWith(o Options) *opening {
	op := &opening{c: c, id: o.ID, ch: make(chan openResult, 1)}
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(done)
		n, err := Open(ctx, o)
		op.ch <- openResult{n, err}
	}()
	c.t.Cleanup(func() {
		cancel()
		<-done
		select {
		case r := <-op.ch:
			if r.err == nil {
				r.n.Close()
			}
		default:
		}
	})
	return op
}

// node returns the node if its Open returned (it is then one of the
// cluster's open nodes), nil while it waits; an error fails the test.
func (op *opening) node() *Node {
	op.c.t.Helper()
	if op.n == nil {
		select {
		case r := <-op.ch:
			op.take(r)
		default:
		}
	}
	return op.n
}

// within is node, waiting at most d for Open to return.
func (op *opening) within(d time.Duration) *Node {
	op.c.t.Helper()
	if op.n == nil {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case r := <-op.ch:
			op.take(r)
		case <-t.C:
		}
	}
	return op.n
}

func (op *opening) take(r openResult) {
	op.c.t.Helper()
	if r.err != nil {
		op.c.t.Fatalf("open node %d: %v", op.id, r.err)
	}
	op.n = r.n
	op.c.nodes[op.id] = r.n
}

func (c *testCluster) options(id int32) Options {
	o := Options{ID: id, Dir: c.dirs[id], RaftAddr: c.peers[id-1].RaftAddr, Peers: c.peers,
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond}
	if c.opts != nil {
		c.opts(&o)
	}
	return o
}

func (c *testCluster) start(id int32) *Node {
	c.t.Helper()
	n, err := Open(context.Background(), c.options(id))
	if err != nil {
		c.t.Fatalf("open node %d: %v", id, err)
	}
	c.nodes[id] = n
	return n
}

func (c *testCluster) stop(id int32) {
	c.t.Helper()
	if err := c.nodes[id].Close(); err != nil {
		c.t.Errorf("close node %d: %v", id, err)
	}
	delete(c.nodes, id)
}

// leader waits until one open node is the raft leader and all others agree.
func (c *testCluster) leader() *Node {
	c.t.Helper()
	var l *Node
	testutil.Eventually(c.t, wait, func() bool {
		l = nil
		for _, n := range c.nodes {
			if n.IsLeader() {
				l = n
			}
		}
		if l == nil {
			return false
		}
		for _, n := range c.nodes {
			if id, _ := n.Leader(); id != l.opts.ID {
				return false
			}
		}
		return true
	}, "no agreed raft leader")
	return l
}

// roles returns the agreed Raft leader's id and the other nodes' ids, in
// peer order.
func (c *testCluster) roles() (int32, []int32) {
	c.t.Helper()
	leader := c.leader().opts.ID
	var rest []int32
	for _, p := range c.peers {
		if p.ID != leader {
			rest = append(rest, p.ID)
		}
	}
	return leader, rest
}

// apply applies cmd on the current leader, retrying while leadership moves.
func (c *testCluster) apply(cmd Command) error {
	c.t.Helper()
	var err error
	testutil.Eventually(c.t, wait, func() bool {
		err = c.leader().Apply(context.Background(), cmd)
		return !errors.Is(err, ErrNotLeader)
	}, "apply kept failing with %v", err)
	return err
}

func (c *testCluster) mustApply(cmd Command) {
	c.t.Helper()
	if err := c.apply(cmd); err != nil {
		c.t.Fatalf("apply %+v: %v", cmd, err)
	}
}

// converged waits until every open node holds the same state as the leader.
func (c *testCluster) converged() *State {
	c.t.Helper()
	var want *State
	testutil.Eventually(c.t, wait, func() bool {
		want = c.leader().State()
		for _, n := range c.nodes {
			if !reflect.DeepEqual(n.State(), want) {
				return false
			}
		}
		return true
	}, "nodes did not converge")
	return want
}

func (c *testCluster) registerAndCreate(name string) {
	c.t.Helper()
	for _, p := range c.peers {
		c.mustApply(Command{RegisterNode: &RegisterNode{Node: NodeInfo{ID: p.ID, RaftAddr: p.RaftAddr}}})
	}
	ids := make([]int32, 0, len(c.peers))
	for _, p := range c.peers {
		ids = append(ids, p.ID)
	}
	a, err := AssignReplicas(ids, 3, len(ids), 0)
	if err != nil {
		c.t.Fatal(err)
	}
	c.mustApply(Command{CreateTopic: &CreateTopic{Name: name, ReplicationFactor: len(ids), Assignment: a}})
}

func TestThreeNodesAgree(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.leader()
	var follower *Node
	for _, n := range c.nodes {
		if n != leader {
			follower = n
		}
	}
	watch, cancel := follower.Watch()
	defer cancel()
	drain(watch)

	c.registerAndCreate("orders")
	s := c.converged()
	if len(s.Nodes) != 3 || len(s.Topics["orders"].Partitions) != 3 || s.Index == 0 {
		t.Fatalf("state %+v", s)
	}
	select {
	case <-watch:
	default:
		t.Fatal("no watch signal on the follower after commands applied")
	}

	// A follower refuses and names the leader.
	err := follower.Apply(context.Background(), Command{DeleteTopic: &DeleteTopic{Name: "orders"}})
	var nl *NotLeaderError
	if !errors.As(err, &nl) || !errors.Is(err, ErrNotLeader) || nl.LeaderID != leader.opts.ID || nl.LeaderAddr != leader.opts.RaftAddr {
		t.Fatalf("apply on follower: %v", err)
	}
	if _, ok := c.converged().Topics["orders"]; !ok {
		t.Fatal("refused apply on a follower deleted the topic")
	}
}

func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

func TestLeaderKilledNewLeaderAndRestartCatchesUp(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.registerAndCreate("t")
	before := c.converged()

	old := c.leader().opts.ID
	var survivor *Node
	for id, n := range c.nodes {
		if id != old {
			survivor = n
		}
	}
	watch, cancel := survivor.Watch()
	defer cancel()
	c.stop(old)
	next := c.leader()
	if next.opts.ID == old {
		t.Fatal("closed node still leader")
	}
	// The raft leader change alone (no command yet) wakes watchers.
	testutil.Eventually(t, wait, func() bool {
		select {
		case <-watch:
			return true
		default:
			return false
		}
	}, "no watch signal on a survivor after the raft leader changed")

	// Commands continue: the controller moves the dead node's partitions.
	alive := func(id int32) bool { return id != old }
	cmds := Failover(before, alive, nil)
	if len(cmds) != 1 {
		t.Fatalf("failover commands %+v", cmds)
	}
	for _, cmd := range cmds {
		c.mustApply(cmd)
	}
	c.mustApply(Command{AlterTopicConfig: &AlterTopicConfig{Name: "t", Set: map[string]string{"k": "v"}}})
	after := c.converged()

	// The closed node rejoins from its own stores (its Peers are ignored
	// now: raft.db has the configuration) and catches up.
	n := c.start(old)
	testutil.Eventually(t, wait, func() bool { return reflect.DeepEqual(n.State(), c.leader().State()) }, "restarted node did not catch up")
	got := n.State()
	if got.Index < after.Index || got.Topics["t"].Config["k"] != "v" {
		t.Fatalf("restarted node state %+v", got)
	}
	for i, p := range got.Topics["t"].Partitions {
		if p.Leader == old || p.LeaderEpoch != before.Topics["t"].Partitions[i].LeaderEpoch+boolInt(before.Topics["t"].Partitions[i].Leader == old) {
			t.Fatalf("partition %d after failover: %+v", i, p)
		}
	}
}

func boolInt(b bool) int32 {
	if b {
		return 1
	}
	return 0
}

func TestRefusedCommandsThroughRaft(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.registerAndCreate("t")
	s := c.converged()
	p := s.Topics["t"].Partitions[0]
	c.mustApply(Command{SetLeader: &SetLeader{Topic: "t", Partition: 0, LeaderEpoch: p.LeaderEpoch, Leader: p.Replicas[1]}})

	// A deposed leader's ISR change (old epoch) is refused on every node.
	err := c.apply(Command{ShrinkISR: &ChangeISR{Topic: "t", Partition: 0, LeaderEpoch: p.LeaderEpoch, Replicas: []int32{p.Replicas[2]}}})
	if !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("stale shrink: %v", err)
	}
	c.mustApply(Command{ShrinkISR: &ChangeISR{Topic: "t", Partition: 0, LeaderEpoch: p.LeaderEpoch + 1, Replicas: []int32{p.Replicas[2]}}})
	// A leader outside the ISR is refused (unclean election is off).
	err = c.apply(Command{SetLeader: &SetLeader{Topic: "t", Partition: 0, LeaderEpoch: p.LeaderEpoch + 1, Leader: p.Replicas[2]}})
	if !errors.Is(err, ErrNotInISR) {
		t.Fatalf("leader outside ISR: %v", err)
	}
	got := c.converged().Topics["t"].Partitions[0]
	if got.Leader != p.Replicas[1] || got.LeaderEpoch != p.LeaderEpoch+1 || len(got.ISR) != 2 {
		t.Fatalf("partition after refusals: %+v", got)
	}
}

func TestSnapshotRestoreAndInstallOnLaggingFollower(t *testing.T) {
	c := newCluster(t, 3, func(o *Options) { o.TrailingLogs = 1; o.SnapshotThreshold = 1 << 20 })
	c.registerAndCreate("t")
	c.converged()

	// A follower misses everything from here; the leader snapshots and
	// compacts the log past it, so it can only catch up by snapshot.
	var lag int32
	for id, n := range c.nodes {
		if !n.IsLeader() {
			lag = id
		}
	}
	c.stop(lag)
	for i := range 20 {
		c.mustApply(Command{AlterTopicConfig: &AlterTopicConfig{Name: "t", Set: map[string]string{"n": strconv.Itoa(i)}}})
	}
	want := c.converged()
	for _, n := range c.nodes {
		if err := n.Snapshot(); err != nil {
			t.Fatalf("snapshot node %d: %v", n.opts.ID, err)
		}
		first, err := n.store.FirstIndex()
		if err != nil || first <= 3 {
			t.Fatalf("node %d log not compacted: first index %d %v", n.opts.ID, first, err)
		}
	}
	n := c.start(lag)
	testutil.Eventually(t, wait, func() bool { return reflect.DeepEqual(n.State(), c.leader().State()) }, "lagging follower did not catch up")

	// Every node restarts from its snapshot plus its log tail.
	for id := range c.nodes {
		c.stop(id)
	}
	c.startAll()
	got := c.converged()
	if got.Topics["t"].Config["n"] != "19" || !reflect.DeepEqual(got.Topics, want.Topics) || !reflect.DeepEqual(got.Nodes, want.Nodes) {
		t.Fatalf("after restart from snapshots: %+v, want %+v", got, want)
	}
}

func TestSingleNodeCluster(t *testing.T) {
	dir, addr := t.TempDir(), testutil.FreeAddr(t)
	open := func() *Node {
		n, err := Open(context.Background(), Options{ID: 0, Dir: dir, RaftAddr: addr,
			HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond, LeaderLeaseTimeout: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, wait, n.IsLeader, "single node never led")
		return n
	}
	n := open()
	ctx := context.Background()
	if err := n.Apply(ctx, Command{RegisterNode: &RegisterNode{Node: NodeInfo{ID: 0, RaftAddr: addr}}}); err != nil {
		t.Fatal(err)
	}
	if err := n.Apply(ctx, Command{CreateTopic: &CreateTopic{Name: "t", ReplicationFactor: 1, Assignment: [][]int32{{0}, {0}}}}); err != nil {
		t.Fatal(err)
	}
	// The group names itself on its own after its first election (nameGroup):
	// wait for it, or want may miss an id the restarted node then has.
	testutil.Eventually(t, wait, func() bool { return n.View().RaftID != "" }, "the group never named itself")
	want := n.State()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n = open()
	defer n.Close()
	testutil.Eventually(t, wait, func() bool { return reflect.DeepEqual(n.State(), want) }, "single node lost its state over a restart")
}

func TestOpenRefusesBadOptions(t *testing.T) {
	for _, o := range []Options{
		{ID: 5, Dir: t.TempDir(), RaftAddr: "127.0.0.1:1", Peers: []Peer{{ID: 1, RaftAddr: "127.0.0.1:2"}}},
		{ID: 1, Dir: t.TempDir(), RaftAddr: "0.0.0.0:1"},
		{ID: 1, Dir: t.TempDir(), RaftAddr: ":1"},
		{ID: -1, Dir: t.TempDir(), RaftAddr: "127.0.0.1:1"},
	} {
		if _, err := Open(context.Background(), o); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("open %+v: %v", o, err)
		}
	}
}
