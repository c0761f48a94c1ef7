package kafka

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/internal/fetchbudget"
	"github.com/tierlog/tierlog/internal/testutil"
)

// pipeConn is a Kafka connection driven by hand (rawConn checks each answer as it comes; pipeConn queues requests): requests are written
// (pipelined) and responses read only when the test says.
type pipeConn struct {
	t    *testing.T
	nc   net.Conn
	r    *bufio.Reader
	f    *kmsg.RequestFormatter
	corr int32
	reqs []kmsg.Request
}

func dialPipe(t *testing.T, addr string) *pipeConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &pipeConn{t: t, nc: nc, r: bufio.NewReader(nc), f: kmsg.NewRequestFormatter(kmsg.FormatterClientID("raw"))}
}

func (c *pipeConn) send(req kmsg.Request) {
	c.t.Helper()
	if _, err := c.nc.Write(c.f.AppendRequest(nil, req, c.corr)); err != nil {
		c.t.Fatal(err)
	}
	c.corr++
	c.reqs = append(c.reqs, req)
}

// recv reads the next response, in request order.
func (c *pipeConn) recv() kmsg.Response {
	c.t.Helper()
	req := c.reqs[0]
	c.reqs = c.reqs[1:]
	_ = c.nc.SetReadDeadline(time.Now().Add(time.Minute))
	var size [4]byte
	if _, err := io.ReadFull(c.r, size[:]); err != nil {
		c.t.Fatal(err)
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(c.r, body); err != nil {
		c.t.Fatal(err)
	}
	body = body[4:] // correlation id
	if req.IsFlexible() && req.Key() != kmsg.ApiVersions.Int16() {
		body = body[1:] // no tagged fields
	}
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	if err := resp.ReadFrom(body); err != nil {
		c.t.Fatal(err)
	}
	return resp
}

// Kafka fetches draw from the server-wide fetch budget (the one gRPC uses)
// and hold it until their response is written: responses queued behind a
// long poll on the same connection hold it all, a fetch that then finds
// none free is answered without records (and no error) instead of the
// server buffering more, and the budget comes back once they are sent.
// The response of each is within half a share (MaxBytes lowered to fit).
func TestFetchHoldsSharedBudgetUntilWritten(t *testing.T) {
	const size = 16 << 20 // a share is 2 MiB: a fetch holds 2 x 1 MiB
	budget := fetchbudget.New(size, 300*time.Millisecond, nil)
	e := startFetchEnv(t, nil, budget)
	if _, err := e.b.CreateTopic("b", 2, nil); err != nil {
		t.Fatal(err)
	}
	e.appendBatches(t, "b", 0, 12, 1, 200<<10, 1000) // 2.4 MB in partition 0

	rc := dialPipe(t, e.addr)
	poll := fetchReq("b", 50<<20, 50<<20, nil, 1) // partition 1 is empty: waits
	poll.Version, poll.MaxWaitMillis = 12, 300_000
	rc.send(poll)
	const queued = fetchbudget.ShareDivisor
	for range queued {
		f := fetchReq("b", 50<<20, 50<<20, nil, 0)
		f.Version = 12
		rc.send(f)
	}
	testutil.Eventually(t, 30*time.Second, func() bool { return budget.Used() == size },
		"%d fetches queued behind a long poll do not hold the %d-byte budget (held: %d)", queued, size, budget.Used())

	c := e.client(t)
	starved := fetchReq("b", 50<<20, 50<<20, nil, 0)
	resp := request[*kmsg.FetchResponse](t, c, starved)
	if rp := resp.Topics[0].Partitions[0]; rp.ErrorCode != 0 || len(rp.RecordBatches) != 0 {
		t.Fatalf("fetch with the budget held by queued responses: error %d, %d bytes; want no records and no error", rp.ErrorCode, len(rp.RecordBatches))
	}

	// Woken, the long poll finds the budget held by the responses queued
	// behind it: it is answered at once without records, not put back to
	// sleep (which would hold them, and the budget, for its MaxWait).
	e.appendBatches(t, "b", 1, 1, 1, 10, 1000)
	if rp := rc.recv().(*kmsg.FetchResponse).Topics[0].Partitions[0]; rp.ErrorCode != 0 || rp.HighWatermark != 1 {
		t.Fatalf("the long poll: error %d, high watermark %d", rp.ErrorCode, rp.HighWatermark)
	}
	for i := range queued {
		rp := rc.recv().(*kmsg.FetchResponse).Topics[0].Partitions[0]
		if n := len(rp.RecordBatches); n == 0 || int64(n) > budget.Share()/2 {
			t.Fatalf("queued fetch %d: %d bytes; want records within half a share (%d)", i, n, budget.Share()/2)
		}
	}
	testutil.Eventually(t, 30*time.Second, func() bool { return budget.Used() == 0 },
		"budget still held after every response was written: %d", budget.Used())
}
