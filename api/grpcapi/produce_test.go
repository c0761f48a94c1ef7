package grpcapi

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/internal/batch"
)

var codecs = []string{"none", "gzip", "snappy", "lz4", "zstd"}

// sampleRecords covers what a record can carry: null and empty keys and
// values, repeated header keys, a null header value, explicit timestamps.
func sampleRecords() []*tierlogv1.Record {
	return []*tierlogv1.Record{
		{Key: []byte("k0"), Value: []byte("v0"), TimestampMs: 1_700_000_000_000},
		{Key: nil, Value: []byte("null key"), TimestampMs: 1_700_000_000_001},
		{Key: []byte{}, Value: []byte{}, TimestampMs: 1_700_000_000_002},
		{Key: []byte("tombstone"), Value: nil, TimestampMs: 1_700_000_000_003},
		{Key: []byte("h"), Value: bytes.Repeat([]byte("compressible "), 100), TimestampMs: 1_700_000_000_004,
			Headers: []*tierlogv1.Header{
				{Key: "a", Value: []byte("1")},
				{Key: "a", Value: []byte("2")},
				{Key: "null", Value: nil},
				{Key: "empty", Value: []byte{}},
			}},
	}
}

// sameRecord compares a fetched record with the produced one, including the
// null-versus-empty distinction proto.Equal keeps for optional bytes.
func sameRecord(t *testing.T, got, want *tierlogv1.Record, offset int64) {
	t.Helper()
	w := proto.Clone(want).(*tierlogv1.Record)
	w.Offset = offset
	if !proto.Equal(got, w) {
		t.Errorf("record at offset %d:\n got %v\nwant %v", offset, got, w)
	}
	if (got.Key == nil) != (want.Key == nil) || (got.Value == nil) != (want.Value == nil) {
		t.Errorf("record at offset %d: null/empty key or value not kept: got key nil=%v value nil=%v", offset, got.Key == nil, got.Value == nil)
	}
}

func TestProduceFetchRecordsAllCodecs(t *testing.T) {
	e := newEnv(t)
	for _, codec := range codecs {
		t.Run(codec, func(t *testing.T) {
			topic := "records-" + codec
			e.createTopic(t, topic, 1, nil)
			recs := sampleRecords()
			// Two requests, so the second batch's offsets follow the first.
			for round := range 2 {
				resp := e.produce(t, &tierlogv1.ProduceRequest{Topic: topic, Partition: ptr[int32](0), Records: recs, Compression: codec})
				base := int64(round * len(recs))
				if resp.BaseOffset != base || resp.LastOffset != base+int64(len(recs))-1 || resp.Partition != 0 {
					t.Fatalf("round %d: produce gave partition %d offsets %d..%d, want 0 and %d..%d", round, resp.Partition, resp.BaseOffset, resp.LastOffset, base, base+int64(len(recs))-1)
				}
				if resp.Durability != tierlogv1.Durability_DURABILITY_PAGE_CACHE {
					t.Errorf("durability %v with flush.policy=os, want PAGE_CACHE", resp.Durability)
				}
				if resp.LogAppendTimeMs <= 0 {
					t.Errorf("log_append_time_ms %d, want the broker's clock", resp.LogAppendTimeMs)
				}
			}
			f := e.fetch(t, &tierlogv1.FetchRequest{Topic: topic, Start: &tierlogv1.FetchRequest_Earliest{Earliest: true}})
			if len(f.Records) != 2*len(recs) {
				t.Fatalf("fetched %d records, want %d", len(f.Records), 2*len(recs))
			}
			for i, r := range f.Records {
				sameRecord(t, r, recs[i%len(recs)], int64(i))
			}
			if f.NextOffset != 10 || f.LogStartOffset != 0 || f.LogEndOffset != 10 || f.HighWatermark != 10 {
				t.Errorf("fetch bounds next=%d start=%d end=%d hwm=%d, want 10, 0, 10, 10", f.NextOffset, f.LogStartOffset, f.LogEndOffset, f.HighWatermark)
			}
			// The batch on disk carries the requested codec.
			raw := e.fetch(t, &tierlogv1.FetchRequest{Topic: topic, Raw: true})
			for _, b := range raw.Batches {
				h, err := batch.Peek(b)
				if err != nil {
					t.Fatalf("stored batch: %v", err)
				}
				if h.Codec().String() != codec {
					t.Errorf("stored batch codec %s, want %s", h.Codec(), codec)
				}
			}
		})
	}
}

func TestProduceRawBatchAllCodecs(t *testing.T) {
	e := newEnv(t)
	for _, name := range codecs {
		t.Run(name, func(t *testing.T) {
			codec, err := batch.ParseCodec(name)
			if err != nil {
				t.Fatal(err)
			}
			topic := "raw-" + name
			e.createTopic(t, topic, 1, nil)
			// A first record so the raw batch lands at a non-zero offset.
			e.produce(t, &tierlogv1.ProduceRequest{Topic: topic, Records: []*tierlogv1.Record{{Value: []byte("first")}}})
			var in []batch.Record
			for i := range 20 {
				in = append(in, batch.Record{
					Timestamp: 1_700_000_000_000 + int64(i),
					Key:       fmt.Appendf(nil, "key-%d", i),
					Value:     bytes.Repeat([]byte{byte('a' + i)}, 50),
					Headers:   []batch.RecordHeader{{Key: "i", Value: fmt.Append(nil, i)}},
				})
			}
			built, err := batch.Build(in, batch.BuildOptions{Codec: codec})
			if err != nil {
				t.Fatal(err)
			}
			resp := e.produce(t, &tierlogv1.ProduceRequest{Topic: topic, Partition: ptr[int32](0), Batch: built})
			if resp.BaseOffset != 1 || resp.LastOffset != 20 {
				t.Fatalf("raw produce offsets %d..%d, want 1..20", resp.BaseOffset, resp.LastOffset)
			}

			// Raw fetch returns the batch as sent: everything from the
			// attributes on (the CRC-covered part) is byte-identical.
			raw := e.fetch(t, &tierlogv1.FetchRequest{Topic: topic, Start: offsetStart(1), Raw: true})
			if len(raw.Batches) != 1 || len(raw.Records) != 0 {
				t.Fatalf("raw fetch gave %d batches and %d records, want 1 batch", len(raw.Batches), len(raw.Records))
			}
			got := raw.Batches[0]
			if !bytes.Equal(got[21:], built[21:]) || len(got) != len(built) {
				t.Errorf("stored batch differs from the produced one after the CRC field")
			}
			if h, _ := batch.Peek(got); h.BaseOffset != 1 || h.Codec() != codec {
				t.Errorf("stored batch base offset %d codec %s, want 1 and %s", h.BaseOffset, h.Codec(), codec)
			}
			if raw.NextOffset != 21 {
				t.Errorf("raw next_offset %d, want 21", raw.NextOffset)
			}

			// Decoded fetch returns the records with their offsets.
			f := e.fetch(t, &tierlogv1.FetchRequest{Topic: topic, Start: offsetStart(1)})
			if len(f.Records) != len(in) {
				t.Fatalf("decoded %d records, want %d", len(f.Records), len(in))
			}
			for i, r := range f.Records {
				w := in[i]
				if r.Offset != int64(i+1) || r.TimestampMs != w.Timestamp || !bytes.Equal(r.Key, w.Key) || !bytes.Equal(r.Value, w.Value) ||
					len(r.Headers) != 1 || r.Headers[0].Key != "i" || !bytes.Equal(r.Headers[0].Value, w.Headers[0].Value) {
					t.Errorf("record %d: got %v, want offset %d and %+v", i, r, i+1, w)
				}
			}
		})
	}
}

func TestProducePicksPartition(t *testing.T) {
	e := newEnv(t)
	e.createTopic(t, "multi", 4, nil)
	// A keyed request lands on one partition, the same every time, whether the
	// partition is unset or -1.
	first := e.produce(t, &tierlogv1.ProduceRequest{Topic: "multi", Records: []*tierlogv1.Record{{Key: []byte("user-42"), Value: []byte("a")}, {Key: []byte("other"), Value: []byte("b")}}})
	if first.LastOffset != first.BaseOffset+1 {
		t.Errorf("two records got offsets %d..%d, want one batch of two", first.BaseOffset, first.LastOffset)
	}
	for range 5 {
		r := e.produce(t, &tierlogv1.ProduceRequest{Topic: "multi", Partition: ptr[int32](-1), Records: []*tierlogv1.Record{{Key: []byte("user-42"), Value: []byte("c")}}})
		if r.Partition != first.Partition {
			t.Fatalf("key user-42 went to partition %d, earlier to %d", r.Partition, first.Partition)
		}
	}
	// Null keys spread round-robin: eight requests reach every partition.
	seen := map[int32]bool{}
	for range 8 {
		r := e.produce(t, &tierlogv1.ProduceRequest{Topic: "multi", Records: []*tierlogv1.Record{{Value: []byte("x")}}})
		seen[r.Partition] = true
	}
	if len(seen) != 4 {
		t.Errorf("null-key records reached partitions %v, want all 4", seen)
	}
}

func TestProduceZeroTimestampIsServerTime(t *testing.T) {
	e := newEnv(t)
	e.createTopic(t, "ts", 1, nil)
	before := time.Now().Add(-time.Hour).UnixMilli()
	e.produce(t, &tierlogv1.ProduceRequest{Topic: "ts", Records: []*tierlogv1.Record{{Value: []byte("now")}}})
	f := e.fetch(t, &tierlogv1.FetchRequest{Topic: "ts"})
	if len(f.Records) != 1 {
		t.Fatalf("fetched %d records, want 1", len(f.Records))
	}
	// The server's clock, not 0. The hour of slack keeps a clock step during
	// the test from failing it.
	if ts := f.Records[0].TimestampMs; ts < before {
		t.Errorf("timestamp %d, want the server's time (after %d)", ts, before)
	}
}

func TestProduceFsyncedDurability(t *testing.T) {
	e := newEnv(t)
	e.createTopic(t, "synced", 1, map[string]string{"flush.policy": "always"})
	resp := e.produce(t, &tierlogv1.ProduceRequest{Topic: "synced", Records: []*tierlogv1.Record{{Value: []byte("v")}}})
	if resp.Durability != tierlogv1.Durability_DURABILITY_FSYNCED {
		t.Errorf("durability %v with flush.policy=always, want FSYNCED", resp.Durability)
	}
}

// Kafka header keys are bytes on the wire; a Kafka producer may send one
// that is not UTF-8, which a proto3 string cannot carry. Such a record is
// still fetched (its key in key_bytes), byte for byte, and produced back.
func TestHeaderKeyNotUTF8(t *testing.T) {
	e := newEnv(t)
	e.createTopic(t, "bin", 1, nil)
	keys := []string{"\xff\xfe", "ok", "", "caf\xc3"}
	var hs []batch.RecordHeader
	for i, k := range keys {
		hs = append(hs, batch.RecordHeader{Key: k, Value: fmt.Append(nil, i)})
	}
	built, err := batch.Build([]batch.Record{{Timestamp: 1_700_000_000_000, Value: []byte("v"), Headers: hs}}, batch.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.produce(t, &tierlogv1.ProduceRequest{Topic: "bin", Partition: ptr[int32](0), Batch: built})
	check := func(f *tierlogv1.FetchResponse, from int64) {
		t.Helper()
		if len(f.Records) != 1 || f.Records[0].Offset != from || len(f.Records[0].Headers) != len(keys) {
			t.Fatalf("fetched %v, want one record with %d headers at %d", f.Records, len(keys), from)
		}
		for i, h := range f.Records[0].Headers {
			got := h.Key
			if h.KeyBytes != nil {
				got = string(h.KeyBytes)
				if h.Key != "" {
					t.Errorf("header %d: key %q beside key_bytes", i, h.Key)
				}
			}
			if got != keys[i] || !bytes.Equal(h.Value, fmt.Append(nil, i)) {
				t.Errorf("header %d: key %q value %q, want %q %q", i, got, h.Value, keys[i], fmt.Append(nil, i))
			}
		}
	}
	f := e.fetch(t, &tierlogv1.FetchRequest{Topic: "bin", Start: offsetStart(0)})
	check(f, 0)
	// Produced back as fetched: the same header keys.
	e.produce(t, &tierlogv1.ProduceRequest{Topic: "bin", Partition: ptr[int32](0), Records: f.Records})
	check(e.fetch(t, &tierlogv1.FetchRequest{Topic: "bin", Start: offsetStart(1)}), 1)
}
