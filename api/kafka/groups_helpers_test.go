package kafka

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/broker/groups"
)

// groupsNode is a testNode whose data directory outlives it: restart
// closes the node and opens it again on the same directory.
type groupsNode struct {
	*testNode
	t   *testing.T
	dir string
}

// groupTestTimeouts lets tests use short session timeouts.
// Expired offsets are looked for often, so retention tests are quick.
var groupTestTimeouts = groups.Options{MinSessionTimeout: 100 * time.Millisecond, RetentionCheckInterval: 50 * time.Millisecond}

func startGroupsNode(t *testing.T) *groupsNode {
	n := &groupsNode{t: t, dir: t.TempDir()}
	n.start()
	return n
}

func (n *groupsNode) start() {
	n.t.Helper()
	n.testNode = startNodeWith(n.t, broker.Options{Dir: n.dir, Groups: groupTestTimeouts}, Options{AutoCreateTopics: true})
}

// restart closes the node (its cleanup closing it again is harmless) and
// opens a new one on the same directory.
func (n *groupsNode) restart() {
	n.t.Helper()
	n.s.Close()
	n.b.Close()
	n.start()
}

// client is a kgo client of the node, closed with the test.
func (n *groupsNode) client(opts ...kgo.Opt) *kgo.Client {
	n.t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(n.addr)}, opts...)...)
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(cl.Close)
	return cl
}

func (n *groupsNode) createTopic(name string, partitions int32) {
	n.t.Helper()
	if _, err := n.b.CreateTopic(name, partitions, nil); err != nil {
		n.t.Fatal(err)
	}
}

// rawRequest sends req at its own version on a new connection and reads
// the answer: for the versions kgo would not choose.
func rawRequest[R kmsg.Response](t *testing.T, addr string, req kmsg.Request) R {
	t.Helper()
	r := dialRaw(t, addr)
	return r.recv(req, r.send(req)).(R)
}
