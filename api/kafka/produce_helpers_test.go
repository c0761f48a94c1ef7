package kafka

import (
	"context"
	"maps"
	"net"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil/cutproxy"
)

// kafkaNode is a real broker on a data directory with the Kafka listener
// in front of it on a free loopback port.
type kafkaNode struct {
	t     *testing.T
	dir   string
	opts  nodeOptions
	b     *broker.Broker
	s     *Server
	reg   *prometheus.Registry
	addr  string // what clients dial: the listener, or the proxy in front
	proxy *cutproxy.Proxy
	done  chan error
}

type nodeOptions struct {
	// broker adjusts the broker's options (OpenFile hooks).
	broker func(*broker.Options)
	// proxy, if set, puts a connection-cutting proxy in front of the
	// listener, and Metadata advertises the proxy.
	proxy *cutproxy.Options
}

func startKafkaNode(t *testing.T, dir string, o nodeOptions) *kafkaNode {
	t.Helper()
	n := &kafkaNode{t: t, dir: dir, opts: o}
	n.start()
	t.Cleanup(n.stop)
	return n
}

func (n *kafkaNode) start() {
	t := n.t
	t.Helper()
	bo := broker.Options{Dir: n.dir}
	n.reg = prometheus.NewRegistry()
	bo.Registerer = n.reg
	if n.opts.broker != nil {
		n.opts.broker(&bo)
	}
	b, err := broker.Open(context.Background(), bo)
	if err != nil {
		t.Fatal(err)
	}
	lns, err := Listen("127.0.0.1:0")
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	n.addr = lns[0].Addr().String()
	if n.opts.proxy != nil {
		if n.proxy == nil {
			n.proxy = cutproxy.Start(t, n.addr, *n.opts.proxy)
		}
		n.addr = n.proxy.Addr()
	}
	host, port, _ := net.SplitHostPort(n.addr)
	p, _ := net.LookupPort("tcp", port)
	n.b = b
	n.s = New(b, Options{AdvertisedHost: host, AdvertisedPort: int32(p)})
	n.done = make(chan error, 1)
	go func() { n.done <- n.s.Serve(lns...) }()
}

// stop closes the server and the broker, as a clean shutdown does.
func (n *kafkaNode) stop() {
	if n.s == nil {
		return
	}
	n.s.Close()
	if err := <-n.done; err != nil {
		n.t.Errorf("serve: %v", err)
	}
	if err := n.b.Close(); err != nil {
		n.t.Errorf("close broker: %v", err)
	}
	n.s = nil
}

// restart stops the node and opens it again on the same data directory.
// A proxy in front keeps its address but not its connections.
func (n *kafkaNode) restart() {
	n.t.Helper()
	n.stop()
	if n.proxy != nil {
		n.t.Fatal("restart with a proxy: the proxy targets the old listener")
	}
	n.start()
}

func (n *kafkaNode) createTopic(name string, partitions int32, config map[string]string) {
	n.t.Helper()
	if _, err := n.b.CreateTopic(name, partitions, config); err != nil {
		n.t.Fatal(err)
	}
}

// records reads every record of a partition through the broker.
func (n *kafkaNode) records(topic string, partition int32) []batch.Record {
	n.t.Helper()
	var out []batch.Record
	for off := int64(0); ; {
		_, end, err := n.b.Offsets(topic, partition)
		if err != nil {
			n.t.Fatal(err)
		}
		if off >= end {
			return out
		}
		res, err := n.b.Fetch(context.Background(), topic, partition, off, 1<<20)
		if err != nil {
			n.t.Fatalf("fetch %s/%d at %d: %v", topic, partition, off, err)
		}
		recs, err := batch.DecodeAll(res.Records)
		if err != nil {
			n.t.Fatal(err)
		}
		for _, r := range recs {
			if r.Offset >= off {
				out = append(out, r)
			}
		}
		off = recs[len(recs)-1].Offset + 1
	}
}

func (n *kafkaNode) endOffset(topic string, partition int32) int64 {
	n.t.Helper()
	_, end, err := n.b.Offsets(topic, partition)
	if err != nil {
		n.t.Fatal(err)
	}
	return end
}

// produceReq is a Produce request of one batch per partition given.
func produceReq(version int16, acks int16, topic string, batches map[int32][]byte) *kmsg.ProduceRequest {
	req := kmsg.NewPtrProduceRequest()
	req.Version, req.Acks, req.TimeoutMillis = version, acks, 10000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	for _, p := range slices.Sorted(maps.Keys(batches)) {
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition, rp.Records = p, batches[p]
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	return req
}

// produceOne sends one batch to partition 0 and returns its answer.
func (rc *rawConn) produceOne(version, acks int16, topic string, b []byte) kmsg.ProduceResponseTopicPartition {
	rc.t.Helper()
	resp := rc.roundTrip(produceReq(version, acks, topic, map[int32][]byte{0: b})).(*kmsg.ProduceResponse)
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		rc.t.Fatalf("produce response has %d topics, want one with one partition", len(resp.Topics))
	}
	return resp.Topics[0].Partitions[0]
}

func (rc *rawConn) initProducerID(version int16, txnID *string, id int64, epoch int16) *kmsg.InitProducerIDResponse {
	rc.t.Helper()
	req := kmsg.NewPtrInitProducerIDRequest()
	req.Version, req.TransactionalID, req.ProducerID, req.ProducerEpoch = version, txnID, id, epoch
	return rc.roundTrip(req).(*kmsg.InitProducerIDResponse)
}
