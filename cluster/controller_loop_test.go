package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tierlog/tierlog/internal/testutil"
)

// ctlCluster is three real nodes (raft on loopback) with a Controller
// each. Heartbeats are driven by the test: every beat interval each node
// marked up is reported alive to every open controller, as the peer
// service would. Forwarding goes from a controller to the leader's
// Propose, through the command's JSON encoding as on the wire.
type ctlCluster struct {
	*testCluster
	session time.Duration

	mu        sync.Mutex // guards ctls, regs and up; held for a whole beat round
	ctls      map[int32]*Controller
	regs      map[int32]*prometheus.Registry
	up        map[int32]bool
	inc       map[int32]uint64 // each node's process incarnation (1 until restarted)
	forwarded []NodeInfo       // leaders that forwarded commands were sent to
}

func newCtlCluster(t *testing.T, session time.Duration, unclean func(string) bool) *ctlCluster {
	t.Helper()
	// Raft timings a little above node_test's, so a loaded 2-core machine
	// does not move raft leadership in the middle of a test.
	tc := newCluster(t, 3, func(o *Options) {
		o.HeartbeatTimeout, o.ElectionTimeout, o.LeaderLeaseTimeout = 500*time.Millisecond, 500*time.Millisecond, 250*time.Millisecond
	})
	c := &ctlCluster{testCluster: tc, session: session, ctls: map[int32]*Controller{},
		regs: map[int32]*prometheus.Registry{}, up: map[int32]bool{}, inc: map[int32]uint64{}}
	for id, n := range tc.nodes {
		reg := prometheus.NewRegistry()
		ctl := StartController(ControllerOptions{Node: n, Self: c.info(id), SessionTimeout: session,
			Tick: 50 * time.Millisecond, Unclean: unclean, Registerer: reg})
		ctl.SetForwarder(c.forward)
		c.ctls[id], c.regs[id], c.up[id], c.inc[id] = ctl, reg, true, 1
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(min(session/10, 100*time.Millisecond))
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			c.mu.Lock()
			for id, up := range c.up {
				if up {
					for _, ctl := range c.ctls {
						ctl.Heartbeat(Beat{Node: c.info(id), Incarnation: c.inc[id]}, time.Now())
					}
				}
			}
			c.mu.Unlock()
		}
	}()
	// Runs before newCluster's cleanup closes the nodes.
	t.Cleanup(func() {
		close(stop)
		<-done
		for _, ctl := range c.ctls {
			ctl.Close()
		}
	})
	return c
}

func (c *ctlCluster) info(id int32) NodeInfo {
	return NodeInfo{ID: id, RaftAddr: c.peers[id-1].RaftAddr, GRPCAddr: fmt.Sprintf("grpc-of-%d", id), KafkaAddr: fmt.Sprintf("kafka-of-%d", id)}
}

// forward sends cmd to the leader's Propose as the peer service does: the
// command as JSON, a refusal back as its text (ParseRefusal), a
// NotLeaderError as is (the service has a field for it).
func (c *ctlCluster) forward(ctx context.Context, leader NodeInfo, cmd Command) error {
	b, err := cmd.Encode()
	if err != nil {
		return err
	}
	d, err := DecodeCommand(b)
	if err != nil {
		return err
	}
	c.mu.Lock()
	ctl := c.ctls[leader.ID]
	c.forwarded = append(c.forwarded, leader)
	c.mu.Unlock()
	if ctl == nil {
		return fmt.Errorf("node %d is down", leader.ID)
	}
	err = ctl.Propose(ctx, d)
	if err == nil || errors.Is(err, ErrNotLeader) {
		return err
	}
	return ParseRefusal(err.Error())
}

func (c *ctlCluster) ctl(id int32) *Controller {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ctls[id]
}

// beat starts (true) or stops (false) the heartbeats of node id; once it
// returns, no heartbeat of a stopped node is delivered any more.
func (c *ctlCluster) beat(id int32, up bool) {
	c.mu.Lock()
	c.up[id] = up
	c.mu.Unlock()
}

// restart makes node id's heartbeats carry a new incarnation, as a new
// process's do.
func (c *ctlCluster) restart(id int32) {
	c.mu.Lock()
	c.inc[id]++
	c.mu.Unlock()
}

// kill stops node id like a crash: its heartbeats, its controller, its raft.
func (c *ctlCluster) kill(id int32) {
	c.t.Helper()
	c.beat(id, false)
	c.mu.Lock()
	ctl := c.ctls[id]
	delete(c.ctls, id)
	delete(c.up, id)
	c.mu.Unlock()
	ctl.Close()
	c.stop(id)
}

// registered waits until the state holds every open node with its
// heartbeat's addresses: the leader registers itself (Self) and the
// others from their heartbeats.
func (c *ctlCluster) registered() {
	c.t.Helper()
	testutil.Eventually(c.t, wait, func() bool {
		s := c.leader().State()
		for id := range c.nodes {
			if !s.Nodes[id].SameAddresses(c.info(id)) {
				return false
			}
		}
		return true
	}, "nodes not registered")
}

// others returns the open nodes other than the raft leader, sorted.
func (c *ctlCluster) others() (leader int32, rest []int32) {
	leader = c.leader().opts.ID
	for id := range c.nodes {
		if id != leader {
			rest = append(rest, id)
		}
	}
	slices.Sort(rest)
	return leader, rest
}

// part returns a partition as the raft leader holds it. A new raft leader
// may not have applied every committed entry yet: part waits for it.
func (c *ctlCluster) part(topic string, i int32) Partition {
	c.t.Helper()
	var (
		p   Partition
		err error
	)
	testutil.Eventually(c.t, wait, func() bool {
		p, err = c.leader().State().Partition(topic, i)
		return err == nil
	}, "%s/%d never appeared on the raft leader", topic, i)
	return p
}

// metric reads one sample from node id's registry (label value "" for
// metrics without labels).
func (c *ctlCluster) metric(id int32, name, label string) float64 {
	c.t.Helper()
	mfs, err := c.regs[id].Gather()
	if err != nil {
		c.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	c.t.Fatalf("node %d has no metric %s{%s}", id, name, label)
	return 0
}

func (c *ctlCluster) propose(id int32, cmd Command) error {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	return c.ctl(id).Propose(ctx, cmd)
}

// ledBy returns the partitions of topic led by node id.
func (c *ctlCluster) ledBy(topic string, id int32) []int32 {
	var out []int32
	for i, p := range c.leader().State().Topics[topic].Partitions {
		if p.Leader == id {
			out = append(out, int32(i))
		}
	}
	return out
}

func TestControllerFailsOverToISRWhenHeartbeatsStop(t *testing.T) {
	c := newCtlCluster(t, time.Second, nil)
	c.registered()
	leader, rest := c.others()
	if err := c.ctl(rest[0]).CreateTopic(context.Background(), "t", "topic-id", 3, 3, nil); err != nil {
		t.Fatal(err)
	}
	// Three partitions over three nodes: each node is preferred leader once.
	victim := rest[1]
	led := c.ledBy("t", victim)
	if len(led) != 1 {
		t.Fatalf("node %d leads %v of t", victim, led)
	}
	before := c.part("t", led[0])

	c.beat(victim, false)
	var after Partition
	testutil.Eventually(t, wait, func() bool {
		after = c.part("t", led[0])
		return after.Leader != victim
	}, "t/%d still led by silent node %d", led[0], victim)
	if after.Leader == NoLeader || !slices.Contains(after.ISR, after.Leader) || after.LeaderEpoch != before.LeaderEpoch+1 {
		t.Fatalf("after failover %+v, before %+v", after, before)
	}
	// victim was the preferred (first) replica; the next one takes over.
	if before.Replicas[0] != victim || after.Leader != before.Replicas[1] {
		t.Fatalf("new leader %d, want the next in-sync replica in assignment order (%+v)", after.Leader, before)
	}
	if got := c.metric(leader, "tierlog_cluster_leader_changes_total", "failover"); got != 1 {
		t.Fatalf("leader changes on the controller: %v", got)
	}
	testutil.Eventually(t, wait, func() bool { return c.metric(leader, "tierlog_cluster_nodes_alive", "") == 2 }, "nodes_alive not 2")
	for id := range c.nodes {
		want := 0.0
		if id == leader {
			want = 1
		}
		if got := c.metric(id, "tierlog_cluster_is_controller", ""); got != want {
			t.Fatalf("node %d is_controller %v", id, got)
		}
	}
	if got := c.metric(rest[0], "tierlog_cluster_nodes_alive", ""); got != 0 {
		t.Fatalf("nodes_alive on a non-controller: %v", got)
	}

	// The node comes back: alive again, and nothing else changes (taking
	// it back into the ISR is the partition leader's job).
	c.beat(victim, true)
	testutil.Eventually(t, wait, func() bool { return c.metric(leader, "tierlog_cluster_nodes_alive", "") == 3 }, "returning node not alive")
	if got := c.part("t", led[0]); got.Leader != after.Leader || got.LeaderEpoch != after.LeaderEpoch {
		t.Fatalf("returning node moved leadership: %+v, was %+v", got, after)
	}
}

func TestControllerTakeoverJudgesNodesByTheirLastHeartbeat(t *testing.T) {
	c := newCtlCluster(t, time.Second, nil)
	c.registered()
	old, rest := c.others()
	if err := c.ctl(old).CreateTopic(context.Background(), "t", "", 3, 3, nil); err != nil {
		t.Fatal(err)
	}
	led := c.ledBy("t", old)
	if len(led) != 1 {
		t.Fatalf("node %d leads %v of t", old, led)
	}
	before := c.part("t", led[0])

	c.beat(old, false)
	t0 := time.Now() // no heartbeat of old reaches anyone after this
	c.kill(old)
	next := c.leader().opts.ID
	if next == old || !slices.Contains(rest, next) {
		t.Fatalf("raft leader %d after killing %d", next, old)
	}
	testutil.Eventually(t, wait, func() bool { return c.metric(next, "tierlog_cluster_is_controller", "") == 1 }, "node %d never became controller", next)
	// Every node gets every node's heartbeats, so the new controller
	// judges the dead node by its last beat (before t0), not by a grace
	// counted from its takeover: failover does not wait a second session.
	if got, ok := c.ctl(next).Alive()[old]; ok && !got.Before(t0) {
		t.Fatalf("new controller's view of the dead node: last heard %v, after its kill at %v (a grace from the takeover)", got, t0)
	}
	var after Partition
	testutil.Eventually(t, wait, func() bool {
		after = c.part("t", led[0])
		return after.Leader != old
	}, "t/%d not moved off the killed node", led[0])
	if after.Leader == NoLeader || after.LeaderEpoch != before.LeaderEpoch+1 || !slices.Contains(before.ISR, after.Leader) {
		t.Fatalf("after failover %+v, before %+v", after, before)
	}
	if got := c.metric(next, "tierlog_cluster_nodes_alive", ""); got != 2 {
		t.Fatalf("nodes_alive on the new controller: %v", got)
	}
}

func TestControllerOfflineUntilAnISRMemberReturns(t *testing.T) {
	c := newCtlCluster(t, time.Second, nil)
	c.registered()
	leader, rest := c.others()
	a, b := rest[0], rest[1]
	if err := c.propose(leader, Command{CreateTopic: &CreateTopic{Name: "o", ReplicationFactor: 2, Assignment: [][]int32{{a, b}}}}); err != nil {
		t.Fatal(err)
	}
	c.beat(a, false)
	c.beat(b, false)
	var off Partition
	testutil.Eventually(t, wait, func() bool {
		off = c.part("o", 0)
		return off.Leader == NoLeader
	}, "o/0 not offline with both replicas silent")
	if !slices.Equal(off.ISR, []int32{a, b}) || off.LeaderEpoch < 1 {
		t.Fatalf("offline partition %+v: the ISR must be kept so a member can lead again", off)
	}
	if got := c.metric(leader, "tierlog_cluster_leader_changes_total", "offline"); got != 1 {
		t.Fatalf("offline changes %v", got)
	}

	c.beat(b, true)
	var back Partition
	testutil.Eventually(t, wait, func() bool {
		back = c.part("o", 0)
		return back.Leader != NoLeader
	}, "o/0 stayed offline with ISR member %d back", b)
	if back.Leader != b || back.LeaderEpoch != off.LeaderEpoch+1 {
		t.Fatalf("back online %+v, offline was %+v", back, off)
	}
}

func TestControllerUncleanElectionPerTopic(t *testing.T) {
	c := newCtlCluster(t, time.Second, func(topic string) bool { return topic == "dirty" })
	c.registered()
	leader, rest := c.others()
	a, b := rest[0], rest[1]
	for _, name := range []string{"clean", "dirty"} {
		if err := c.propose(leader, Command{CreateTopic: &CreateTopic{Name: name, ReplicationFactor: 2, Assignment: [][]int32{{a, b}}}}); err != nil {
			t.Fatal(err)
		}
		// b falls out of sync (as its partition leader a would decide).
		if err := c.propose(a, Command{ShrinkISR: &ChangeISR{Topic: name, Partition: 0, LeaderEpoch: 0, Replicas: []int32{b}}}); err != nil {
			t.Fatal(err)
		}
	}
	c.beat(a, false)
	testutil.Eventually(t, wait, func() bool {
		return c.part("clean", 0).Leader == NoLeader && c.part("dirty", 0).Leader == b
	}, "clean %+v / dirty %+v after the only in-sync replica went silent", c.part("clean", 0), c.part("dirty", 0))
	if p := c.part("dirty", 0); !slices.Equal(p.ISR, []int32{b}) || p.LeaderEpoch != 1 {
		t.Fatalf("unclean leader %+v", p)
	}
	if p := c.part("clean", 0); !slices.Equal(p.ISR, []int32{a}) {
		t.Fatalf("clean offline %+v", p)
	}
	if got := c.metric(leader, "tierlog_cluster_leader_changes_total", "unclean"); got != 1 {
		t.Fatalf("unclean changes %v", got)
	}
}

func TestControllerProposeFromFollower(t *testing.T) {
	c := newCtlCluster(t, time.Second, nil)
	c.registered()
	leader, rest := c.others()
	f := rest[0]

	// No forwarder: the follower names the leader.
	c.ctl(f).SetForwarder(nil)
	err := c.propose(f, Command{DeleteTopic: &DeleteTopic{Name: "x"}})
	var nl *NotLeaderError
	if !errors.As(err, &nl) || nl.LeaderID != leader || nl.LeaderAddr != c.info(leader).RaftAddr {
		t.Fatalf("propose without forwarder: %v", err)
	}
	c.ctl(f).SetForwarder(c.forward)

	// Through the forwarder to the leader's Propose, which names it by
	// its registered addresses; the leader's refusal comes back.
	cmd := Command{CreateTopic: &CreateTopic{Name: "x", ReplicationFactor: 1, Assignment: [][]int32{{f}}}}
	if err := c.propose(f, cmd); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	sent := slices.Clone(c.forwarded)
	c.mu.Unlock()
	want := c.info(leader)
	want.Incarnation = c.inc[leader] // as the controller registered it
	if len(sent) != 1 || sent[0] != want {
		t.Fatalf("forwarded to %+v, want %+v", sent, want)
	}
	if _, ok := c.leader().State().Topics["x"]; !ok {
		t.Fatal("forwarded create not applied")
	}
	if err := c.propose(f, cmd); !errors.Is(err, ErrTopicExists) {
		t.Fatalf("second create: %v", err)
	}
	if err := c.propose(f, Command{RetireNode: &RetireNode{ID: f}, DeleteTopic: &DeleteTopic{Name: "x"}}); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("two kinds: %v", err)
	}
	// A controller request does not go into the raft log.
	idx := c.leader().State().Index
	if err := c.leader().Apply(context.Background(), Command{RetireNode: &RetireNode{ID: f}}); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("retire_node through Node.Apply: %v", err)
	}
	if got := c.leader().State().Index; got != idx {
		t.Fatalf("retire_node reached the raft log: index %d -> %d", idx, got)
	}

	// Assignment on the leader, over the alive registered nodes.
	ctx := context.Background()
	if err := c.ctl(f).CreateTopic(ctx, "auto", "id-auto", 2, 3, map[string]string{"retention.ms": "5"}); err != nil {
		t.Fatal(err)
	}
	if err := c.ctl(f).AddPartitions(ctx, "auto", 5); err != nil {
		t.Fatal(err)
	}
	top := c.leader().State().Topics["auto"]
	if len(top.Partitions) != 5 || top.ID != "id-auto" || top.Config["retention.ms"] != "5" {
		t.Fatalf("auto %+v", top)
	}
	leads := map[int32]int{}
	for i, p := range top.Partitions {
		if len(p.Replicas) != 3 || len(slices.Compact(slices.Sorted(slices.Values(p.Replicas)))) != 3 {
			t.Fatalf("auto/%d replicas %v", i, p.Replicas)
		}
		leads[p.Leader]++
	}
	if len(leads) != 3 {
		t.Fatalf("preferred leaders of auto not spread: %v", leads)
	}
	for _, total := range []int32{5, 3} {
		if err := c.ctl(f).AddPartitions(ctx, "auto", total); !errors.Is(err, ErrInvalidCommand) {
			t.Fatalf("add to total %d: %v", total, err)
		}
	}
	if err := c.ctl(f).AddPartitions(ctx, "nope", 2); !errors.Is(err, ErrUnknownTopic) {
		t.Fatalf("add to unknown: %v", err)
	}
	if err := c.ctl(f).CreateTopic(ctx, "auto", "", 1, 1, nil); !errors.Is(err, ErrTopicExists) {
		t.Fatalf("create existing: %v", err)
	}
	if err := c.ctl(f).CreateTopic(ctx, "big", "", 1, 4, nil); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("rf 4 on 3 nodes: %v", err)
	}

	// A silent node gets no new replicas.
	dead := rest[1]
	c.beat(dead, false)
	testutil.Eventually(t, wait, func() bool { return c.metric(leader, "tierlog_cluster_nodes_alive", "") == 2 }, "node %d not dead", dead)
	if err := c.ctl(f).CreateTopic(ctx, "two", "", 1, 3, nil); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("rf 3 with 2 alive: %v", err)
	}
	if err := c.ctl(f).CreateTopic(ctx, "two", "", 4, 2, nil); err != nil {
		t.Fatal(err)
	}
	for i, p := range c.leader().State().Topics["two"].Partitions {
		if slices.Contains(p.Replicas, dead) {
			t.Fatalf("two/%d assigned to dead node %d: %v", i, dead, p.Replicas)
		}
	}
}

func TestControllerRetire(t *testing.T) {
	// A session long enough that only Retire can move leadership here.
	c := newCtlCluster(t, 30*time.Second, nil)
	c.registered()
	leader, rest := c.others()
	victim := rest[0]
	ctx := context.Background()
	if err := c.ctl(leader).CreateTopic(ctx, "t", "", 3, 3, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.propose(leader, Command{CreateTopic: &CreateTopic{Name: "solo", ReplicationFactor: 1, Assignment: [][]int32{{victim}}}}); err != nil {
		t.Fatal(err)
	}
	led := c.ledBy("t", victim)
	if len(led) != 1 {
		t.Fatalf("node %d leads %v of t", victim, led)
	}
	before := c.part("t", led[0])

	// The stopping node retires itself, through the forwarder.
	c.beat(victim, false)
	err := c.ctl(victim).Retire(ctx, victim)
	if !errors.Is(err, ErrNoEligibleLeader) || !strings.Contains(err.Error(), "solo/0") {
		t.Fatalf("retire: %v (solo/0 has no other replica)", err)
	}
	after := c.part("t", led[0]) // Retire returned after the leader applied
	if after.Leader == victim || after.Leader == NoLeader || after.LeaderEpoch != before.LeaderEpoch+1 || !slices.Contains(before.ISR, after.Leader) {
		t.Fatalf("after retire %+v, before %+v", after, before)
	}
	if got := c.metric(leader, "tierlog_cluster_leader_changes_total", "retire"); got != 1 {
		t.Fatalf("retire changes %v", got)
	}
	if _, ok := c.ctl(leader).Alive()[victim]; ok {
		t.Fatal("retired node still alive on the controller")
	}
	// Dead to the controller: the partition only it can lead goes offline.
	testutil.Eventually(t, wait, func() bool { return c.part("solo", 0).Leader == NoLeader }, "solo/0 still led by the retired node")

	// Heartbeats make it alive again, and it leads what it alone can.
	c.beat(victim, true)
	testutil.Eventually(t, wait, func() bool { return c.part("solo", 0).Leader == victim }, "solo/0 not back on node %d", victim)
	if _, ok := c.ctl(leader).Alive()[victim]; !ok {
		t.Fatal("heartbeating node not alive")
	}
	if got := c.part("t", led[0]); got.Leader != after.Leader {
		t.Fatalf("returning node took leadership back: %+v", got)
	}

	// The controller retires itself: its partitions move too.
	own := c.ledBy("t", leader)
	if len(own) == 0 {
		t.Fatalf("raft leader %d leads nothing of t", leader)
	}
	c.beat(leader, false)
	if err := c.ctl(leader).Retire(ctx, leader); err != nil {
		t.Fatal(err)
	}
	for _, i := range own {
		if p := c.part("t", i); p.Leader == leader || p.Leader == NoLeader {
			t.Fatalf("t/%d after the controller retired itself: %+v", i, p)
		}
	}
	if _, ok := c.ctl(leader).Alive()[leader]; ok {
		t.Fatal("retired controller still alive in its own view")
	}
}

// TestControllerRestartedNodeLeavesISRAndLeadershipFirst: a node whose
// heartbeats carry a new incarnation (a new process, perhaps on a wiped
// disk) loses its leaderships and ISR memberships before it counts as
// alive again, even though it was never silent for a session: otherwise a
// wiped replica still listed in sync could be elected with an empty log.
func TestControllerRestartedNodeLeavesISRAndLeadershipFirst(t *testing.T) {
	c := newCtlCluster(t, time.Minute, nil) // no session ever ends here
	c.registered()
	leader, rest := c.others()
	if err := c.ctl(leader).CreateTopic(context.Background(), "t", "", 3, 3, nil); err != nil {
		t.Fatal(err)
	}
	victim := rest[0]
	led := c.ledBy("t", victim)
	if len(led) != 1 {
		t.Fatalf("node %d leads %v of t", victim, led)
	}
	before := c.part("t", led[0])
	c.restart(victim)
	testutil.Eventually(t, wait, func() bool {
		for i := range int32(3) {
			p := c.part("t", i)
			if p.Leader == victim || slices.Contains(p.ISR, victim) {
				return false
			}
		}
		return true
	}, "restarted node %d still leads or is in sync", victim)
	after := c.part("t", led[0])
	if after.LeaderEpoch <= before.LeaderEpoch || after.Leader == NoLeader {
		t.Fatalf("partition led by the restarted node: %+v, was %+v", after, before)
	}
	testutil.Eventually(t, wait, func() bool { _, ok := c.ctl(c.leader().opts.ID).Alive()[victim]; return ok },
		"restarted node never counted as alive again")
}
