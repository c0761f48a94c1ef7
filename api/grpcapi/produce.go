package grpcapi

import (
	"context"
	"time"

	"github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/batch"
)

// Produce appends the request's records (built into one batch) or its raw
// batch to one partition.
func (s *Server) Produce(ctx context.Context, req *tierlogv1.ProduceRequest) (*tierlogv1.ProduceResponse, error) {
	if err := produceRejected(req); err != nil {
		return nil, err
	}
	if req.GetTopic() == "" {
		return nil, invalidf("topic is required")
	}
	raw, err := s.produceBatch(req)
	if err != nil {
		return nil, err
	}
	part, err := s.producePartition(req)
	if err != nil {
		return nil, s.statusFor("Produce", err)
	}
	// In a cluster a gRPC produce is Kafka's acks=all: answered once on
	// the in-sync replicas (DURABILITY_REPLICATED).
	pa, epoch, err := s.b.AppendAcks(req.GetTopic(), part, raw, -1)
	if err != nil {
		return nil, s.statusFor("Produce", err)
	}
	res, err := pa.Wait()
	if err != nil {
		return nil, s.statusFor("Produce", err)
	}
	durability := durabilityProto(res.Durability)
	if s.b.Replicated(req.GetTopic()) {
		if err := s.b.WaitReplicated(ctx, req.GetTopic(), part, res.LastOffset+1, epoch); err != nil {
			return nil, s.statusFor("Produce", err)
		}
		durability = tierlogv1.Durability_DURABILITY_REPLICATED
	}
	return &tierlogv1.ProduceResponse{
		Topic:           req.GetTopic(),
		Partition:       part,
		BaseOffset:      res.BaseOffset,
		LastOffset:      res.LastOffset,
		LogAppendTimeMs: res.LogAppendTime,
		Durability:      durability,
	}, nil
}

// produceBatch returns the bytes to append: the caller's raw batch as it is
// (the broker validates it), or a batch built from the records.
func (s *Server) produceBatch(req *tierlogv1.ProduceRequest) ([]byte, error) {
	recs, raw := req.GetRecords(), req.GetBatch()
	switch {
	case len(recs) > 0 && len(raw) > 0:
		return nil, invalidf("set either records or batch, not both (got %d records and a %d-byte batch)", len(recs), len(raw))
	case len(raw) > 0:
		return raw, nil
	case len(recs) == 0:
		return nil, invalidf("no records: set records (one or more) or batch (a RecordBatch v2)")
	case len(recs) > MaxProduceRecords:
		return nil, invalidf("%d records in one request: at most %d (send several requests)", len(recs), MaxProduceRecords)
	}
	codec := batch.None
	if c := req.GetCompression(); c != "" {
		var err error
		if codec, err = batch.ParseCodec(c); err != nil {
			return nil, invalidf("compression: %v", err)
		}
	}
	now := time.Now().UnixMilli()
	brecs := make([]batch.Record, len(recs))
	for i, r := range recs {
		ts := r.GetTimestampMs()
		if ts == 0 {
			ts = now
		}
		if ts < 0 {
			return nil, invalidf("record %d: timestamp_ms %d is negative (use Unix milliseconds, or 0 for the server's time)", i, ts)
		}
		var hdrs []batch.RecordHeader
		if len(r.GetHeaders()) > 0 {
			hdrs = make([]batch.RecordHeader, len(r.GetHeaders()))
			for j, h := range r.GetHeaders() {
				key, err := HeaderKey(h)
				if err != nil {
					return nil, invalidf("record %d, header %d: %v", i, j, err)
				}
				hdrs[j] = batch.RecordHeader{Key: key, Value: h.Value}
			}
		}
		brecs[i] = batch.Record{
			Offset:    int64(i),
			Timestamp: ts,
			// proto3 optional bytes keep presence as nil-ness, which is
			// exactly Kafka's null versus empty.
			Key:     r.Key,
			Value:   r.Value,
			Headers: hdrs,
		}
	}
	b, err := batch.Build(brecs, batch.BuildOptions{Codec: codec})
	if err != nil {
		return nil, s.statusFor("Produce", err)
	}
	return b, nil
}

// producePartition returns the request's partition, or picks one when it is
// unset or -1: by the first record's key, round-robin for a null key or a raw
// batch. Any other negative partition goes to the broker, which rejects it
// with the valid range.
func (s *Server) producePartition(req *tierlogv1.ProduceRequest) (int32, error) {
	if req.Partition != nil && req.GetPartition() != -1 {
		return req.GetPartition(), nil
	}
	var key []byte
	if recs := req.GetRecords(); len(recs) > 0 {
		key = recs[0].Key
	}
	return s.b.PickPartition(req.GetTopic(), key)
}

func durabilityProto(d hot.Durability) tierlogv1.Durability {
	switch d {
	case hot.DurabilityPageCache:
		return tierlogv1.Durability_DURABILITY_PAGE_CACHE
	case hot.DurabilityFsynced:
		return tierlogv1.Durability_DURABILITY_FSYNCED
	}
	return tierlogv1.Durability_DURABILITY_UNSPECIFIED
}
