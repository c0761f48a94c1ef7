package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
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
		c.raft = append(c.raft, fixedFreeAddr(t))
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
