package kafka

import (
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

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
