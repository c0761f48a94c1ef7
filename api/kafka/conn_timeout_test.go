package kafka

import (
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/testutil"
)

// FrameTimeout bounds the client's progress, not a whole request's
// arrival: a big Produce from a client whose link is steady but not fast
// enough to deliver the whole request within FrameTimeout (30 s by
// default: a 100 MiB request, the default kafka_max_request_bytes, would
// need 3.4 MB/s) would have its connection closed every time, and the
// client would retry the same request for ever. Kafka has no such deadline
// (only connections.max.idle.ms, which any bytes arriving reset). Each
// readChunk must arrive within FrameTimeout instead, which still closes a
// trickling client (TestIdleAndTricklingClientsAreClosed, a byte every
// 150 ms).
//
// Here FrameTimeout is 1 s and a 2 MiB Produce arrives steadily at about
// 1.6 MB/s (64 KiB every 40 ms), taking longer than 1 s in all.
func TestSteadyLargeRequestOutlivesFrameTimeout(t *testing.T) {
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
