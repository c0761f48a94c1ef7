package grpcapi

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/batch"
)

const (
	// defaultMaxBytes is used when a fetch sets no max_bytes. It stays well
	// under gRPC's default 4 MiB receive limit so default clients work.
	defaultMaxBytes = 1 << 20
	// maxMaxBytes bounds max_bytes so one request cannot make the server
	// hold an arbitrary amount of memory.
	maxMaxBytes = 64 << 20
	// recordOverhead approximates the protobuf framing of one decoded record
	// (offset, timestamp, tags and lengths) when sizing a decoded response.
	recordOverhead = 32
)

// fetchParams is a validated fetch request.
type fetchParams struct {
	topic      string
	partition  int32
	maxBytes   int
	maxRecords int
	raw        bool
}

func checkFetch(req *tierlogv1.FetchRequest) (fetchParams, error) {
	p := fetchParams{
		topic:      req.GetTopic(),
		partition:  req.GetPartition(),
		maxBytes:   int(req.GetMaxBytes()),
		maxRecords: int(req.GetMaxRecords()),
		raw:        req.GetRaw(),
	}
	if p.topic == "" {
		return p, invalidf("fetch: topic is required")
	}
	if p.maxBytes < 0 || p.maxBytes > maxMaxBytes {
		return p, invalidf("fetch: max_bytes %d out of range: valid are 0 (default %d) to %d", p.maxBytes, defaultMaxBytes, maxMaxBytes)
	}
	if p.maxBytes == 0 {
		p.maxBytes = defaultMaxBytes
	}
	if p.maxRecords < 0 {
		return p, invalidf("fetch: max_records %d is negative: use 0 for no limit or a positive count", p.maxRecords)
	}
	return p, nil
}

// startOffset resolves the request's start position to an offset.
func (s *Server) startOffset(ctx context.Context, req *tierlogv1.FetchRequest) (int64, error) {
	topic, part := req.GetTopic(), req.GetPartition()
	switch st := req.GetStart().(type) {
	case *tierlogv1.FetchRequest_Offset:
		return st.Offset, nil
	case *tierlogv1.FetchRequest_TimestampMs:
		if st.TimestampMs < 0 {
			return 0, invalidf("fetch: timestamp_ms %d is negative: use Unix milliseconds, or earliest/latest", st.TimestampMs)
		}
		return s.b.OffsetForTime(ctx, topic, part, st.TimestampMs)
	case *tierlogv1.FetchRequest_Latest:
		_, end, err := s.b.Offsets(topic, part)
		return end, err
	default: // earliest, or no start given
		start, _, err := s.b.Offsets(topic, part)
		return start, err
	}
}

// Fetch reads one response's worth of records from a position.
func (s *Server) Fetch(ctx context.Context, req *tierlogv1.FetchRequest) (*tierlogv1.FetchResponse, error) {
	p, err := checkFetch(req)
	if err != nil {
		return nil, err
	}
	off, err := s.startOffset(ctx, req)
	if err != nil {
		return nil, s.statusFor("Fetch", err)
	}
	resp, _, err := s.fetchOnce(ctx, p, off, p.maxRecords)
	return resp, s.statusFor("Fetch", err)
}

// FetchStream sends fetch responses from a position until the log end or,
// with follow, until the client cancels or the limit is reached.
func (s *Server) FetchStream(req *tierlogv1.FetchStreamRequest, stream grpc.ServerStreamingServer[tierlogv1.FetchResponse]) error {
	// Waiting ends when the client goes away or the server closes.
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	defer context.AfterFunc(s.closing, cancel)()
	freq := req.GetFetch()
	if freq == nil {
		return invalidf("fetch stream: fetch is required (topic, partition, start position)")
	}
	p, err := checkFetch(freq)
	if err != nil {
		return err
	}
	limit := req.GetLimit()
	if limit < 0 {
		return invalidf("fetch stream: limit %d is negative: use 0 for no limit or a positive count", limit)
	}
	off, err := s.startOffset(ctx, freq)
	if err != nil {
		return s.statusFor("FetchStream", err)
	}
	var sent int64
	for {
		per := p.maxRecords
		if limit > 0 {
			if rem := limit - sent; per == 0 || rem < int64(per) {
				per = int(rem)
			}
		}
		resp, n, err := s.fetchOnce(ctx, p, off, per)
		if err != nil {
			return s.statusFor("FetchStream", err)
		}
		if resp.NextOffset <= off && off < resp.LogEndOffset {
			// Below the log end every fetch must move forward (the broker
			// returns at least one batch); looping here would spin.
			return status.Errorf(codes.Internal, "fetch stream: %s/%d: fetch at offset %d below log end %d made no progress", p.topic, p.partition, off, resp.LogEndOffset)
		}
		if n > 0 {
			if err := stream.Send(resp); err != nil {
				return err
			}
			sent += int64(n)
		}
		off = resp.NextOffset
		if limit > 0 && sent >= limit {
			return nil
		}
		if off < resp.LogEndOffset {
			continue
		}
		if !req.GetFollow() {
			return nil
		}
		if err := s.b.Wait(ctx, p.topic, p.partition, off); err != nil {
			return s.waitFailed(p, off, err)
		}
	}
}

// waitFailed explains why a follow stream stopped waiting at off.
func (s *Server) waitFailed(p fetchParams, off int64, err error) error {
	if s.closing.Err() != nil {
		return status.Errorf(codes.Unavailable, "fetch stream: %s/%d: server is shutting down; resume from offset %d", p.topic, p.partition, off)
	}
	if errors.Is(err, hot.ErrClosed) {
		// The partition's log was closed under the stream: the topic was
		// deleted (say so) or the broker is closing.
		if _, _, oerr := s.b.Offsets(p.topic, p.partition); oerr != nil {
			err = oerr
		}
	}
	return s.statusFor("FetchStream", err)
}

// fetchOnce reads batches at off and fills one response with at most limit
// records (0: no limit) and about p.maxBytes bytes. It returns the number of
// records at or above off that the response carries (in raw mode, counted
// from the batches' offset ranges).
func (s *Server) fetchOnce(ctx context.Context, p fetchParams, off int64, limit int) (*tierlogv1.FetchResponse, int, error) {
	res, err := s.b.Fetch(ctx, p.topic, p.partition, off, p.maxBytes)
	if err != nil {
		return nil, 0, err
	}
	resp := &tierlogv1.FetchResponse{
		Topic:          p.topic,
		Partition:      p.partition,
		LogStartOffset: res.StartOffset,
		LogEndOffset:   res.EndOffset,
		// Single node: everything written is readable. With replication this
		// becomes the partition's high watermark.
		HighWatermark: res.EndOffset,
		NextOffset:    off,
	}
	n, size := 0, 0
	for buf := res.Records; len(buf) > 0; {
		var (
			h    batch.Header
			recs []batch.Record
			err  error
		)
		if p.raw {
			h, err = batch.Peek(buf)
		} else {
			h, recs, err = batch.Decode(buf)
		}
		if err != nil {
			if n == 0 && resp.NextOffset == off {
				return nil, 0, status.Errorf(codes.Internal, "fetch: %s/%d: stored batch at offset %d cannot be read: %v", p.topic, p.partition, resp.NextOffset, err)
			}
			// Serve what was readable; the next fetch starts at this batch
			// and reports the failure.
			break
		}
		whole := buf[:h.Size()]
		buf = buf[h.Size():]
		if h.NextOffset() <= off {
			continue // wholly below the requested offset
		}
		if p.raw {
			resp.Batches = append(resp.Batches, whole)
			n += int(h.NextOffset() - max(h.BaseOffset, off))
			resp.NextOffset = h.NextOffset()
			if limit > 0 && n >= limit {
				break
			}
			continue
		}
		full := false
		if !h.Control() { // transaction markers are not user records
			for _, r := range recs {
				if r.Offset < off {
					continue
				}
				rsize := recordSize(r)
				if n > 0 && (size+rsize > p.maxBytes || (limit > 0 && n >= limit)) {
					full = true
					break
				}
				resp.Records = append(resp.Records, recordProto(r))
				size += rsize
				n++
				resp.NextOffset = r.Offset + 1
			}
		}
		if full {
			break
		}
		resp.NextOffset = max(resp.NextOffset, h.NextOffset())
		if limit > 0 && n >= limit {
			break
		}
	}
	s.recordsOut.WithLabelValues(p.topic).Add(float64(n))
	return resp, n, nil
}

func recordSize(r batch.Record) int {
	n := recordOverhead + len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += recordOverhead/4 + len(h.Key) + len(h.Value)
	}
	return n
}

func recordProto(r batch.Record) *tierlogv1.Record {
	pr := &tierlogv1.Record{
		Offset:      r.Offset,
		TimestampMs: r.Timestamp,
		Key:         r.Key,
		Value:       r.Value,
	}
	if len(r.Headers) > 0 {
		pr.Headers = make([]*tierlogv1.Header, len(r.Headers))
		for i, h := range r.Headers {
			pr.Headers[i] = &tierlogv1.Header{Key: h.Key, Value: h.Value}
		}
	}
	return pr
}
