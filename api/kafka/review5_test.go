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
// any more, yet the later closure keeps it alive until the fsync returns
// (finish captures req for req.Version, and protect's goroutine captures req
// for its panic message). Every connection may have pipelineDepth requests
// read and unanswered, so while fsyncs are slow (a busy disk) the server
// holds clients x 32 x request size (with the 100 MiB max request, 3.2 GiB
// per connection) that it has already written. Kafka reads one request per
// connection at a time (the channel is muted until the answer is sent).
//
// Here the topic's fsyncs are held: 4 connections each pipeline 32 produce
// requests of 2 MiB; once every batch is written the heap must not keep
// more than two requests per connection (plus slack).
func TestReview_PipelinedProducesRetainRequestsUntilFsync(t *testing.T) {
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
	for _, rc := range conns {
		go func() {
			for range perConn {
				if _, err := rc.c.Write(frame); err != nil {
					return
				}
			}
		}()
	}
	want := float64(clients * perConn * len(b))
	testutil.Eventually(t, time.Minute, func() bool {
		return counterSum(t, n.reg, "tierlog_hot_bytes_in_total") >= want
	}, "every pipelined batch written")
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

// A request that closes the connection (a malformed or unknown one, or a
// failed Produce with acks=0: reply.closeConn) must come after the answers
// to the requests ahead of it, as conn.go promises ("closes the connection
// once the answers ahead are sent") and as Kafka does: Kafka mutes a
// connection while a request is in flight, so a long-poll Fetch ahead is
// answered (at MaxWait) before the bad request is even read. tierlog reads
// on, and once readLoop returns serve cancels the connection's context:
// the Fetch ahead, still waiting (or merely not finished), returns nil and
// its answer is never written.
func TestReview_AnswersAheadOfClosingRequestAreSent(t *testing.T) {
	n := startNode(t, "", Options{})
	if _, err := n.b.CreateTopic("lp", 1, nil); err != nil {
		t.Fatal(err)
	}
	longPoll := func() *kmsg.FetchRequest {
		req := kmsg.NewPtrFetchRequest()
		req.SetVersion(11)
		req.ReplicaID, req.MaxWaitMillis, req.MinBytes, req.MaxBytes = -1, 1500, 1, 1<<20
		req.SessionEpoch = -1
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = "lp"
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes, rp.LogStartOffset = 0, 0, 1<<20, -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		return req
	}
	cases := []struct {
		name    string
		closing func(r *rawConn) []byte
	}{
		{"unknown api key", func(*rawConn) []byte { return sized(append(rawHeader(999, 0, 99, "x"), 0)) }},
		{"failed produce acks=0", func(r *rawConn) []byte {
			b, _ := r.frame(produceReq(9, 0, "lp", map[int32][]byte{7: testutil.Batch(t, 0, 1, 10, 1)}))
			return b
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := dialRaw(t, n.addr)
			req := longPoll()
			b1, corr := r.frame(req)
			r.write(append(b1, c.closing(r)...))
			got, _, err := r.readFrame()
			if err != nil {
				t.Fatalf("the long-poll Fetch ahead of the closing request was never answered: %v", err)
			}
			if got != corr {
				t.Fatalf("correlation id %d, want the Fetch's %d", got, corr)
			}
			r.expectClosed()
		})
	}
}

// FrameTimeout bounds a whole request's arrival, not the client's
// progress: a big Produce from a client whose link is steady but not fast
// enough to deliver the whole request within FrameTimeout (30 s by
// default: a 100 MiB request, the default kafka_max_request_bytes, needs
// 3.4 MB/s) has its connection closed every time, and the client retries
// the same request for ever. Kafka has no such deadline (only
// connections.max.idle.ms, which any bytes arriving reset). A trickling
// client (TestIdleAndTricklingClientsAreClosed, a byte every 150 ms) can
// be closed by a progress rule instead (each readChunk, or a minimum
// rate, within FrameTimeout).
//
// Here FrameTimeout is 1 s and a 2 MiB Produce arrives steadily at about
// 1.6 MB/s (64 KiB every 40 ms), taking longer than 1 s in all.
func TestReview_SteadyLargeRequestOutlivesFrameTimeout(t *testing.T) {
	n := startNode(t, "", Options{FrameTimeout: time.Second})
	if _, err := n.b.CreateTopic("slowlink", 1, map[string]string{"max.message.bytes": "4194304"}); err != nil {
		t.Fatal(err)
	}
	r := dialRaw(t, n.addr)
	req := produceReq(9, -1, "slowlink", map[int32][]byte{0: testutil.Batch(t, 0, 8, 256<<10, time.Now().UnixMilli())})
	frame, corr := r.frame(req)
	start := time.Now()
	for off := 0; off < len(frame); off += 64 << 10 {
		end := min(off+64<<10, len(frame))
		_ = r.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := r.c.Write(frame[off:end]); err != nil {
			t.Fatalf("connection closed after %v, %d of %d bytes sent at a steady 1.6 MB/s: %v", time.Since(start), off, len(frame), err)
		}
		time.Sleep(40 * time.Millisecond) // a slow link, not a timing assertion
	}
	got, _, err := r.readFrame()
	if err != nil {
		t.Fatalf("a %d-byte Produce sent steadily over %v (FrameTimeout 1 s) got no answer: %v", len(frame), time.Since(start), err)
	}
	if got != corr {
		t.Fatalf("correlation id %d, want %d", got, corr)
	}
}
