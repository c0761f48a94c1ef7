package kafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/fetchbudget"
	"github.com/tierlog/tierlog/tiering"
)

// fetchPart is one partition of a fetch request and, per round, what was
// read for it.
type fetchPart struct {
	topic     string
	topicIdx  int // the topic's place in the request (a topic may be listed twice)
	partition int32
	offset    int64
	maxBytes  int
	epoch     int32              // CurrentLeaderEpoch, -1: not checked
	p         *tiering.Partition // nil: code says why

	// This round's answer.
	code       int16
	start, end int64
	data       []byte // whole batches

	// This round's read: wanted (the partition has records at offset),
	// cold (they are below the local log start: a bucket read), and for
	// a read started ahead on its own goroutine, its limit and result.
	want, cold bool
	started    bool
	limit      int
	done       chan struct{}
	res        hot.FetchResult
	err        error
}

// fetchParts resolves the request's partitions, in request order.
func (s *Server) fetchParts(req *kmsg.FetchRequest) []*fetchPart {
	var parts []*fetchPart
	for ti, rt := range req.Topics {
		for _, rp := range rt.Partitions {
			fp := &fetchPart{topic: rt.Topic, topicIdx: ti, partition: rp.Partition, offset: rp.FetchOffset,
				maxBytes: int(max(rp.PartitionMaxBytes, 0)), epoch: -1}
			if req.Version >= 9 {
				fp.epoch = rp.CurrentLeaderEpoch
			}
			p, err := s.b.Partition(rt.Topic, rp.Partition)
			if err != nil {
				fp.code = kerr.UnknownTopicOrPartition.Code
			}
			fp.p = p
			parts = append(parts, fp)
		}
	}
	return parts
}

// round is one pass over a fetch's partitions: the bytes it found, whether
// a partition failed, and the fetch budget its records hold.
type round struct {
	bytes  int
	failed bool
	// starved: no fetch budget came free in time, or the connection holds
	// its share already. The fetch is answered at once, without records,
	// rather than wait on: the budget may be held by responses queued
	// behind it on its own connection.
	starved bool
	hold    *fetchbudget.Hold
	conn    *clientConn // whose fetches the hold counts in
}

// release gives back the round's hold; it may be called more than once.
func (r *round) release() {
	if r.hold != nil {
		r.conn.fetches.Add(-r.hold.Bytes())
		r.hold.Release()
		r.hold = nil
	}
}

// fetchRound reads every partition of a fetch once, within the byte limits
// (see fetchMinVersion). Partitions whose records are in the bucket are
// read in parallel (up to coldReadParallel at once), started ahead of the
// partitions before them, while the rest are read in request order; since
// what a partition may return depends on what those before it returned,
// a read started ahead asks for as much as it could get and is cut to
// whole batches within what is left when its turn comes.
//
// Budget: the round reserves twice the bytes it may return (the batches
// read and their copy in the encoded response) while it reads, then keeps
// twice what it did return until the response is written. One connection's
// responses together hold at most one share of the budget: responses are
// written in order, so those queued behind an unfinished one (a long poll,
// up to its MaxWait) keep their holds until it ends, and without a bound a
// client pipelining fetches behind a long poll would hold the budget every
// consumer draws from. So the connection's rounds take turns to size and
// take their hold (one connection's fetches read one at a time; their
// answers are written one after another anyway), MaxBytes is lowered
// to fit what is left of the connection's share, and a round that finds
// none left is answered without records at once: waiting could not help,
// as what it waits for may be queued behind its own answer. The first
// batch rule can exceed the limits by one batch.
func (s *Server) fetchRound(ctx context.Context, c *clientConn, req *kmsg.FetchRequest, parts []*fetchPart) round {
	failed := false
	for _, fp := range parts {
		fp.data, fp.want, fp.started, fp.done, fp.res, fp.err = nil, false, false, nil, hot.FetchResult{}, nil
		if fp.p == nil || !s.current(fp) {
			failed = true
			continue
		}
		fp.code = s.checkLeaderEpoch(fp.topic, fp.partition, fp.epoch, fp.p)
		fp.start, fp.end = fp.p.StartOffset(), fp.p.EndOffset()
		// Between the high watermark (end) and the log end is not out of
		// range: a consumer there (it read from a leader whose high
		// watermark was ahead) gets nothing until the high watermark
		// passes it, as in Kafka.
		if fp.code == 0 && (fp.offset < fp.start || fp.offset > max(fp.end, fp.p.Log().LogEndOffset())) {
			fp.code = kerr.OffsetOutOfRange.Code
		}
		if fp.code != 0 {
			failed = true
			continue
		}
		if fp.offset < fp.end {
			fp.want = true
			fp.cold = fp.offset < fp.p.Log().StartOffset()
		}
	}
	if !anyWanted(parts) {
		return round{failed: failed}
	}
	select {
	case c.fetchTurn <- struct{}{}:
	case <-ctx.Done():
		return round{failed: failed}
	}
	defer func() { <-c.fetchTurn }()
	room := (s.opts.FetchBudget.Share() - c.fetches.Load()) / 2
	if room <= 0 {
		s.m.fetchStarved.WithLabelValues("connection").Inc()
		s.log.Debug("kafka fetch answered without records: the connection's unsent responses hold its share of the fetch budget",
			"remote", c.nc.RemoteAddr().String(), "held", c.fetches.Load())
		return round{failed: failed, starved: true}
	}
	effMax := int(min(int64(max(req.MaxBytes, 0)), room))
	need := 0
	for _, fp := range parts {
		if fp.want {
			need += min(fp.maxBytes, effMax)
		}
	}
	need = min(need, effMax)
	hold, err := s.opts.FetchBudget.Reserve(ctx, 2*int64(max(need, 1)))
	if err != nil {
		// Slow consumers hold the budget: answer with no records (the
		// client fetches again) rather than buffer more.
		if ctx.Err() == nil {
			s.m.fetchStarved.WithLabelValues("server").Inc()
			s.log.Warn("kafka fetch answered without records", "err", err)
		}
		return round{failed: failed, starved: true}
	}
	kept := false
	defer func() {
		if !kept {
			hold.Release() // a read panicked: protect closes the connection
		}
	}()

	var (
		committed int // bytes kept for the response so far
		reserved  int // committed plus the limits of reads started ahead
		inflight  int // reads started ahead and not yet taken
		ahead     int // next partition to consider starting ahead
	)
	for i, fp := range parts {
		for ahead = max(ahead, i+1); ahead < len(parts); ahead++ {
			a := parts[ahead]
			if !a.want || !a.cold {
				continue
			}
			lim := min(a.maxBytes, effMax)
			if inflight >= coldReadParallel || reserved+lim > need {
				break
			}
			s.readAhead(ctx, a, lim)
			inflight++
			reserved += lim
		}
		if !fp.want {
			continue
		}
		remaining := max(effMax-committed, 0)
		var res hot.FetchResult
		switch {
		case fp.started:
			<-fp.done
			inflight--
			reserved -= fp.limit
			res, err = fp.res, fp.err
		case committed > 0 && min(fp.maxBytes, remaining) == 0:
			continue // no room left: answered without records, as Kafka does
		default:
			res, err = s.read(ctx, fp, min(fp.maxBytes, remaining))
		}
		if err != nil {
			fp.code = s.readErrorCode(fp, err)
			failed = true
			continue
		}
		fp.start, fp.end = res.StartOffset, res.EndOffset
		fp.data = wholeBatches(res.Records, min(fp.maxBytes, remaining), committed == 0)
		if len(fp.data) < len(res.Records) {
			// Cut (a read started ahead, within less room than it asked
			// for): keep only what is sent, which is what the hold counts.
			fp.data = bytes.Clone(fp.data)
		}
		committed += len(fp.data)
		reserved += len(fp.data)
		tier := "hot"
		if fp.cold {
			tier = "cold"
		}
		s.m.fetchBytes.WithLabelValues(tier).Add(float64(len(fp.data)))
	}
	switch d := int64(2*committed) - hold.Bytes(); {
	case d > 0:
		// A first batch larger than the limits: count it if the budget
		// has room now. It is one batch (max.message.bytes), so going
		// over the budget by it is bounded.
		hold.TryGrow(d)
	case d < 0:
		// The reservation covered the limits; the response keeps what
		// was read (an 80-byte answer to a 1 MiB fetch holds 160 bytes).
		hold.Shrink(-d)
	}
	c.fetches.Add(hold.Bytes())
	kept = true
	return round{bytes: committed, failed: failed, hold: hold, conn: c}
}

// current reports whether fp's partition is still one to read and wait on.
// A deleted partition's log is closed (and its Changed channel ready for
// ever): the topic is looked up again, and a partition gone is answered
// UNKNOWN_TOPIC_OR_PARTITION (a topic created again under the name is read
// instead); one closed but still listed (the broker shutting down)
// NOT_LEADER_OR_FOLLOWER. Both are retriable; the client refreshes its
// metadata.
func (s *Server) current(fp *fetchPart) bool {
	if !closed(fp.p) {
		return true
	}
	p, err := s.b.Partition(fp.topic, fp.partition)
	switch {
	case err != nil:
		fp.p, fp.code = nil, kerr.UnknownTopicOrPartition.Code
		return false
	case closed(p):
		fp.p, fp.code = nil, kerr.NotLeaderForPartition.Code
		return false
	}
	fp.p = p
	return true
}

func closed(p *tiering.Partition) bool {
	_, stop := p.Log().Changed()
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

func anyWanted(parts []*fetchPart) bool {
	for _, fp := range parts {
		if fp.want {
			return true
		}
	}
	return false
}

// readAhead starts a bucket read of fp on its own goroutine. A panic there
// (a bug) is not the fetch goroutine's to recover (protect): it becomes the
// partition's error, KAFKA_STORAGE_ERROR, rather than end the server.
func (s *Server) readAhead(ctx context.Context, fp *fetchPart, limit int) {
	fp.started, fp.limit, fp.done = true, limit, make(chan struct{})
	s.m.coldReads.Inc()
	go func() {
		defer close(fp.done)
		defer s.m.coldReads.Dec()
		defer func() {
			if v := recover(); v != nil {
				s.log.Error("kafka fetch read panicked", "topic", fp.topic, "partition", fp.partition, "offset", fp.offset,
					"panic", v, "stack", string(debug.Stack()))
				fp.res, fp.err = hot.FetchResult{}, fmt.Errorf("kafka: read of %s/%d at offset %d panicked: %v", fp.topic, fp.partition, fp.offset, v)
			}
		}()
		fp.res, fp.err = s.read(ctx, fp, limit)
	}()
}

// read reads fp's partition from its offset, up to limit bytes.
func (s *Server) read(ctx context.Context, fp *fetchPart, limit int) (hot.FetchResult, error) {
	if s.testHookRead != nil {
		s.testHookRead(fp.topic, fp.partition)
	}
	return fp.p.Read(ctx, fp.offset, limit)
}

// readErrorCode is the Kafka error for a failed partition read.
func (s *Server) readErrorCode(fp *fetchPart, err error) int16 {
	code := errorCode(err)
	if errors.Is(err, hot.ErrOffsetOutOfRange) || errors.Is(err, context.Canceled) {
		return code
	}
	if code == kerr.UnknownServerError.Code {
		// The disk or the bucket failed the read: Kafka reports a storage
		// failure as KAFKA_STORAGE_ERROR, which clients retry.
		code = kerr.KafkaStorageError.Code
	}
	s.log.Warn("kafka fetch read failed", "topic", fp.topic, "partition", fp.partition, "offset", fp.offset, "err", err)
	return code
}

// wholeBatches is the longest run of whole batches at the start of data
// that fits in limit bytes; with first, at least the first batch however
// large (Kafka's rule that a consumer always makes progress).
func wholeBatches(data []byte, limit int, first bool) []byte {
	end := 0
	for end < len(data) {
		h, err := batch.Peek(data[end:])
		if err != nil {
			break // reads return whole batches; never send a part
		}
		if end+h.Size() > limit && !(first && end == 0) {
			break
		}
		end += h.Size()
	}
	return data[:end]
}
