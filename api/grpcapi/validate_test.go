package grpcapi

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/tierlog/tierlog/api/tierlogv1"
)

// On a topic with message.timestamp.type=LogAppendTime, decoded fetches
// give every record the broker's append time, not the producer's.
func TestLogAppendTimeTopicServesAppendTime(t *testing.T) {
	e := newEnv(t)
	e.createTopic(t, "lat", 1, map[string]string{"message.timestamp.type": "LogAppendTime"})
	recs := []*tierlogv1.Record{{Value: []byte("a"), TimestampMs: 1000}, {Value: []byte("b"), TimestampMs: 2000}}
	for _, codec := range []string{"none", "zstd"} {
		resp := e.produce(t, &tierlogv1.ProduceRequest{Topic: "lat", Partition: ptr[int32](0), Records: recs, Compression: codec})
		got := e.fetch(t, &tierlogv1.FetchRequest{Topic: "lat", Partition: 0, Start: &tierlogv1.FetchRequest_Offset{Offset: resp.BaseOffset}, MaxRecords: 2})
		if len(got.Records) != 2 {
			t.Fatalf("%s: fetched %d records, want 2", codec, len(got.Records))
		}
		for _, r := range got.Records {
			if r.TimestampMs != resp.LogAppendTimeMs {
				t.Errorf("%s: record %d timestamp %d, want the append time %d", codec, r.Offset, r.TimestampMs, resp.LogAppendTimeMs)
			}
		}
	}
	_, err := e.c.CreateTopic(context.Background(), &tierlogv1.CreateTopicRequest{Name: "bad", Partitions: 1,
		Config: map[string]string{"message.timestamp.type": "BrokerTime"}})
	wantStatus(t, err, codes.InvalidArgument, "message.timestamp.type", "CreateTime", "LogAppendTime")
}

// Batches Kafka's validator refuses come back as InvalidArgument naming the
// problem.
func TestProduceRefusesInvalidBatches(t *testing.T) {
	e := newEnv(t)
	e.createTopic(t, "t", 1, nil)
	fix := func(b []byte) []byte {
		binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)))
		return b
	}
	gap := buildBatch(t, "a", "b")
	binary.BigEndian.PutUint32(gap[23:], 1<<30) // last offset delta
	control := buildBatch(t, "a")
	control[22] |= 0x20
	for _, c := range []struct {
		name string
		b    []byte
		want string
	}{
		{"offset gap", fix(gap), "last offset delta"},
		{"control batch", fix(control), "control batch"},
	} {
		_, err := e.c.Produce(context.Background(), &tierlogv1.ProduceRequest{Topic: "t", Partition: ptr[int32](0), Batch: c.b})
		wantStatus(t, err, codes.InvalidArgument, c.want)
	}
}
