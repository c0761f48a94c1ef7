package kafka

import (
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/internal/fetchbudget"
	"github.com/tierlog/tierlog/internal/testutil"
)

// conns is the number of connections the server still tracks.
func (s *Server) connCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// A client that disconnects while its fetch long-polls is gone: the server
// must end the poll and drop the connection (socket, reader and writer
// goroutines) then, not when the client's MaxWaitMillis (here 10 min)
// passes. Kafka closes the channel on EOF and drops the delayed fetch's
// response.
func TestReview_DroppedConnectionEndsLongPoll(t *testing.T) {
	e := startFetchEnv(t, nil, nil)
	if _, err := e.b.CreateTopic("drop", 1, nil); err != nil {
		t.Fatal(err)
	}
	r := dialRaw(t, e.addr)
	req := fetchReq("drop", 1<<20, 1<<20, map[int32]int64{0: 0}, 0)
	req.SetVersion(12)
	req.MaxWaitMillis = 600_000
	r.send(req)
	testutil.Eventually(t, 30*time.Second, func() bool { return promtest.ToFloat64(e.srv.m.fetchWaiting) == 1 },
		"the fetch at the log end is not waiting")
	r.c.Close()
	testutil.Eventually(t, 20*time.Second, func() bool { return e.srv.connCount() == 0 && promtest.ToFloat64(e.srv.m.fetchWaiting) == 0 },
		"client closed its connection mid long-poll; server still holds %d connection(s), %v fetch(es) waiting (until MaxWait, 10 min)",
		e.srv.connCount(), promtest.ToFloat64(e.srv.m.fetchWaiting))
}

// A long-poll fetch on a topic that is deleted meanwhile must be answered
// promptly with UNKNOWN_TOPIC_OR_PARTITION (Kafka answers a fetch for a
// partition that went away; the client refreshes metadata). On main the
// poll keeps watching the deleted partition's closed log: its "closed"
// channel is ready for ever, so waitAny returns at once and the poll spins
// on fetchRound until MaxWait (5 min), then answers "no error" with the
// deleted partition's high watermark.
func TestReview_TopicDeletedDuringLongPoll(t *testing.T) {
	e := startFetchEnv(t, nil, nil)
	if _, err := e.b.CreateTopic("gone", 1, nil); err != nil {
		t.Fatal(err)
	}
	end := e.appendBatches(t, "gone", 0, 2, 2, 10, 1000)
	r := dialRaw(t, e.addr)
	req := fetchReq("gone", 1<<20, 1<<20, map[int32]int64{0: end}, 0)
	req.SetVersion(12)
	req.MaxWaitMillis = 300_000
	corr := r.send(req)
	testutil.Eventually(t, 30*time.Second, func() bool { return promtest.ToFloat64(e.srv.m.fetchWaiting) == 1 },
		"the fetch at the log end is not waiting")
	if err := e.b.DeleteTopic("gone"); err != nil {
		t.Fatal(err)
	}
	// rawConn reads with a 10 s deadline: the answer must come by then.
	resp := r.recv(req, corr).(*kmsg.FetchResponse)
	p := resp.Topics[0].Partitions[0]
	if p.ErrorCode != kerr.UnknownTopicOrPartition.Code && p.ErrorCode != kerr.NotLeaderForPartition.Code {
		t.Fatalf("fetch of a deleted partition: error %d, high watermark %d; want UNKNOWN_TOPIC_OR_PARTITION", p.ErrorCode, p.HighWatermark)
	}
}

// The fetch budget held by a response queued behind a long poll comes back
// when the client disconnects, not when the poll's MaxWait (10 min) ends:
// a client that pipelines a long poll and a fetch with data, then goes
// away, must not keep server-wide budget that every consumer draws from.
func TestReview_DroppedConnectionReturnsQueuedFetchBudget(t *testing.T) {
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
// (shared with gRPC) and starve every other consumer. On main a fetch
// reserves twice its byte LIMITS (not what it read) and keeps that until
// its response is written; a response queued behind a long poll on the same
// connection is not written until the poll ends (MaxWait: up to 24 days).
// So one connection that pipelines a long poll and a few 1-record fetches
// with a large MaxBytes holds the entire budget, and another client's fetch
// of data that exists is answered without records, again and again.
func TestReview_OneClientHoldsWholeFetchBudget(t *testing.T) {
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
	// Wait until all 8 have read their record (each holds at least its
	// bytes, twice, on main and on a fixed server alike).
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
