package kafka

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/cold/filebucket"
)

func listReq(topic string, part int32, ts int64, epoch int32) *kmsg.ListOffsetsRequest {
	req := kmsg.NewPtrListOffsetsRequest()
	req.ReplicaID = -1
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewListOffsetsRequestTopicPartition()
	rp.Partition, rp.Timestamp, rp.CurrentLeaderEpoch = part, ts, epoch
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	return req
}

// ListOffsets: earliest is the log start with the bucket's history,
// latest the end, a timestamp the first record at or after it - in a
// tiered segment (local copy deleted) or in the hot log, to the record
// within its batch - and -3 the record with the largest timestamp.
func TestListOffsets(t *testing.T) {
	bk, err := filebucket.New(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	e := startFetchEnv(t, bk, nil)
	if _, err := e.b.CreateTopic("o", 1, map[string]string{"segment.bytes": "4096", "local.retention.bytes": "0"}); err != nil {
		t.Fatal(err)
	}
	const ts0 = 1_700_000_000_000 // record at offset o has timestamp ts0+o
	tiered := e.appendBatches(t, "o", 0, 20, 5, 100, ts0)
	if start := e.tier(t, "o", 0); start != tiered {
		t.Fatalf("local start %d after tiering, want %d", start, tiered)
	}
	end := e.appendBatches(t, "o", 0, 20, 5, 100, ts0)
	c := e.client(t)
	for _, tc := range []struct {
		name   string
		ts     int64
		offset int64
		recTs  int64
	}{
		{"earliest (bucket included)", -2, 0, -1},
		{"latest", -1, end, -1},
		{"timestamp in a tiered segment, mid batch", ts0 + 37, 37, ts0 + 37},
		{"timestamp before everything", 0, 0, ts0},
		{"timestamp in the hot log", ts0 + 152, 152, ts0 + 152},
		{"timestamp after everything", ts0 + 10_000, -1, -1},
		{"max timestamp", -3, end - 1, ts0 + end - 1},
	} {
		resp := request[*kmsg.ListOffsetsResponse](t, c, listReq("o", 0, tc.ts, -1))
		rp := resp.Topics[0].Partitions[0]
		if rp.ErrorCode != 0 || rp.Offset != tc.offset || rp.Timestamp != tc.recTs || rp.LeaderEpoch != 0 {
			t.Errorf("%s (%d): error %d, offset %d, timestamp %d, epoch %d; want offset %d, timestamp %d, epoch 0",
				tc.name, tc.ts, rp.ErrorCode, rp.Offset, rp.Timestamp, rp.LeaderEpoch, tc.offset, tc.recTs)
		}
	}
	if rp := request[*kmsg.ListOffsetsResponse](t, c, listReq("o", 0, -1, 1)).Topics[0].Partitions[0]; rp.ErrorCode != kerr.UnknownLeaderEpoch.Code {
		t.Errorf("current leader epoch 1 of a partition at epoch 0: error %d, want UNKNOWN_LEADER_EPOCH", rp.ErrorCode)
	}
	// Straight to the node: the client would refuse a partition it does
	// not know before sending.
	raw, err := c.Broker(0).Request(context.Background(), listReq("o", 5, -1, -1))
	if err != nil {
		t.Fatal(err)
	}
	if rp := raw.(*kmsg.ListOffsetsResponse).Topics[0].Partitions[0]; rp.ErrorCode != kerr.UnknownTopicOrPartition.Code {
		t.Errorf("partition 5 of a 1-partition topic: error %d, want UNKNOWN_TOPIC_OR_PARTITION", rp.ErrorCode)
	}
}

// OffsetForLeaderEpoch: the current epoch ends at the log end; an earlier
// one at the first offset of the next epoch (found in the batch headers);
// a later one is unknown; a stale current epoch is fenced.
func TestOffsetForLeaderEpoch(t *testing.T) {
	e := startFetchEnv(t, nil, nil)
	if _, err := e.b.CreateTopic("ep", 1, nil); err != nil {
		t.Fatal(err)
	}
	p, err := e.b.Partition("ep", 0)
	if err != nil {
		t.Fatal(err)
	}
	epoch1 := e.appendBatches(t, "ep", 0, 7, 3, 10, 1000) // epoch 0
	if err := p.Log().SetLeaderEpoch(2); err != nil {
		t.Fatal(err)
	}
	end := e.appendBatches(t, "ep", 0, 4, 3, 10, 1000) // epoch 2
	c := e.client(t)
	ask := func(epoch, current int32) kmsg.OffsetForLeaderEpochResponseTopicPartition {
		req := kmsg.NewPtrOffsetForLeaderEpochRequest()
		req.ReplicaID = -1
		rt := kmsg.NewOffsetForLeaderEpochRequestTopic()
		rt.Topic = "ep"
		rt.Partitions = []kmsg.OffsetForLeaderEpochRequestTopicPartition{{Partition: 0, LeaderEpoch: epoch, CurrentLeaderEpoch: current}}
		req.Topics = append(req.Topics, rt)
		return request[*kmsg.OffsetForLeaderEpochResponse](t, c, req).Topics[0].Partitions[0]
	}
	for _, tc := range []struct {
		epoch, current int32
		code           int16
		wantEpoch      int32
		wantEnd        int64
	}{
		{2, 2, 0, 2, end},
		{0, 2, 0, 0, epoch1},
		{1, -1, 0, 1, epoch1},
		{3, 2, 0, -1, -1},
		{2, 1, kerr.FencedLeaderEpoch.Code, -1, -1},
	} {
		rp := ask(tc.epoch, tc.current)
		if rp.ErrorCode != tc.code || rp.LeaderEpoch != tc.wantEpoch || rp.EndOffset != tc.wantEnd {
			t.Errorf("epoch %d (current %d): error %d, epoch %d, end %d; want error %d, epoch %d, end %d",
				tc.epoch, tc.current, rp.ErrorCode, rp.LeaderEpoch, rp.EndOffset, tc.code, tc.wantEpoch, tc.wantEnd)
		}
	}
}
