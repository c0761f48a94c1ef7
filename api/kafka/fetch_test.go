package kafka

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/cold/filebucket"
	"github.com/tierlog/tierlog/internal/testutil"
)

// A fetch at the log end with a long MaxWait returns as soon as a record
// is appended to any of its partitions: the request's own deadline (30 s)
// is far below its MaxWait (5 min), so it returns in time only if the
// append woke it.
func TestFetchLongPollWokenByAppend(t *testing.T) {
	e := startFetchEnv(t, nil, nil)
	if _, err := e.b.CreateTopic("w", 3, nil); err != nil {
		t.Fatal(err)
	}
	e.appendBatches(t, "w", 0, 1, 1, 10, 1000)
	c := e.client(t)
	req := fetchReq("w", 1<<20, 1<<20, map[int32]int64{0: 1}, 0, 1, 2)
	req.MaxWaitMillis = 300_000
	type result struct {
		resp kmsg.Response
		err  error
	}
	done := make(chan result, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		resp, err := c.Request(ctx, req)
		done <- result{resp, err}
	}()
	testutil.Eventually(t, 30*time.Second, func() bool { return promtest.ToFloat64(e.srv.m.fetchWaiting) == 1 },
		"the fetch at the log end is not waiting")
	e.appendBatches(t, "w", 2, 1, 3, 10, 2000)
	r := <-done
	if r.err != nil {
		t.Fatalf("fetch with MaxWait 5 min, woken by an append: %v (not woken?)", r.err)
	}
	resp := r.resp.(*kmsg.FetchResponse)
	got := map[int32]kmsg.FetchResponseTopicPartition{}
	for _, p := range resp.Topics[0].Partitions {
		got[p.Partition] = p
	}
	if p := got[2]; p.ErrorCode != 0 || p.HighWatermark != 3 || len(p.RecordBatches) == 0 {
		t.Fatalf("partition 2 after the append: error %d, high watermark %d, %d bytes; want its 3 records", p.ErrorCode, p.HighWatermark, len(p.RecordBatches))
	}
	if got[0].RecordBatches == nil {
		t.Fatal("partition 0 without records: null records (kafka-python fails on them), want empty")
	}
	if p := got[0]; p.ErrorCode != 0 || p.HighWatermark != 1 || p.LastStableOffset != 1 || p.LogStartOffset != 0 || len(p.RecordBatches) != 0 || p.PreferredReadReplica != -1 {
		t.Fatalf("partition 0 (nothing new): %+v", p)
	}
	if promtest.ToFloat64(e.srv.m.fetchWaiting) != 0 {
		t.Fatal("a fetch is still counted as waiting")
	}
}

// kip74 is Kafka's rule for what a fetch returns, given the batch sizes
// each partition has from its fetch offset (in request order): each
// partition gets the whole batches that fit in its limit and what is left
// of maxBytes, except that the first batch of the first partition with
// data is returned whatever its size.
func kip74(sizes [][]int, partMax, maxBytes int) []int {
	counts := make([]int, len(sizes))
	remaining, first := maxBytes, true
	for i, ss := range sizes {
		lim, used := min(partMax, remaining), 0
		for _, sz := range ss {
			if used+sz > lim && !(first && used == 0) {
				break
			}
			used += sz
			counts[i]++
		}
		if used > 0 {
			first = false
		}
		remaining = max(remaining-used, 0)
	}
	return counts
}

// Byte limits across several partitions, from the hot tier and from the
// bucket alike: every answer is what Kafka's rule gives (kip74), whole
// batches, never more than MaxBytes except a single first batch.
func TestFetchByteLimits(t *testing.T) {
	for _, tiered := range []bool{false, true} {
		t.Run(map[bool]string{false: "hot", true: "bucket"}[tiered], func(t *testing.T) {
			bk, err := filebucket.New(filepath.Join(t.TempDir(), "bucket"))
			if err != nil {
				t.Fatal(err)
			}
			e := startFetchEnv(t, bk, nil)
			if _, err := e.b.CreateTopic("l", 3, map[string]string{"local.retention.bytes": "0"}); err != nil {
				t.Fatal(err)
			}
			// Partition p's batches hold 2(p+1) records: sizes differ by
			// partition, so a mix-up shows.
			for p := range int32(3) {
				e.appendBatches(t, "l", p, 6, 2*int(p+1), 100, 1000)
				if tiered {
					e.tier(t, "l", p)
				}
			}
			c := e.client(t)
			all := map[int32][]int{}
			for p := range int32(3) {
				resp := request[*kmsg.FetchResponse](t, c, fetchReq("l", 1<<20, 1<<20, nil, p))
				all[p], _ = batchSizes(t, resp.Topics[0].Partitions[0].RecordBatches)
				if len(all[p]) != 6 {
					t.Fatalf("partition %d: %d batches, want 6", p, len(all[p]))
				}
			}
			s0, s1, s2 := all[0][0], all[1][0], all[2][0]
			t.Logf("batch sizes by partition: %d %d %d", s0, s1, s2)
			cases := []struct {
				name              string
				partMax, maxBytes int
				order             []int32
				offsets           map[int32]int64
			}{
				{"partition limit", 2*s0 + s0/2, 1 << 20, []int32{0, 1, 2}, nil},
				{"request limit", 1 << 20, 3*s0 + 10, []int32{0, 1, 2}, nil},
				{"request limit spans partitions", 1 << 20, 6*s0 + s1 + 5, []int32{0, 1, 2}, nil},
				{"both limits", 2 * s1, 4*s0 + s1, []int32{0, 1, 2}, nil},
				{"first batch oversize", 10, 10, []int32{0, 1, 2}, nil},
				{"request limit 0", 1 << 20, 0, []int32{0, 1, 2}, nil},
				{"first partition with data gets the oversize batch", 10, 10, []int32{0, 1, 2}, map[int32]int64{0: 12}},
				{"request order", 1 << 20, s2 + s1 + 5, []int32{2, 1, 0}, nil},
				{"from mid log", 3 * s2, 5 * s1, []int32{1, 2}, map[int32]int64{1: 4 * 4, 2: 5 * 6}},
			}
			for _, tc := range cases {
				want := make([][]int, len(tc.order))
				for i, p := range tc.order {
					want[i] = all[p][tc.offsets[p]/int64(2*(p+1)):]
				}
				counts := kip74(want, tc.partMax, tc.maxBytes)
				resp := request[*kmsg.FetchResponse](t, c, fetchReq("l", int32(tc.maxBytes), int32(tc.partMax), tc.offsets, tc.order...))
				total, batches := 0, 0
				for i, rp := range resp.Topics[0].Partitions {
					if rp.Partition != tc.order[i] || rp.ErrorCode != 0 {
						t.Fatalf("%s: answer %d is partition %d, error %d; want partition %d", tc.name, i, rp.Partition, rp.ErrorCode, tc.order[i])
					}
					sizes, bases := batchSizes(t, rp.RecordBatches)
					if len(sizes) != counts[i] {
						t.Errorf("%s: partition %d: %d batches %v, want %d (Kafka's rule; limits %d per partition, %d per request)",
							tc.name, rp.Partition, len(sizes), sizes, counts[i], tc.partMax, tc.maxBytes)
					}
					if len(bases) > 0 && bases[0] != tc.offsets[rp.Partition] {
						t.Errorf("%s: partition %d starts at %d, want %d", tc.name, rp.Partition, bases[0], tc.offsets[rp.Partition])
					}
					total += len(rp.RecordBatches)
					batches += len(sizes)
				}
				if total > tc.maxBytes && batches > 1 {
					t.Errorf("%s: %d bytes in %d batches, over MaxBytes %d", tc.name, total, batches, tc.maxBytes)
				}
			}
		})
	}
}

// A fetch at an offset out of range gets OFFSET_OUT_OF_RANGE for that
// partition and the others are answered, at once (an error ends the wait).
func TestFetchOutOfRange(t *testing.T) {
	e := startFetchEnv(t, nil, nil)
	if _, err := e.b.CreateTopic("r", 2, nil); err != nil {
		t.Fatal(err)
	}
	for p := range int32(2) {
		e.appendBatches(t, "r", p, 3, 2, 10, 1000)
	}
	c := e.client(t)
	for _, bad := range []int64{7, 100, -1} {
		req := fetchReq("r", 1<<20, 1<<20, map[int32]int64{0: bad, 1: 0}, 0, 1)
		req.MaxWaitMillis = 300_000
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = "no-such-topic"
		rt.Partitions = []kmsg.FetchRequestTopicPartition{{Partition: 0, PartitionMaxBytes: 1 << 20, CurrentLeaderEpoch: -1, LastFetchedEpoch: -1}}
		req.Topics = append(req.Topics, rt)
		resp := request[*kmsg.FetchResponse](t, c, req)
		p0, p1, unknown := resp.Topics[0].Partitions[0], resp.Topics[0].Partitions[1], resp.Topics[1].Partitions[0]
		if p0.ErrorCode != kerr.OffsetOutOfRange.Code || len(p0.RecordBatches) != 0 {
			t.Errorf("fetch at %d of a log 0..6: error %d, %d bytes; want OFFSET_OUT_OF_RANGE", bad, p0.ErrorCode, len(p0.RecordBatches))
		}
		if sizes, _ := batchSizes(t, p1.RecordBatches); p1.ErrorCode != 0 || len(sizes) != 3 {
			t.Errorf("the other partition: error %d, %d batches; want its 3", p1.ErrorCode, len(sizes))
		}
		if unknown.ErrorCode != kerr.UnknownTopicOrPartition.Code {
			t.Errorf("unknown topic: error %d, want UNKNOWN_TOPIC_OR_PARTITION", unknown.ErrorCode)
		}
	}
}

// An incremental fetch (a session this server never gave out) is refused
// with FETCH_SESSION_ID_NOT_FOUND, so the client goes back to full
// fetches; full fetches are answered with session id 0 (none).
func TestFetchSessions(t *testing.T) {
	e := startFetchEnv(t, nil, nil)
	if _, err := e.b.CreateTopic("s", 1, nil); err != nil {
		t.Fatal(err)
	}
	e.appendBatches(t, "s", 0, 1, 1, 10, 1000)
	c := e.client(t)
	for _, tc := range []struct {
		id, epoch int32
		code      int16
	}{{0, 0, 0}, {0, -1, 0}, {5, 3, kerr.FetchSessionIDNotFound.Code}, {0, 1, kerr.FetchSessionIDNotFound.Code}} {
		req := fetchReq("s", 1<<20, 1<<20, nil, 0)
		req.SessionID, req.SessionEpoch = tc.id, tc.epoch
		resp := request[*kmsg.FetchResponse](t, c, req)
		if resp.ErrorCode != tc.code || resp.SessionID != 0 {
			t.Errorf("session %d epoch %d: error %d, session %d; want error %d, session 0", tc.id, tc.epoch, resp.ErrorCode, resp.SessionID, tc.code)
		}
	}
}

// connCount is the number of connections the server still tracks.
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
func TestFetchLongPollEndsWhenClientDisconnects(t *testing.T) {
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
// partition that went away; the client refreshes metadata), not spin on
// the deleted partition's closed log (whose "closed" channel is ready for
// ever) until MaxWait (5 min) and then answer "no error" with its high
// watermark.
func TestFetchLongPollOfDeletedTopic(t *testing.T) {
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
