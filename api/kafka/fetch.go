package kafka

import (
	"context"
	"reflect"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Fetch, v4 to v12. v4 is the first version whose records are RecordBatch
// v2, the only format tierlog stores (older versions carry message sets of
// magic 0/1); kafka-python 2.0.2 sends v4, librdkafka and franz-go the
// newest we advertise. v13+ names topics by id, which tierlog topics do
// not have (Metadata returns zero ids), so it is not advertised.
//
// No fetch sessions (KIP-227): every response has session id 0, which
// tells clients to send full fetches; an incremental fetch (a session
// epoch above 0) is answered FETCH_SESSION_ID_NOT_FOUND, as Kafka answers
// one for a session it evicted, and the client starts over.
//
// Byte limits are Kafka's (KIP-74), applied to whole batches: partitions
// are filled in request order, each with at most its PartitionMaxBytes and
// what is left of MaxBytes, except that the first batch of the first
// partition with data is returned whole even if it alone exceeds both, so a
// consumer always makes progress. Nothing else ever goes past MaxBytes.
const (
	fetchMinVersion = 4
	fetchMaxVersion = 12
)

// coldReadParallel bounds the partitions of one fetch read from the bucket
// at once.
const coldReadParallel = 8

func (s *Server) fetch(c *clientConn, req *kmsg.FetchRequest) reply {
	resp := req.ResponseKind().(*kmsg.FetchResponse)
	if req.Version >= 7 && req.SessionEpoch != 0 && req.SessionEpoch != -1 {
		// 0 opens a session and -1 asks for none: both are full fetches,
		// answered without one. Any other epoch continues a session this
		// server never gave out.
		resp.ErrorCode = kerr.FetchSessionIDNotFound.Code
		return reply{resp: resp}
	}
	return reply{later: func(ctx context.Context) kmsg.Response { return s.fetchWait(ctx, c, req, resp) }}
}

// fetchWait answers a fetch: at once when the partitions have MinBytes
// (or a partition has an error), else when appends bring them there or
// MaxWaitMillis passes. It waits on every partition's log from this one
// goroutine, woken by appends (never a timer poll), and holds no fetch
// budget while it waits.
func (s *Server) fetchWait(ctx context.Context, c *clientConn, req *kmsg.FetchRequest, resp *kmsg.FetchResponse) kmsg.Response {
	parts := s.fetchParts(req)
	wait := time.Duration(max(req.MaxWaitMillis, 0)) * time.Millisecond
	timer := time.NewTimer(wait)
	defer timer.Stop()
	expired := wait == 0
	var r round
	// Whatever ends this fetch without handing its hold to the response
	// gives it back: a closing connection, or a panic (protect answers
	// nothing and closes the connection).
	defer r.release()
	for {
		// Taken before reading, so an append after the read still wakes
		// the wait below.
		wake := changes(parts)
		r = s.fetchRound(ctx, c, req, parts)
		if ctx.Err() != nil {
			return nil // the connection or server is closing: nothing is sent
		}
		if expired || r.bytes >= int(req.MinBytes) || r.failed || r.starved || len(parts) == 0 {
			fill(resp, parts)
			s.log.Debug("kafka fetch", "partitions", len(parts), "bytes", r.bytes)
			out := r
			r = round{}
			// The encoded answer is the records plus at most a few
			// hundred bytes per partition (names, offsets, tags): sized
			// up front, the records are copied once, not regrown.
			return &held{Response: resp, release: out.release, size: out.bytes + 512*len(parts) + 64}
		}
		r.release()
		s.m.fetchWaiting.Inc()
		// A drain (Shutdown) ends the wait as MaxWait would: the next
		// round answers with what there is, and the consumer fetches
		// again once it reconnects.
		expired = !waitAny(ctx, timer.C, s.drain, wake)
		s.m.fetchWaiting.Dec()
	}
}

// changes lists the channels that signal new records (or a closed log) in
// any of parts. A closed log's channel stays ready, so the round after it
// fires must drop that partition (fetchRound answers it with an error and
// the fetch returns): a wait never selects on a closed log again.
func changes(parts []*fetchPart) []<-chan struct{} {
	var chans []<-chan struct{}
	for _, fp := range parts {
		if fp.p != nil {
			moved, closed := fp.p.Log().Changed()
			chans = append(chans, moved, closed)
		}
	}
	return chans
}

// waitAny blocks until one of chans is closed (true) or ctx ends, the
// timer fires or drain is closed (false). One select over every partition
// of the request.
func waitAny(ctx context.Context, timer <-chan time.Time, drain <-chan struct{}, chans []<-chan struct{}) bool {
	cases := make([]reflect.SelectCase, 0, len(chans)+3)
	cases = append(cases,
		reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
		reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(timer)},
		reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(drain)})
	for _, ch := range chans {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ch)})
	}
	i, _, _ := reflect.Select(cases)
	return i >= 3
}

// fill writes the partitions' answers into resp, in request order.
func fill(resp *kmsg.FetchResponse, parts []*fetchPart) {
	resp.Topics = resp.Topics[:0]
	for i, fp := range parts {
		if i == 0 || parts[i-1].topic != fp.topic || parts[i-1].topicIdx != fp.topicIdx {
			t := kmsg.NewFetchResponseTopic()
			t.Topic = fp.topic
			resp.Topics = append(resp.Topics, t)
		}
		t := &resp.Topics[len(resp.Topics)-1]
		rp := kmsg.NewFetchResponseTopicPartition()
		rp.Partition = fp.partition
		rp.ErrorCode = fp.code
		rp.HighWatermark, rp.LastStableOffset, rp.LogStartOffset = -1, -1, -1
		if fp.code == 0 {
			// One node, no transactions: everything written is committed
			// and readable, so the high watermark is the log end and the
			// last stable offset equals it.
			rp.HighWatermark, rp.LastStableOffset, rp.LogStartOffset = fp.end, fp.end, fp.start
		}
		rp.AbortedTransactions = []kmsg.FetchResponseTopicPartitionAbortedTransaction{}
		rp.PreferredReadReplica = -1
		// Empty, never null, as Kafka sends: kafka-python fails on null.
		rp.RecordBatches = fp.data
		if rp.RecordBatches == nil {
			rp.RecordBatches = []byte{}
		}
		t.Partitions = append(t.Partitions, rp)
	}
}
