package grpcapi

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/internal/batch"
)

// snapshot is what a client can see of a topic's stored data.
type snapshot struct {
	topic   *tierlogv1.TopicInfo
	batches [][][]byte // per partition, raw batches from the start
}

func takeSnapshot(t *testing.T, e *testEnv, topic string) snapshot {
	t.Helper()
	d, err := e.c.DescribeTopic(context.Background(), &tierlogv1.DescribeTopicRequest{Name: topic})
	if err != nil {
		t.Fatal(err)
	}
	s := snapshot{topic: d.Topic}
	for _, p := range d.Topic.Partitions {
		f := e.fetch(t, &tierlogv1.FetchRequest{Topic: topic, Partition: p.Partition, Raw: true, MaxBytes: 64 << 20})
		s.batches = append(s.batches, f.Batches)
	}
	return s
}

func (s snapshot) equal(o snapshot) bool {
	if !proto.Equal(s.topic, o.topic) || len(s.batches) != len(o.batches) {
		return false
	}
	for i := range s.batches {
		if len(s.batches[i]) != len(o.batches[i]) {
			return false
		}
		for j := range s.batches[i] {
			if !bytes.Equal(s.batches[i][j], o.batches[i][j]) {
				return false
			}
		}
	}
	return true
}

func buildBatch(t *testing.T, values ...string) []byte {
	t.Helper()
	var recs []batch.Record
	for _, v := range values {
		recs = append(recs, batch.Record{Timestamp: 1_700_000_000_000, Value: []byte(v)})
	}
	b, err := batch.Build(recs, batch.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBadInputIsRejectedAndChangesNothing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.createTopic(t, "t", 2, map[string]string{"max.message.bytes": "1024"})
	produceN(t, e, "t", 1, 3) // partition 0 holds offsets 0..2
	before := takeSnapshot(t, e, "t")

	corruptCRC := buildBatch(t, "a", "b")
	corruptCRC[len(corruptCRC)-1] ^= 0xff
	wrongMagic := buildBatch(t, "a")
	wrongMagic[16] = 1 // the magic byte
	truncated := buildBatch(t, "a", "b")
	truncated = truncated[:len(truncated)-3]
	lyingLength := buildBatch(t, "a")
	binary.BigEndian.PutUint32(lyingLength[8:], 1<<20)
	big := bytes.Repeat([]byte("x"), 2000)

	type call func() error
	produce := func(req *tierlogv1.ProduceRequest) call {
		return func() error { _, err := e.c.Produce(ctx, req); return err }
	}
	fetch := func(req *tierlogv1.FetchRequest) call {
		return func() error { _, err := e.c.Fetch(ctx, req); return err }
	}
	stream := func(req *tierlogv1.FetchStreamRequest) call {
		return func() error {
			s, err := e.c.FetchStream(ctx, req)
			if err != nil {
				return err
			}
			_, _, err = recvAll(s)
			return err
		}
	}
	rec := []*tierlogv1.Record{{Value: []byte("v")}}

	for _, c := range []struct {
		name  string
		call  call
		code  codes.Code
		parts []string
	}{
		{"produce unknown topic", produce(&tierlogv1.ProduceRequest{Topic: "nosuch", Records: rec}), codes.NotFound, []string{"nosuch"}},
		{"produce unknown topic with partition", produce(&tierlogv1.ProduceRequest{Topic: "nosuch", Partition: ptr[int32](0), Records: rec}), codes.NotFound, []string{"nosuch"}},
		{"fetch unknown topic", fetch(&tierlogv1.FetchRequest{Topic: "nosuch"}), codes.NotFound, []string{"nosuch"}},
		{"stream unknown topic", stream(&tierlogv1.FetchStreamRequest{Fetch: &tierlogv1.FetchRequest{Topic: "nosuch"}}), codes.NotFound, []string{"nosuch"}},
		{"list offsets unknown topic", func() error {
			_, err := e.c.ListOffsets(ctx, &tierlogv1.ListOffsetsRequest{Topic: "nosuch"})
			return err
		}, codes.NotFound, []string{"nosuch"}},
		{"produce without topic", produce(&tierlogv1.ProduceRequest{Records: rec}), codes.InvalidArgument, []string{"topic"}},

		{"produce partition past the end", produce(&tierlogv1.ProduceRequest{Topic: "t", Partition: ptr[int32](2), Records: rec}), codes.InvalidArgument, []string{"partition", "2"}},
		{"produce negative partition", produce(&tierlogv1.ProduceRequest{Topic: "t", Partition: ptr[int32](-5), Records: rec}), codes.InvalidArgument, []string{"partition", "-5"}},
		{"fetch partition past the end", fetch(&tierlogv1.FetchRequest{Topic: "t", Partition: 7}), codes.InvalidArgument, []string{"partition", "7"}},
		{"list offsets bad partition", func() error {
			_, err := e.c.ListOffsets(ctx, &tierlogv1.ListOffsetsRequest{Topic: "t", Partition: ptr[int32](9)})
			return err
		}, codes.InvalidArgument, []string{"partition", "9"}},

		{"fetch offset past the end", fetch(&tierlogv1.FetchRequest{Topic: "t", Start: offsetStart(100)}), codes.OutOfRange, []string{"100", "0 to 3"}},
		{"fetch negative offset", fetch(&tierlogv1.FetchRequest{Topic: "t", Start: offsetStart(-1)}), codes.OutOfRange, []string{"-1", "0 to 3"}},
		{"stream offset past the end", stream(&tierlogv1.FetchStreamRequest{Fetch: &tierlogv1.FetchRequest{Topic: "t", Start: offsetStart(4)}, Follow: true}), codes.OutOfRange, []string{"4", "0 to 3"}},

		{"oversized records", produce(&tierlogv1.ProduceRequest{Topic: "t", Partition: ptr[int32](0), Records: []*tierlogv1.Record{{Value: big}}}), codes.InvalidArgument, []string{"max.message.bytes", "1024"}},
		{"oversized raw batch", produce(&tierlogv1.ProduceRequest{Topic: "t", Partition: ptr[int32](0), Batch: buildBatch(t, string(big))}), codes.InvalidArgument, []string{"max.message.bytes", "1024"}},
		{"corrupt crc", produce(&tierlogv1.ProduceRequest{Topic: "t", Partition: ptr[int32](0), Batch: corruptCRC}), codes.InvalidArgument, []string{"crc"}},
		{"wrong magic", produce(&tierlogv1.ProduceRequest{Topic: "t", Partition: ptr[int32](0), Batch: wrongMagic}), codes.InvalidArgument, []string{"magic 1", "magic 2"}},
		{"truncated batch", produce(&tierlogv1.ProduceRequest{Topic: "t", Partition: ptr[int32](0), Batch: truncated}), codes.InvalidArgument, nil},
		{"batch length beyond the bytes", produce(&tierlogv1.ProduceRequest{Topic: "t", Partition: ptr[int32](0), Batch: lyingLength}), codes.InvalidArgument, nil},
		{"garbage batch", produce(&tierlogv1.ProduceRequest{Topic: "t", Partition: ptr[int32](0), Batch: []byte("not a batch")}), codes.InvalidArgument, nil},

		{"records and batch", produce(&tierlogv1.ProduceRequest{Topic: "t", Records: rec, Batch: buildBatch(t, "a")}), codes.InvalidArgument, []string{"not both"}},
		{"nothing to produce", produce(&tierlogv1.ProduceRequest{Topic: "t"}), codes.InvalidArgument, []string{"records", "batch"}},
		{"unknown compression", produce(&tierlogv1.ProduceRequest{Topic: "t", Records: rec, Compression: "brotli"}), codes.InvalidArgument, []string{"brotli", "zstd"}},
		{"negative timestamp", produce(&tierlogv1.ProduceRequest{Topic: "t", Records: []*tierlogv1.Record{{Value: []byte("v"), TimestampMs: -5}}}), codes.InvalidArgument, []string{"-5"}},

		{"max_bytes too large", fetch(&tierlogv1.FetchRequest{Topic: "t", MaxBytes: 1 << 30}), codes.InvalidArgument, []string{"max_bytes", "67108864"}},
		{"negative max_records", fetch(&tierlogv1.FetchRequest{Topic: "t", MaxRecords: -1}), codes.InvalidArgument, []string{"max_records"}},
		{"negative fetch timestamp", fetch(&tierlogv1.FetchRequest{Topic: "t", Start: &tierlogv1.FetchRequest_TimestampMs{TimestampMs: -2}}), codes.InvalidArgument, []string{"-2"}},
		{"stream without fetch", stream(&tierlogv1.FetchStreamRequest{Follow: true}), codes.InvalidArgument, []string{"fetch"}},
		{"stream negative limit", stream(&tierlogv1.FetchStreamRequest{Fetch: &tierlogv1.FetchRequest{Topic: "t"}, Limit: -1}), codes.InvalidArgument, []string{"limit"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantStatus(t, c.call(), c.code, c.parts...)
			if after := takeSnapshot(t, e, "t"); !after.equal(before) {
				t.Errorf("rejected request changed the topic:\nbefore %v\nafter  %v", before.topic, after.topic)
			}
		})
	}

	// The log still accepts good input after all that, at the next offset.
	resp := e.produce(t, &tierlogv1.ProduceRequest{Topic: "t", Partition: ptr[int32](0), Batch: buildBatch(t, "ok")})
	if resp.BaseOffset != 3 {
		t.Errorf("produce after rejections got offset %d, want 3", resp.BaseOffset)
	}
}
