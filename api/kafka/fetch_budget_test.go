package kafka

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
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
// and hold it until their response is written: responses queued behind
// long polls hold it, a fetch that then finds none free is answered without
// records (and no error) instead of the server buffering more, and the
// budget comes back once they are sent. The response of each is within
// half a share (MaxBytes lowered to fit). One connection holds at most a
// share (TestFetchConnectionHoldsOneShare), so here eight connections each
// queue a fetch behind a long poll.
func TestFetchHoldsSharedBudgetUntilWritten(t *testing.T) {
	const size = 16 << 20 // a share is 2 MiB: a fetch holds 2 x 1 MiB
	budget := fetchbudget.New(size, 300*time.Millisecond, nil)
	e := startFetchEnv(t, nil, budget)
	if _, err := e.b.CreateTopic("b", 2, nil); err != nil {
		t.Fatal(err)
	}
	e.appendBatches(t, "b", 0, 12, 1, 200<<10, 1000) // 2.4 MB in partition 0

	const conns = fetchbudget.ShareDivisor
	var rcs []*pipeConn
	for range conns {
		rc := dialPipe(t, e.addr)
		poll := fetchReq("b", 50<<20, 50<<20, nil, 1) // partition 1 is empty: waits
		poll.Version, poll.MaxWaitMillis = 12, 300_000
		rc.send(poll)
		f := fetchReq("b", 50<<20, 50<<20, nil, 0)
		f.Version = 12
		rc.send(f)
		rcs = append(rcs, rc)
	}
	// Another fetch takes a share while it reads: none is left.
	testutil.Eventually(t, 30*time.Second, func() bool { return budget.Used() > size-budget.Share() },
		"%d fetches queued behind long polls do not hold the %d-byte budget (held: %d)", conns, size, budget.Used())

	c := e.client(t)
	starved := fetchReq("b", 50<<20, 50<<20, nil, 0)
	resp := request[*kmsg.FetchResponse](t, c, starved)
	if rp := resp.Topics[0].Partitions[0]; rp.ErrorCode != 0 || len(rp.RecordBatches) != 0 {
		t.Fatalf("fetch with the budget held by queued responses: error %d, %d bytes; want no records and no error", rp.ErrorCode, len(rp.RecordBatches))
	}
	if n := promtest.ToFloat64(e.srv.m.fetchStarved.WithLabelValues("server")); n == 0 {
		t.Fatal("the fetch answered without records is not counted in tierlog_kafka_fetch_starved_total")
	}

	// Woken, each long poll is answered at once (with the new record, or
	// without records if the budget is held by the responses queued
	// behind it), never put back to sleep: that would hold them, and the
	// budget, for its MaxWait.
	e.appendBatches(t, "b", 1, 1, 1, 10, 1000)
	for i, rc := range rcs {
		if rp := rc.recv().(*kmsg.FetchResponse).Topics[0].Partitions[0]; rp.ErrorCode != 0 || rp.HighWatermark != 1 {
			t.Fatalf("connection %d, the long poll: error %d, high watermark %d", i, rp.ErrorCode, rp.HighWatermark)
		}
		rp := rc.recv().(*kmsg.FetchResponse).Topics[0].Partitions[0]
		if n := len(rp.RecordBatches); n == 0 || int64(n) > budget.Share()/2 {
			t.Fatalf("connection %d, queued fetch: %d bytes; want records within half a share (%d)", i, n, budget.Share()/2)
		}
	}
	testutil.Eventually(t, 30*time.Second, func() bool { return budget.Used() == 0 },
		"budget still held after every response was written: %d", budget.Used())
}

// The responses one connection has not yet been sent hold at most one
// share of the budget (and a batch, by the first batch rule): a client
// pipelining big fetches behind its long poll gets two answered with
// records and the rest at once without (it fetches again once it reads
// them), and other consumers still get theirs.
func TestFetchConnectionHoldsOneShare(t *testing.T) {
	const size = 16 << 20
	const batchBytes = 200 << 10
	budget := fetchbudget.New(size, 300*time.Millisecond, nil)
	e := startFetchEnv(t, nil, budget)
	if _, err := e.b.CreateTopic("one", 2, nil); err != nil {
		t.Fatal(err)
	}
	e.appendBatches(t, "one", 0, 12, 1, batchBytes, 1000)

	rc := dialPipe(t, e.addr)
	poll := fetchReq("one", 50<<20, 50<<20, nil, 1)
	poll.Version, poll.MaxWaitMillis = 12, 300_000
	rc.send(poll)
	const queued = fetchbudget.ShareDivisor
	for range queued {
		f := fetchReq("one", 50<<20, 50<<20, nil, 0)
		f.Version = 12
		rc.send(f)
	}
	// The first to read takes the share, the next what is left of it (and
	// its first batch whole), the rest none.
	starved := e.srv.m.fetchStarved.WithLabelValues("connection")
	testutil.Eventually(t, 30*time.Second, func() bool { return promtest.ToFloat64(starved) == queued-2 },
		"fetches queued behind the connection's share were not answered without records (%v of %d)", promtest.ToFloat64(starved), queued-2)
	if max := budget.Share() + 2*(batchBytes+1<<10); budget.Used() > max {
		t.Fatalf("one connection's unsent responses hold %d bytes of the budget; want at most a share and a batch (%d)", budget.Used(), max)
	}

	c := e.client(t)
	resp := request[*kmsg.FetchResponse](t, c, fetchReq("one", 50<<20, 50<<20, nil, 0))
	if rp := resp.Topics[0].Partitions[0]; rp.ErrorCode != 0 || len(rp.RecordBatches) == 0 {
		t.Fatalf("another client's fetch: error %d, %d bytes; want records", rp.ErrorCode, len(rp.RecordBatches))
	}

	e.appendBatches(t, "one", 1, 1, 1, 10, 1000)
	if rp := rc.recv().(*kmsg.FetchResponse).Topics[0].Partitions[0]; rp.ErrorCode != 0 || rp.HighWatermark != 1 {
		t.Fatalf("the long poll: error %d, high watermark %d", rp.ErrorCode, rp.HighWatermark)
	}
	withRecords := 0
	for i := range queued {
		rp := rc.recv().(*kmsg.FetchResponse).Topics[0].Partitions[0]
		if rp.ErrorCode != 0 {
			t.Fatalf("queued fetch %d: error %d", i, rp.ErrorCode)
		}
		if len(rp.RecordBatches) > 0 {
			withRecords++
		}
	}
	if withRecords != 2 {
		t.Fatalf("%d queued fetches answered with records; want 2 (the share, then its rest and a batch)", withRecords)
	}
	testutil.Eventually(t, 30*time.Second, func() bool { return budget.Used() == 0 },
		"budget still held after every response was written: %d", budget.Used())
}

// The fetch budget held by a response queued behind a long poll comes back
// when the client disconnects, not when the poll's MaxWait (10 min) ends:
// a client that pipelines a long poll and a fetch with data, then goes
// away, must not keep server-wide budget that every consumer draws from.
func TestFetchBudgetOfDisconnectedClientComesBack(t *testing.T) {
	e := startFetchEnv(t, nil, nil)
	if _, err := e.b.CreateTopic("q", 2, nil); err != nil {
		t.Fatal(err)
	}
	e.appendBatches(t, "q", 1, 4, 4, 1000, 1000)
	r := dialRaw(t, e.addr)
	poll := fetchReq("q", 1<<20, 1<<20, map[int32]int64{0: 0}, 0)
	poll.SetVersion(12)
	poll.MaxWaitMillis = 600_000
	r.send(poll)
	data := fetchReq("q", 1<<20, 1<<20, map[int32]int64{1: 0}, 1)
	data.SetVersion(12)
	r.send(data)
	testutil.Eventually(t, 30*time.Second, func() bool { return e.budget.Used() > 0 },
		"the second fetch holds no budget")
	r.c.Close()
	testutil.Eventually(t, 20*time.Second, func() bool { return e.budget.Used() == 0 },
		"client gone; %d bytes of the fetch budget still held (until the long poll's MaxWait, 10 min)", e.budget.Used())
}

// One client must not be able to hold the whole server-wide fetch budget
// (shared with gRPC) and starve every other consumer. A response queued
// behind a long poll on the same connection is not written until the poll
// ends (MaxWait: up to 24 days), so what it holds until then must be twice
// what it read, not twice its byte limits: else one connection that
// pipelines a long poll and a few 1-record fetches with a large MaxBytes
// holds the entire budget, and another client's fetch of data that exists
// is answered without records, again and again.
func TestFetchHoldsWhatItRead(t *testing.T) {
	budget := fetchbudget.New(16<<20, time.Second, nil) // share 2 MiB: a fetch holds up to 2 x 1 MiB
	e := startFetchEnv(t, nil, budget)
	if _, err := e.b.CreateTopic("hog", 2, nil); err != nil {
		t.Fatal(err)
	}
	e.appendBatches(t, "hog", 1, 1, 1, 10, 1000) // one tiny record
	hog := dialRaw(t, e.addr)
	poll := fetchReq("hog", 1<<30, 1<<30, map[int32]int64{0: 0}, 0)
	poll.SetVersion(12)
	poll.MaxWaitMillis = 600_000
	hog.send(poll)
	for range 8 {
		f := fetchReq("hog", 1<<30, 1<<30, map[int32]int64{1: 0}, 1) // returns ~80 bytes
		f.SetVersion(12)
		hog.send(f)
	}
	// Wait until all 8 have read their record (each holds its bytes,
	// twice).
	pp, _ := e.b.Partition("hog", 1)
	rec, err := pp.Read(t.Context(), 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() bool {
		return promtest.ToFloat64(e.srv.m.fetchWaiting) == 1 && budget.Used() >= int64(8*2*len(rec.Records))
	}, "the long poll is not waiting, or the 8 fetches behind it have not read")
	t.Logf("budget held by one connection's 8 queued responses of ~80 bytes each: %d of %d bytes", budget.Used(), budget.Bytes())

	// Another consumer fetches the record that is there.
	c := e.client(t)
	resp := request[*kmsg.FetchResponse](t, c, fetchReq("hog", 1<<20, 1<<20, map[int32]int64{1: 0}, 1))
	if p := resp.Topics[0].Partitions[0]; p.ErrorCode != 0 || len(p.RecordBatches) == 0 {
		t.Fatalf("another client's fetch of an existing record: error %d, %d bytes (starved: one connection holds %d of the %d-byte fetch budget)",
			p.ErrorCode, len(p.RecordBatches), budget.Used(), budget.Bytes())
	}
}

// A fetch whose read panics (a bug) on the fetch's own goroutine is
// answered as any handler that panics: the connection closes. The budget
// its round reserved comes back, and the server keeps serving.
func TestFetchPanicReturnsBudget(t *testing.T) {
	e := startFetchEnv(t, nil, nil, func(s *Server) {
		s.testHookRead = func(topic string, _ int32) {
			if topic == "boom" {
				panic("test: read panics")
			}
		}
	})
	for _, topic := range []string{"boom", "fine"} {
		if _, err := e.b.CreateTopic(topic, 1, nil); err != nil {
			t.Fatal(err)
		}
		e.appendBatches(t, topic, 0, 2, 2, 10, 1000)
	}
	r := dialRaw(t, e.addr)
	req := fetchReq("boom", 1<<20, 1<<20, nil, 0)
	req.SetVersion(12)
	r.send(req)
	if _, _, err := r.readFrame(); !errors.Is(err, io.EOF) {
		t.Fatalf("a fetch whose read panicked: %v; want the connection closed", err)
	}
	testutil.Eventually(t, 30*time.Second, func() bool { return e.budget.Used() == 0 },
		"the panicked fetch's budget is still held: %d bytes", e.budget.Used())
	resp := request[*kmsg.FetchResponse](t, e.client(t), fetchReq("fine", 1<<20, 1<<20, nil, 0))
	if rp := resp.Topics[0].Partitions[0]; rp.ErrorCode != 0 || len(rp.RecordBatches) == 0 {
		t.Fatalf("fetch after the panic: error %d, %d bytes", rp.ErrorCode, len(rp.RecordBatches))
	}
}
