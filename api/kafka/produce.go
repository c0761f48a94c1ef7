package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/batch"
)

// produce appends each partition's record batch, as the producer sent it
// (compression kept), and answers once every append's flush-policy promise
// holds.
//
// The appends happen here, in request order, before the handler returns:
// offsets and idempotent producers' sequences are taken in the order the
// connection sent its requests. Only the wait for the promise (an fsync
// under flush.policy=always, shared by the group commit with every append
// since) runs later, so a client with five produce requests in flight has
// them written back to back and made durable by one fsync.
//
// acks=1 is answered when the leader's flush policy's promise holds
// (always: fsynced; interval, os: in the page cache, which survives a
// crash of the process but not of the machine). acks=-1 (all) is answered
// once, in addition, every in-sync replica holds the batch (each under its
// own flush policy) and at least min.insync.replicas do; before anything
// is written it is refused with NOT_ENOUGH_REPLICAS while fewer are in
// sync, and after, NOT_ENOUGH_REPLICAS_AFTER_APPEND or REQUEST_TIMED_OUT
// (TimeoutMillis) say the batch is stored on the leader but not
// acknowledged. On a single node, and for a topic with one replica, acks=-1
// means acks=1. acks=0 gets no response; an append it made that failed
// closes the connection, as Kafka does, so the client refreshes its
// metadata.
func (s *Server) produce(_ *clientConn, req *kmsg.ProduceRequest) reply {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	badAcks := req.Acks != 0 && req.Acks != 1 && req.Acks != -1
	type waiting struct {
		pr    *kmsg.ProduceResponseTopicPartition
		topic string
		pa    *hot.PendingAppend
		epoch int32 // the leader epoch it was written at
		// replicate: acks=all on a replicated topic waits for its ISR.
		replicate bool
	}
	var waits []waiting
	failed, mustWait, replicate := false, false, false
	resp.Topics = make([]kmsg.ProduceResponseTopic, len(req.Topics))
	for i, rt := range req.Topics {
		t := &resp.Topics[i]
		*t = kmsg.NewProduceResponseTopic()
		t.Topic = rt.Topic
		t.Partitions = make([]kmsg.ProduceResponseTopicPartition, len(rt.Partitions))
		for j, rp := range rt.Partitions {
			pr := &t.Partitions[j]
			*pr = kmsg.NewProduceResponseTopicPartition()
			pr.Partition = rp.Partition
			if badAcks {
				setProduceError(req.Version, pr, codedErrorf(kerr.InvalidRequiredAcks, "acks %d: valid values are -1 (all), 0 and 1", req.Acks))
				continue
			}
			pa, epoch, err := s.appendPartition(req.Version, req.Acks, rt.Topic, rp)
			if err != nil {
				failed = true
				setProduceError(req.Version, pr, err)
				continue
			}
			w := waiting{pr: pr, topic: rt.Topic, pa: pa, epoch: epoch, replicate: req.Acks == -1 && s.b.Replicated(rt.Topic)}
			waits = append(waits, w)
			replicate = replicate || w.replicate
			mustWait = mustWait || pa.MustWait()
		}
	}
	pas := make([]*hot.PendingAppend, len(waits))
	for i, w := range waits {
		pas[i] = w.pa
	}
	if req.Acks == 0 {
		if mustWait {
			// Nobody hears the answer, but the flush policy still holds:
			// under flush.policy=always the batches become durable (and
			// visible to readers) only through this fsync.
			go waitAll(pas)
		}
		return reply{none: true, closeConn: failed}
	}
	// finish must not capture req: its records (a slice of the frame read
	// from the socket) are written already, and a request held until its
	// fsync would keep up to pipelineDepth frames per connection alive.
	version := req.Version
	timeout := time.Duration(max(req.TimeoutMillis, 0)) * time.Millisecond
	finish := func(ctx context.Context) kmsg.Response {
		results, errs := waitAll(pas)
		if replicate {
			var rws []replWait
			for i, w := range waits {
				if w.replicate && errs[i] == nil {
					rws = append(rws, replWait{topic: w.topic, partition: w.pr.Partition, end: results[i].LastOffset + 1, epoch: w.epoch, err: &errs[i]})
				}
			}
			s.waitReplicated(ctx, timeout, rws)
		}
		for i, w := range waits {
			res, err := results[i], errs[i]
			if err != nil {
				setProduceError(version, w.pr, err)
				continue
			}
			w.pr.BaseOffset = res.BaseOffset
			if res.TimestampType == hot.LogAppendTime {
				w.pr.LogAppendTime = res.LogAppendTime
			}
			if p, err := s.b.Partition(w.topic, w.pr.Partition); err == nil {
				w.pr.LogStartOffset = p.StartOffset()
			}
		}
		return resp
	}
	if !mustWait && !replicate {
		return reply{resp: finish(context.Background())}
	}
	return reply{later: finish}
}

// replWait is one partition's acks=all wait: its batch's end and the
// leader epoch it was written at.
type replWait struct {
	topic     string
	partition int32
	end       int64
	epoch     int32
	err       *error // where the outcome goes
}

// waitReplicated waits, for acks=all, until each partition of ws is on its
// in-sync replicas up to its end, all at once, for at most timeout
// (Kafka's TimeoutMillis); one that does not get there gets its error:
// REQUEST_TIMED_OUT on the timeout, NOT_ENOUGH_REPLICAS_AFTER_APPEND, or
// NOT_LEADER_OR_FOLLOWER when the node stopped leading at that epoch. Its
// batch stays in the leader's log.
func (s *Server) waitReplicated(ctx context.Context, timeout time.Duration, ws []replWait) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxParallelWaits)
	for _, w := range ws {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := s.b.WaitReplicated(ctx, w.topic, w.partition, w.end, w.epoch)
			if errors.Is(err, context.DeadlineExceeded) {
				err = codedErrorf(kerr.RequestTimedOut, "%s/%d: stored on the leader, not on every in-sync replica within the request's timeout (%v); not acknowledged", w.topic, w.partition, timeout)
			}
			*w.err = err
		})
	}
	wg.Wait()
}

// maxParallelWaits bounds the goroutines one Produce request starts to
// wait for its partitions' fsyncs: enough that a producer's usual request
// (a batch for each of a few partitions) has every fsync in flight at once,
// few enough that a request naming thousands of partitions cannot start
// thousands of goroutines.
const maxParallelWaits = 16

// waitAll waits for every pending append and returns the results in the
// order of pas. The ones that must fsync are waited for together, on at
// most maxParallelWaits goroutines that each take the next unwaited one:
// each log has its own group commit, so a request's partitions become
// durable in about the time of the slowest fsync, not of their sum, and
// one slow disk file holds up only the goroutine waiting for it.
func waitAll(pas []*hot.PendingAppend) ([]hot.AppendResult, []error) {
	res := make([]hot.AppendResult, len(pas))
	errs := make([]error, len(pas))
	var slow []int
	for i, pa := range pas {
		if pa.MustWait() {
			slow = append(slow, i)
		} else {
			res[i], errs[i] = pa.Wait() // returns at once
		}
	}
	if len(slow) == 1 {
		i := slow[0]
		res[i], errs[i] = pas[i].Wait()
		return res, errs
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(len(slow), maxParallelWaits) {
		wg.Go(func() {
			for {
				k := int(next.Add(1)) - 1
				if k >= len(slow) {
					return
				}
				i := slow[k]
				res[i], errs[i] = pas[i].Wait()
			}
		})
	}
	wg.Wait()
	return res, errs
}

// appendPartition checks one partition's record set against the Produce
// request's rules and hands the batch to the broker. Kafka requires, from
// v3, exactly one RecordBatch of magic 2 per partition, and zstd only from
// v7 (the version that announced it); tierlog requires the same at v0-v2,
// which it advertises only for librdkafka's sake (see the apis table).
func (s *Server) appendPartition(version, acks int16, topic string, rp kmsg.ProduceRequestTopicPartition) (*hot.PendingAppend, int32, error) {
	if err := broker.ValidateTopicName(topic); err != nil {
		// Kafka answers UNKNOWN_TOPIC_OR_PARTITION, which clients retry
		// until their delivery timeout for a name that can never exist;
		// INVALID_TOPIC_EXCEPTION fails the send at once, with the rule.
		return nil, 0, err
	}
	b := rp.Records
	switch {
	case len(b) == 0:
		return nil, 0, codedErrorf(kerr.InvalidRecord, "no record batch for partition %d: Produce v%d needs exactly one", rp.Partition, version)
	case len(b) > 16 && b[16] != batch.Magic:
		return nil, 0, codedErrorf(kerr.InvalidRecord, "record batch magic %d: tierlog stores RecordBatch v2 (magic 2) only", int8(b[16]))
	case len(b) >= batch.HeaderSize && version < 7 && batch.Codec(binary.BigEndian.Uint16(b[21:])&0x07) == batch.Zstd:
		return nil, 0, codedErrorf(kerr.UnsupportedCompressionType, "zstd compression needs Produce v7 or later, the request is v%d", version)
	}
	if len(b) >= batch.LengthFieldEnd {
		// A valid length smaller than the set: more follows the batch.
		n := int64(int32(binary.BigEndian.Uint32(b[8:])))
		if size := batch.LengthFieldEnd + n; n >= batch.HeaderSize-batch.LengthFieldEnd && size < int64(len(b)) {
			return nil, 0, codedErrorf(kerr.InvalidRecord, "%d bytes follow the first record batch (%d bytes) of partition %d: Produce takes exactly one batch per partition", int64(len(b))-size, size, rp.Partition)
		}
	}
	return s.b.AppendAcks(topic, rp.Partition, b, acks)
}

// setProduceError fills a partition's answer for a refused append (nothing
// was stored) or a failed wait (the fsync failed: the log refuses appends
// until it is reopened, whose recovery keeps the batch only if it is
// whole on disk, and rebuilds the producer state from what it kept, so an
// idempotent producer's retry cannot duplicate it).
func setProduceError(version int16, pr *kmsg.ProduceResponseTopicPartition, err error) {
	pr.ErrorCode = errorCode(err)
	pr.BaseOffset, pr.LogAppendTime, pr.LogStartOffset = -1, -1, -1
	if version >= 8 {
		pr.ErrorMessage = errorMessage(err)
	}
}
