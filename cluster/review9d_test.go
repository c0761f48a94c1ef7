package cluster

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/testutil"
)

// fakeEmptyPeer answers admission probes on addr as an empty node of this
// Open (token tok) would: it stands for a node's first process life, the
// one a peer counted before the process was restarted.
func fakeEmptyPeer(t *testing.T, addr string, id int32, tok string) (stop func()) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(time.Second))
				r := bufio.NewReader(c)
				if b, err := r.ReadByte(); err != nil || b != probeByte {
					return
				}
				if _, err := r.ReadBytes('\n'); err != nil {
					return
				}
				b, _ := json.Marshal(probeAnswer{ID: id, Token: tok, LeaderID: -1})
				_, _ = c.Write(append(b, '\n'))
			}()
		}
	}()
	return func() { l.Close(); <-done }
}

func newEmptyCluster(t *testing.T, n int) *testCluster {
	c := &testCluster{t: t, dirs: map[int32]string{}, nodes: map[int32]*Node{}}
	base := t.TempDir()
	for id := int32(1); id <= int32(n); id++ {
		c.peers = append(c.peers, Peer{ID: id, RaftAddr: freeAddr(t)})
		c.dirs[id] = filepath.Join(base, "node"+strconv.Itoa(int(id)))
	}
	t.Cleanup(func() {
		for id := range c.nodes {
			c.stop(id)
		}
	})
	return c
}

// TestReview9d_RestartDuringFormationDocumentedRemedyNeverForms: a new
// cluster of 3. Node 1 counts node 2 (empty) and bootstraps; node 2's
// process is restarted before it looks again (new token), and node 3
// starts: both find node 1 with state and wait to be re-admitted, which no
// leader can ever do (admission.go says so). The remedy admission.go
// documents - "the operator clears that peer's Dir (it holds only the
// bootstrap configuration) and restarts it" - does not help: the cleared
// node 1 finds nodes 2 and 3 "readmitting", which counts as "the cluster
// exists", and waits to be re-admitted too. No node has Raft state, all
// three wait for a leader forever: a brand-new cluster that never forms.
func TestReview9d_RestartDuringFormationDocumentedRemedyNeverForms(t *testing.T) {
	c := newEmptyCluster(t, 3)
	stopFake := fakeEmptyPeer(t, c.peers[1].RaftAddr, 2, "first-life-of-node-2")
	c.start(1) // counts itself and node 2's first life: bootstraps
	stopFake()

	// Node 2 (restarted, new token) and node 3 start.
	readmitting := &countHandler{msg: "waiting to be re-admitted"}
	var opened []<-chan openResult
	for _, id := range []int32{2, 3} {
		o := c.options(id)
		o.Logger = slog.New(readmitting)
		opened = append(opened, c.startAsyncWith(o))
	}
	testutil.Eventually(t, wait, func() bool { return readmitting.n.Load() >= 2 }, "nodes 2 and 3 never waited for readmission")

	// The documented remedy: clear node 1's Dir, restart it.
	c.stop(1)
	if err := os.RemoveAll(c.dirs[1]); err != nil {
		t.Fatal(err)
	}
	n1 := &countHandler{msg: "waiting to be re-admitted"}
	o1 := c.options(1)
	o1.Logger = slog.New(n1)
	opened = append(opened, c.startAsyncWith(o1))

	deadline := time.Now().Add(15 * time.Second)
	got := map[int]*Node{}
	for time.Now().Before(deadline) {
		for i, ch := range opened {
			select {
			case r := <-ch:
				if r.err != nil {
					t.Fatalf("open: %v", r.err)
				}
				got[i] = r.n
				c.nodes[r.n.opts.ID] = r.n
			default:
			}
		}
		for _, n := range got {
			if n.IsLeader() {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("new cluster never formed 15 s after the documented remedy (node 1's Dir cleared, restarted): %d of 3 nodes returned from Open, the cleared node 1 waits to be re-admitted (%d lines) like nodes 2 and 3: no node has Raft state",
		len(got), n1.n.Load())
}
