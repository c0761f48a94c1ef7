package grpcapi

import (
	"context"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/internal/batch"
)

// rawCodec sends pre-encoded request bytes as they are, so a test can send
// a huge request without building millions of records client-side.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }
func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error { return nil }

// emptyRecordsRequest encodes a ProduceRequest of n empty records.
func emptyRecordsRequest(topic string, n int) []byte {
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	b = protowire.AppendString(b, topic)
	for range n {
		b = append(b, 3<<3|2, 0) // records: an empty Record
	}
	return b
}

// TestProduceCheckedBeforeDecoding: a Produce of millions of empty records
// is refused from a scan of its bytes (missing topic: NOT_FOUND; too many
// records: INVALID_ARGUMENT) without the server decoding the records,
// which costs ~130 bytes each (4 M records: ~500 MB).
func TestProduceCheckedBeforeDecoding(t *testing.T) {
	e := newEnv(t)
	e.createTopic(t, "t", 1, nil)
	const n = 4 << 20
	for _, tc := range []struct {
		topic string
		code  codes.Code
		want  string
	}{
		{"missing", codes.NotFound, "missing"},
		{"t", codes.InvalidArgument, "at most 131072"},
	} {
		req := emptyRecordsRequest(tc.topic, n)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		err := e.conn.Invoke(context.Background(), tierlogv1.TierLog_Produce_FullMethodName, req, new(tierlogv1.ProduceResponse),
			grpc.ForceCodecV2(rawCodec{}))
		runtime.ReadMemStats(&after)
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("produce of %d records to %q: %v, want %v naming %q", n, tc.topic, err, tc.code, tc.want)
		}
		// The request is 8 MiB on the wire; decoding its records would
		// allocate ~500 MB.
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 100<<20 {
			t.Errorf("produce of %d records to %q allocated %d MB: records were decoded before the check", n, tc.topic, alloc>>20)
		}
	}
	// A request within the limits still works.
	if _, err := e.c.Produce(context.Background(), &tierlogv1.ProduceRequest{Topic: "t", Records: []*tierlogv1.Record{{Value: []byte("v")}}}); err != nil {
		t.Fatal(err)
	}
}

// TestProduceCheckDoesNotOversizeHeaders: the pre-decoding check sizes a
// request's records from their wire bytes; it must not count more than
// the batch will hold, or it refuses a valid request. A record of 200,000
// small headers builds a batch of ~800 KB, within the default
// max.message.bytes, but its headers take twice that on the wire (tags and
// lengths of each Header message).
func TestProduceCheckDoesNotOversizeHeaders(t *testing.T) {
	e := newEnv(t)
	e.createTopic(t, "t", 1, nil)
	const n = 200_000
	hdrs := make([]*tierlogv1.Header, n)
	bhdrs := make([]batch.RecordHeader, n)
	for i := range hdrs {
		hdrs[i] = &tierlogv1.Header{Key: "k", Value: []byte("v")}
		bhdrs[i] = batch.RecordHeader{Key: "k", Value: []byte("v")}
	}
	built, err := batch.Build([]batch.Record{{Timestamp: 1, Value: []byte("v"), Headers: bhdrs}}, batch.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const maxMessageBytes = 1048588 // the default
	if len(built) > maxMessageBytes {
		t.Fatalf("test batch is %d bytes, want at most %d", len(built), maxMessageBytes)
	}
	_, err = e.c.Produce(context.Background(), &tierlogv1.ProduceRequest{Topic: "t", Partition: new(int32),
		Records: []*tierlogv1.Record{{TimestampMs: 1, Value: []byte("v"), Headers: hdrs}}})
	if err != nil {
		t.Fatalf("produce of one record whose batch is %d bytes (max.message.bytes %d): %v", len(built), maxMessageBytes, err)
	}
	f := e.fetch(t, &tierlogv1.FetchRequest{Topic: "t", Start: offsetStart(0), MaxBytes: 64 << 20})
	if len(f.Records) != 1 || len(f.Records[0].Headers) != n {
		t.Fatalf("fetched %d records, want 1 with %d headers", len(f.Records), n)
	}
}
