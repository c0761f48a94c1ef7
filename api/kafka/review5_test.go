package kafka

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/internal/testutil"
)

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
