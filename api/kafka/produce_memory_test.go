package kafka

import (
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/internal/testutil"
)

// counterSum is the sum of a counter family on reg (every label set).
func counterSum(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func heapAfterGC() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// A Produce (acks=all, flush.policy=always) has written its batch before
// its handler returns; only the wait for the fsync runs later. The request
// (its records, a slice of the frame read from the socket) is not needed
// any more, so nothing that waits may keep it alive (a closure that
// captured req for req.Version, or for a panic message, once did). Every
// connection may have pipelineDepth requests read and unanswered: while
// fsyncs are slow (a busy disk) the server would hold clients x 32 x
// request size (with the 100 MiB max request, 3.2 GiB per connection) it
// has already written. Kafka reads one request per
// connection at a time (the channel is muted until the answer is sent).
//
// Here the topic's fsyncs are held: 4 connections each pipeline 32 produce
// requests of 2 MiB; once every batch is written the heap must not keep
// more than two requests per connection (plus slack).
func TestPipelinedProducesReleaseRequestsBeforeFsync(t *testing.T) {
	const (
		clients  = 4
		perConn  = pipelineDepth
		recSize  = 256 << 10
		recs     = 8 // 2 MiB batch
		maxBytes = 4 << 20
	)
	g := &partGateFS{hold: "/topics/mem/0/", watch: "/no-such-path/", held: make(chan struct{}), gate: make(chan struct{})}
	n := startKafkaNode(t, t.TempDir(), nodeOptions{broker: func(o *broker.Options) { o.OpenFile = g.open }})
	n.createTopic("mem", 1, map[string]string{"flush.policy": "always", "max.message.bytes": "4194304"})
	released := false
	release := func() {
		if !released {
			released = true
			close(g.gate)
		}
	}
	defer release()

	b := testutil.Batch(t, 0, recs, recSize, time.Now().UnixMilli())
	if len(b) > maxBytes {
		t.Fatalf("batch %d bytes", len(b))
	}
	frame := (&kmsg.RequestFormatter{}).AppendRequest(nil, produceReq(9, -1, "mem", map[int32][]byte{0: b}), 1)
	conns := make([]*rawConn, clients)
	for i := range conns {
		conns[i] = dialRaw(t, n.addr)
		conns[i].checkAlive()
	}
	g.armed.Store(true)
	base := heapAfterGC()
	writeErrs := make(chan error, clients)
	for _, rc := range conns {
		// No deadline: checkAlive's write left one 10 s ahead, and 64 MiB
		// per connection through the race detector on two loaded cores
		// can take longer (a write cut there stalled the test for good).
		_ = rc.c.SetWriteDeadline(time.Time{})
		go func() {
			for range perConn {
				if _, err := rc.c.Write(frame); err != nil {
					writeErrs <- err
					return
				}
			}
		}()
	}
	want := float64(clients * perConn * len(b))
	// 256 MiB through the race detector: ~5-15 s, alone or on two loaded
	// cores; the wait is generous, a failed write ends it at once.
	var writeErr error
	testutil.Eventually(t, 5*time.Minute, func() bool {
		select {
		case writeErr = <-writeErrs:
			return true
		default:
		}
		return counterSum(t, n.reg, "tierlog_hot_bytes_in_total") >= want
	}, "every pipelined batch written")
	if writeErr != nil {
		t.Fatalf("pipelining produce requests: %v", writeErr)
	}
	retained := int64(heapAfterGC()) - int64(base)
	limit := int64(clients*2*len(b)) + 32<<20
	t.Logf("heap retained with %d connections x %d pipelined %d-byte produces written, fsync pending: %d MiB (limit %d MiB)",
		clients, perConn, len(b), retained>>20, limit>>20)
	release()
	for _, rc := range conns {
		for range perConn {
			_, body, err := rc.readFrame()
			if err != nil {
				t.Fatalf("read produce answer: %v", err)
			}
			resp := kmsg.NewPtrProduceResponse()
			resp.SetVersion(9)
			if err := resp.ReadFrom(body[1:]); err != nil {
				t.Fatal(err)
			}
			if c := resp.Topics[0].Partitions[0].ErrorCode; c != 0 {
				t.Fatalf("produce error %d", c)
			}
		}
	}
	if retained > limit {
		t.Fatalf("the server kept %d MiB of already-written produce requests alive while their fsync was pending (limit %d MiB): "+
			"pipelined requests' bodies are retained by reply.later until the wait ends", retained>>20, limit>>20)
	}
}
