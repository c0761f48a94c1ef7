package kafka

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/broker/groups"
)

// groupsNode is a broker and its Kafka listener on a free loopback port,
// over a data directory that outlives it (restart reopens the same one).
type groupsNode struct {
	t    *testing.T
	dir  string
	b    *broker.Broker
	srv  *Server
	addr string
}

// groupTestTimeouts lets tests use short session timeouts.
var groupTestTimeouts = groups.Options{MinSessionTimeout: 100 * time.Millisecond}

func startGroupsNode(t *testing.T) *groupsNode {
	n := &groupsNode{t: t, dir: t.TempDir()}
	n.start()
	t.Cleanup(n.stop)
	return n
}

func (n *groupsNode) start() {
	n.t.Helper()
	b, err := broker.Open(context.Background(), broker.Options{Dir: n.dir, Groups: groupTestTimeouts})
	if err != nil {
		n.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Close()
		n.t.Fatal(err)
	}
	host, port := AdvertisedFor(ln.Addr())
	n.b = b
	n.srv = New(b, Options{AdvertisedHost: host, AdvertisedPort: port, AutoCreateTopics: true})
	n.addr = ln.Addr().String()
	go n.srv.Serve(ln)
}

func (n *groupsNode) stop() {
	if n.srv == nil {
		return
	}
	n.srv.Close()
	n.b.Close()
	n.srv, n.b = nil, nil
}

func (n *groupsNode) restart() {
	n.stop()
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

// groupRequest sends req (to the group's coordinator, found with
// FindCoordinator, for group requests) and fails the test on a transport
// error.
func groupRequest[R kmsg.Response](t *testing.T, cl *kgo.Client, req kmsg.Request) R {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := cl.Request(ctx, req)
	if err != nil {
		t.Fatalf("%s: %v", kmsg.NameForKey(req.Key()), err)
	}
	return resp.(R)
}

// rawRequest sends req at its own version on a new connection and reads
// the answer: for the versions kgo would not choose.
func rawRequest[R kmsg.Response](t *testing.T, addr string, req kmsg.Request) R {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	frame := kmsg.NewRequestFormatter(kmsg.FormatterClientID("raw")).AppendRequest(nil, req, 7)
	if _, err := nc.Write(frame); err != nil {
		t.Fatal(err)
	}
	var size [4]byte
	if _, err := io.ReadFull(nc, size[:]); err != nil {
		t.Fatalf("%s v%d: %v", kmsg.NameForKey(req.Key()), req.GetVersion(), err)
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(nc, body); err != nil {
		t.Fatal(err)
	}
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	body = body[4:] // correlation id
	if resp.IsFlexible() {
		body = body[1:] // no header tags
	}
	if err := resp.ReadFrom(body); err != nil {
		t.Fatal(err)
	}
	return resp.(R)
}
