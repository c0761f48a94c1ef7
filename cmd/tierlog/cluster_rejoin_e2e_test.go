package main

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
)

// TestClusterWaitingNodeStopsOnSIGTERM: a node of a new cluster whose
// peers are not up waits in its Raft join (it never bootstraps alone) and
// says so; SIGTERM then stops it at once, cleanly (exit 0).
func TestClusterWaitingNodeStopsOnSIGTERM(t *testing.T) {
	c := newTestCluster(t, 3, "--bucket", "none")
	c.launch(1) // never ready: nodes 2 and 3 stay down
	n := c.nodes[0]
	eventually(t, "node 1 says it waits for its peers", func() error {
		if !strings.Contains(n.stderr.String(), "waiting for a majority of the peers") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if code := n.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d after SIGTERM while waiting to join\n%s", code, n.stderr.String())
	}
	c.nodes[0] = nil
	if out := n.stderr.String(); !strings.Contains(out, "stopped before joining the cluster") || strings.Contains(out, `msg="bootstrapping`) {
		t.Fatalf("log of the waiting node:\n%s", out)
	}
}
