package grpcapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/fetchbudget"
)

const (
	// defaultMaxBytes is used when a fetch sets no max_bytes. It stays well
	// under gRPC's default 4 MiB receive limit so default clients work.
	defaultMaxBytes = 1 << 20
	// maxMaxBytes bounds max_bytes so one request cannot make the server
	// hold an arbitrary amount of memory.
	maxMaxBytes = 64 << 20
	// recordOverhead is what one decoded record costs in memory beside its
	// key, value and headers: the tierlogv1.Record struct (~130 bytes), its
	// pointer in the response and its encoding (offset, timestamp, tags and
	// lengths). Sizing decoded responses by it bounds their memory by
	// max_bytes, however small the records.
	recordOverhead = 160
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
		return p, invalidf("topic is required")
	}
	if p.maxBytes < 0 || p.maxBytes > maxMaxBytes {
		return p, invalidf("max_bytes %d out of range: valid are 0 (default %d) to %d", p.maxBytes, defaultMaxBytes, maxMaxBytes)
	}
	if p.maxBytes == 0 {
		p.maxBytes = defaultMaxBytes
	}
	if p.maxRecords < 0 {
		return p, invalidf("max_records %d is negative: use 0 for no limit or a positive count", p.maxRecords)
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
			return 0, invalidf("timestamp_ms %d is negative: use Unix milliseconds, or earliest/latest", st.TimestampMs)
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
	p = s.fit(p, 1)
	h, err := s.reserve(ctx, s.need(p))
	if err != nil {
		return nil, s.statusFor("Fetch", err)
	}
	// Released when the handler returns: gRPC then encodes the response
	// and queues it on the connection, which is not counted.
	defer h.Release()
	resp, _, err := s.fetchOnce(ctx, p, off, p.maxRecords, h)
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
	// The stream takes two responses' worth of the budget while it sends:
	// one for the response being built and one for the previous, which may
	// still sit in the connection's buffers when its client reads slowly
	// (Send returns once the message is queued; the next Send blocks until
	// it has gone). Both together take at most one share of the budget
	// (fit), so a stream whose client stopped reading holds only that. It
	// takes both at once, so it never waits for budget while holding some
	// (no deadlock), and gives them back when it is caught up and waits for
	// records.
	p = s.fit(p, 2)
	var h *fetchbudget.Hold
	defer func() {
		if h != nil {
			h.Release()
		}
	}()
	var sent int64
	for {
		if h == nil {
			if h, err = s.reserve(ctx, 2*s.need(p)); err != nil {
				return s.statusFor("FetchStream", err)
			}
		}
		per := p.maxRecords
		if limit > 0 {
			if rem := limit - sent; per == 0 || rem < int64(per) {
				per = int(rem)
			}
		}
		resp, n, err := s.fetchOnce(ctx, p, off, per, h)
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
		h.Release()
		h = nil
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
// from the batches' offset ranges). Decoding a compressed batch takes its
// decoder's memory from the fetch budget on top of h while it runs.
func (s *Server) fetchOnce(ctx context.Context, p fetchParams, off int64, limit int, h *fetchbudget.Hold) (*tierlogv1.FetchResponse, int, error) {
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
		bh, err := batch.Peek(buf)
		if err == nil && bh.Size() > len(buf) {
			err = batch.ErrShortBatch
		}
		if err != nil {
			if n == 0 && resp.NextOffset == off {
				return nil, 0, status.Errorf(codes.Internal, "%s/%d: stored batch at offset %d cannot be read: %v", p.topic, p.partition, resp.NextOffset, err)
			}
			break // serve what was readable; the next fetch reports the failure
		}
		whole := buf[:bh.Size()]
		buf = buf[bh.Size():]
		if bh.NextOffset() <= off {
			continue // wholly below the requested offset
		}
		if p.raw {
			resp.Batches = append(resp.Batches, whole)
			n += int(bh.NextOffset() - max(bh.BaseOffset, off))
			resp.NextOffset = bh.NextOffset()
			if limit > 0 && n >= limit {
				break
			}
			continue
		}
		full := false
		if !bh.Control() { // transaction markers are not user records
			// Records of a compressed batch alias the decoder's buffer:
			// copy them. The decoder's memory comes from the budget; when
			// it is not free at once and the response already has
			// records, the response ends here rather than wait holding
			// them.
			compressed := bh.Codec() != batch.None
			var took int64
			if compressed {
				mem := int64(batch.EachMemory(whole))
				if n > 0 {
					var ok bool
					if took, ok = h.TryGrow(mem); !ok {
						break
					}
				} else if took, err = h.Grow(ctx, mem); err != nil {
					return nil, 0, err
				}
			}
			_, err = batch.DecodeOptions{}.Each(whole, func(r batch.Record) bool {
				if r.Offset < off {
					return true
				}
				rsize := recordSize(r)
				if n > 0 && (size+rsize > p.maxBytes || (limit > 0 && n >= limit)) {
					full = true
					return false // stop decoding at the response's budget
				}
				if compressed {
					r = cloneRecord(r)
				}
				resp.Records = append(resp.Records, RecordProto(r))
				size += rsize
				n++
				resp.NextOffset = r.Offset + 1
				return true
			})
			h.Shrink(took)
			if err != nil {
				if n == 0 && resp.NextOffset == off {
					return nil, 0, status.Errorf(codes.Internal, "%s/%d: stored batch at offset %d cannot be read: %v", p.topic, p.partition, resp.NextOffset, err)
				}
				break
			}
		}
		if full {
			break
		}
		resp.NextOffset = max(resp.NextOffset, bh.NextOffset())
		if limit > 0 && n >= limit {
			break
		}
	}
	s.recordsOut.WithLabelValues(p.topic).Add(float64(n))
	return resp, n, nil
}

// cloneRecord copies r's bytes out of the buffer they alias.
func cloneRecord(r batch.Record) batch.Record {
	r.Key, r.Value = bytes.Clone(r.Key), bytes.Clone(r.Value)
	if len(r.Headers) > 0 {
		hs := make([]batch.RecordHeader, len(r.Headers))
		for i, h := range r.Headers {
			hs[i] = batch.RecordHeader{Key: h.Key, Value: bytes.Clone(h.Value)}
		}
		r.Headers = hs
	}
	return r
}

func recordSize(r batch.Record) int {
	n := recordOverhead + len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += recordOverhead/4 + len(h.Key) + len(h.Value)
	}
	return n
}

// RecordProto is a decoded record as the API returns it (bucket consume
// prints records it decoded itself in the same form). It aliases r's bytes.
func RecordProto(r batch.Record) *tierlogv1.Record {
	pr := &tierlogv1.Record{
		Offset:      r.Offset,
		TimestampMs: r.Timestamp,
		Key:         r.Key,
		Value:       r.Value,
	}
	if len(r.Headers) > 0 {
		pr.Headers = make([]*tierlogv1.Header, len(r.Headers))
		for i, h := range r.Headers {
			pr.Headers[i] = HeaderProto(h.Key, h.Value)
		}
	}
	return pr
}

// HeaderProto is a record header as the API carries it: the key in key,
// or in key_bytes when it is not valid UTF-8 (a proto3 string must be).
func HeaderProto(key string, value []byte) *tierlogv1.Header {
	if utf8.ValidString(key) {
		return &tierlogv1.Header{Key: key, Value: value}
	}
	return &tierlogv1.Header{KeyBytes: []byte(key), Value: value}
}

// HeaderKey is the key a header carries (see HeaderProto). Both key and
// key_bytes set is an error: which one is meant?
func HeaderKey(h *tierlogv1.Header) (string, error) {
	if h.KeyBytes == nil {
		return h.GetKey(), nil
	}
	if h.GetKey() != "" {
		return "", fmt.Errorf("a header sets both key %q and key_bytes", h.GetKey())
	}
	return string(h.KeyBytes), nil
}
