package cluster

import (
	"context"
	"log/slog"
	"os"
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
	c := newCluster(t, 3, nil)
	c.registerAndCreate("t")
	c.converged()
	a := c.leader().opts.ID
	var b, down int32 = -1, -1
	for _, p := range c.peers {
		switch {
		case p.ID == a:
		case b < 0:
			b = p.ID
		default:
			down = p.ID
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
	if err := os.RemoveAll(c.dirs[b]); err != nil {
		t.Fatal(err)
	}
	c.stop(a)

	// C's own log counts its elections (hashicorp pre-votes: a lost one
	// leaves the term as it was).
	elections := &countHandler{msg: "entering candidate state"}
	o := c.options(down)
	o.Logger = slog.New(elections)
	cn, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	c.nodes[down] = cn
	opened := c.startAsync(b)
	var wiped *Node
	// collect takes B's node once its Open returned.
	collect := func() {
		if wiped != nil {
			return
		}
		select {
		case r := <-opened:
			if r.err != nil {
				t.Fatalf("open wiped node %d: %v", b, r.err)
			}
			wiped = r.n
			c.nodes[b] = wiped
		default:
		}
	}

	// C campaigns again and again; each of its elections is one B could
	// vote in. Five of them, and no leader.
	var leader *Node
	testutil.Eventually(t, 30*time.Second, func() bool {
		collect()
		for _, n := range []*Node{cn, wiped} {
			if n != nil && n.IsLeader() {
				leader = n
			}
		}
		return leader != nil || elections.n.Load() >= 5
	}, "node %d campaigned %d times", down, elections.n.Load())
	if leader != nil {
		if !has(leader) {
			t.Fatalf("node %d was elected by %d and the wiped node %d while %d was down, and the entry committed on %d and %d is gone: state %+v",
				leader.opts.ID, down, b, a, a, b, leader.State())
		}
		t.Fatalf("node %d was elected while only %d and the wiped node %d were up", leader.opts.ID, down, b)
	}

	// A is back: A and C elect a leader that has the entry, and B is
	// re-admitted as a voter and gets the state.
	c.start(a)
	testutil.Eventually(t, wait, func() bool { collect(); return wiped != nil }, "wiped node %d never re-admitted", b)
	s := c.converged()
	if !has(c.leader()) {
		t.Fatalf("committed entry lost: state %+v", s)
	}
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
}

type openResult struct {
	n   *Node
	err error
}

// startAsync opens node id on its own goroutine: a node that waits to be
// admitted returns from Open only then. The test's cleanup stops the wait
// and closes the node.
func (c *testCluster) startAsync(id int32) <-chan openResult {
	ch := make(chan openResult, 1)
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(done)
		n, err := Open(ctx, c.options(id))
		ch <- openResult{n, err}
	}()
	c.t.Cleanup(func() {
		cancel()
		<-done
		select {
		case r := <-ch:
			if r.err == nil {
				r.n.Close()
			}
		default:
		}
	})
	return ch
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
