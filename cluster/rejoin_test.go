package cluster

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tierlog/tierlog/internal/testutil"
)

// TestWipedVoterWaitsForReadmission: an entry is committed on A and B
// while C is down; B's Raft dir is wiped and A goes down. C and the wiped
// B must not form a majority: B forgot the entry (and its votes), so a
// leader they elect would be C without it, and the committed metadata
// would be gone. B waits until the cluster re-admits it: once A is back,
// A and C elect a leader that has the entry, and B comes back as a voter
// with the state.
func TestWipedVoterWaitsForReadmission(t *testing.T) {
	c, wiped := lostVoterCase{lose: os.RemoveAll}.run(t)
	b := wiped.opts.ID
	f := c.leader().raft.GetConfiguration()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	voters := 0
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage == raft.Voter {
			voters++
		}
		if srv.ID == serverID(b) && (srv.Suffrage != raft.Voter || srv.Address != raft.ServerAddress(c.peers[b-1].RaftAddr)) {
			t.Fatalf("wiped node in the configuration as %+v", srv)
		}
	}
	if voters != 3 || wiped.Voters() != 3 {
		t.Fatalf("configuration %+v (%d voters), the wiped node sees %d", f.Configuration().Servers, voters, wiped.Voters())
	}
	// The re-admitted node took the group's id with the state (and keeps
	// it in its stable store, identity.go).
	if id := c.leader().raftID(); id == "" || wiped.raftID() != id {
		t.Fatalf("raft id: leader %q, re-admitted node %q", id, wiped.raftID())
	}
}

// lostVoterCase is a voter that loses its Raft state: an entry is
// committed on A (the leader) and B while C is down; B is stopped and
// loses its state (lose, given B's Dir) and A goes down. C and B must
// elect no leader while C campaigns five times: B forgot the entry and its
// votes. Then A comes back: A and C elect a leader with the entry, and B
// is re-admitted and gets it. run returns the cluster and B's node.
type lostVoterCase struct {
	before func(b *Node) error     // on B before the entry (nil: nothing)
	lose   func(bDir string) error // B's state lost
	bLog   slog.Handler            // B's log once it lost its state (nil: none)
}

func (lc lostVoterCase) run(t *testing.T) (*testCluster, *Node) {
	t.Helper()
	c := newCluster(t, 3, nil)
	c.registerAndCreate("t")
	c.converged()
	a, rest := c.roles()
	b, down := rest[0], rest[1]
	if lc.before != nil {
		if err := lc.before(c.nodes[b]); err != nil {
			t.Fatal(err)
		}
	}
	c.stop(down)
	// Committed on A and B only: the two voters up.
	c.mustApply(Command{AlterTopicConfig: &AlterTopicConfig{Name: "t", Set: map[string]string{"committed": "on-a-and-b"}}})
	has := func(n *Node) bool {
		tp, ok := n.State().Topics["t"]
		return ok && tp.Config["committed"] == "on-a-and-b"
	}
	testutil.Eventually(t, wait, func() bool { return has(c.nodes[b]) }, "node %d never applied the entry", b)
	c.stop(b)
	if err := lc.lose(c.dirs[b]); err != nil {
		t.Fatal(err)
	}
	c.stop(a)

	// C's own log counts its elections (hashicorp pre-votes: a lost one
	// leaves the term as it was); each is one B could vote in.
	elections := &countHandler{msg: "entering candidate state"}
	o := c.options(down)
	o.Logger = slog.New(elections)
	cn, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	c.nodes[down] = cn
	ob := c.options(b)
	if lc.bLog != nil {
		ob.Logger = slog.New(lc.bLog)
	}
	lost := c.startAsyncWith(ob)
	var leader *Node
	testutil.Eventually(t, 30*time.Second, func() bool {
		for _, n := range []*Node{cn, lost.node()} {
			if n != nil && n.IsLeader() {
				leader = n
			}
		}
		return leader != nil || elections.n.Load() >= 5
	}, "node %d campaigned %v times, no leader", down, elections)
	if leader != nil {
		if !has(leader) {
			t.Fatalf("node %d was elected by %d and node %d, which lost its Raft state, while %d was down, and the entry committed on %d and %d is gone: state %+v",
				leader.opts.ID, down, b, a, a, b, leader.State())
		}
		t.Fatalf("node %d was elected while only %d and node %d, which lost its Raft state, were up", leader.opts.ID, down, b)
	}

	// A is back: A and C elect a leader that has the entry, and B is
	// re-admitted as a voter and gets the state.
	c.start(a)
	testutil.Eventually(t, wait, func() bool { return lost.node() != nil }, "node %d never re-admitted", b)
	c.converged()
	for id, n := range c.nodes {
		if !has(n) {
			t.Fatalf("node %d lacks the committed entry: %v", id, n.State().Topics["t"].Config)
		}
	}
	return c, lost.node()
}

// countHandler counts the log records whose message contains msg.
type countHandler struct {
	msg string
	n   atomic.Int64
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.msg) {
		h.n.Add(1)
	}
	return nil
}
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countHandler) WithGroup(string) slog.Handler      { return h }

// String is the count, read when a failure message is formatted.
func (h *countHandler) String() string { return strconv.FormatInt(h.n.Load(), 10) }

// TestNewClusterNodesStartedApart: the nodes of a new cluster start one
// after another. The first waits (alone it is no majority); the second
// makes a majority of empty nodes and they bootstrap; the third, started
// once the cluster runs, is taken in as a voter (it finds the cluster
// and asks to be admitted).
func TestNewClusterNodesStartedApart(t *testing.T) {
	c := newEmptyCluster(t, 3, nil)
	waits := &countHandler{msg: "waiting for a majority of the peers"}
	o := c.options(1)
	o.Logger = slog.New(waits)
	first := c.startAsyncWith(o)
	testutil.Eventually(t, wait, func() bool { return waits.n.Load() > 0 }, "node 1 never said it waits for its peers")
	if first.node() != nil {
		t.Fatal("node 1 alone of 3 opened: it bootstrapped without a majority")
	}
	c.start(2)
	if first.within(time.Minute) == nil {
		t.Fatal("node 1 still waits with node 2 up")
	}
	c.registerAndCreate("t")
	c.start(3)
	s := c.converged()
	if len(s.Topics["t"].Partitions) != 3 {
		t.Fatalf("state %+v", s)
	}
	for id, n := range c.nodes {
		if v := n.Voters(); v != 3 {
			t.Fatalf("node %d sees %d voters", id, v)
		}
	}
}

// TestOpenWaitingStopsWithContext: an empty node whose peers never answer
// waits, and returns ctx's error once ctx ends, releasing its Raft port.
func TestOpenWaitingStopsWithContext(t *testing.T) {
	peers := []Peer{{ID: 1, RaftAddr: testutil.FreeAddr(t)}, {ID: 2, RaftAddr: testutil.FreeAddr(t)}, {ID: 3, RaftAddr: testutil.FreeAddr(t)}}
	waits := &countHandler{msg: "waiting for a majority of the peers"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		n, err := Open(ctx, Options{ID: 1, Dir: t.TempDir(), RaftAddr: peers[0].RaftAddr, Peers: peers, Logger: slog.New(waits)})
		if err == nil {
			n.Close()
		}
		done <- err
	}()
	testutil.Eventually(t, wait, func() bool { return waits.n.Load() > 0 }, "node never said it waits for its peers")
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("open after cancel: %v", err)
	}
	l, err := net.Listen("tcp", peers[0].RaftAddr)
	if err != nil {
		t.Fatalf("raft port still held after the canceled open: %v", err)
	}
	l.Close()
}

// TestProbeBadInput: the probe answers a state question on the Raft port,
// and closes a connection whose request is too long or not JSON without
// an answer; raft keeps working.
func TestProbeBadInput(t *testing.T) {
	c := newCluster(t, 3, nil)
	l := c.leader()
	addr := l.opts.RaftAddr
	a, err := ask(context.Background(), addr, probeRequest{Op: "state", ID: 99}, probeTimeout)
	if err != nil || !a.State || a.ID != l.opts.ID || a.LeaderID != l.opts.ID || a.LeaderAddr != addr {
		t.Fatalf("state answer %+v, %v", a, err)
	}
	a, err = ask(context.Background(), addr, probeRequest{Op: "readmit", ID: 99, Addr: "127.0.0.1:1"}, probeTimeout)
	if err != nil || a.Admitted || !strings.Contains(a.Error, "not a member") {
		t.Fatalf("readmit of a stranger: %+v, %v", a, err)
	}
	for name, req := range map[string][]byte{
		"too long": append([]byte{probeByte}, make([]byte, probeLineMax+10)...),
		"not json": []byte("T{nope\n"),
	} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(wait))
		if _, err := conn.Write(req); err != nil {
			t.Fatalf("%s: write: %v", name, err)
		}
		if b, err := io.ReadAll(conn); len(b) != 0 {
			t.Fatalf("%s: answered %q (%v)", name, b, err)
		}
		conn.Close()
	}
	c.registerAndCreate("t")
	c.converged()
}

// TestReadmitRefusesVoterThatDoesNotAnswer: a readmit request for a
// configured voter that is down (its address does not answer the leader's
// own probe) is refused; the configuration keeps the voter as it was.
func TestReadmitRefusesVoterThatDoesNotAnswer(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader, rest := c.roles()
	l, down := c.nodes[leader], rest[0]
	c.stop(down)
	a, err := ask(context.Background(), l.opts.RaftAddr, probeRequest{Op: "readmit", ID: down, Addr: c.peers[down-1].RaftAddr}, readmitTimeout)
	if err != nil || a.Admitted || !strings.Contains(a.Error, "does not answer") {
		t.Fatalf("readmit of a voter that is down: %+v, %v", a, err)
	}
	if v := l.Voters(); v != 3 {
		t.Fatalf("%d voters after the refused readmission", v)
	}
	c.start(down)
	c.registerAndCreate("t")
	c.converged()
}
