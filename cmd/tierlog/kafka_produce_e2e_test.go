package main

import (
	"context"
	"syscall"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/internal/testutil"
)

// TestKafkaIdempotentProducerKill9: an idempotent producer's state
// survives kill -9 of `tierlog serve`: after the restart a retry of an
// acknowledged batch gets its original offset and is not stored again, a
// sequence gap is refused, and producer ids are not handed out again.
func TestKafkaIdempotentProducerKill9(t *testing.T) {
	dataDir := t.TempDir()
	n := startNode(t, dataDir, nil)
	ctx := context.Background()
	client := func(n *node) *kgo.Client {
		cl, err := kgo.NewClient(kgo.SeedBrokers(n.kafkaAddr))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
	initID := func(cl *kgo.Client) int64 {
		req := kmsg.NewPtrInitProducerIDRequest()
		resp, err := req.RequestWith(ctx, cl)
		if err != nil || resp.ErrorCode != 0 {
			t.Fatalf("InitProducerId: %v, code %d", err, resp.ErrorCode)
		}
		return resp.ProducerID
	}
	produce := func(cl *kgo.Client, b []byte) kmsg.ProduceResponseTopicPartition {
		t.Helper()
		req := kmsg.NewPtrProduceRequest()
		req.Acks, req.TimeoutMillis = -1, 10000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = "crash"
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Records = b
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Topics[0].Partitions[0]
	}

	cl := client(n)
	meta := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr("crash")
	meta.Topics, meta.AllowAutoTopicCreation = append(meta.Topics, mt), true
	if _, err := meta.RequestWith(ctx, cl); err != nil {
		t.Fatal(err)
	}
	id := initID(cl)
	if p := produce(cl, testutil.IdempotentBatch(t, id, 0, 0, 5, 30)); p.ErrorCode != 0 || p.BaseOffset != 0 {
		t.Fatalf("first batch: %+v", p)
	}
	if p := produce(cl, testutil.IdempotentBatch(t, id, 0, 5, 3, 30)); p.ErrorCode != 0 || p.BaseOffset != 5 {
		t.Fatalf("second batch: %+v", p)
	}

	if code := n.signal(syscall.SIGKILL); code != -1 {
		t.Fatalf("kill -9: exit code %d, want -1", code)
	}
	n = startNode(t, dataDir, nil)
	cl = client(n)
	if p := produce(cl, testutil.IdempotentBatch(t, id, 0, 5, 3, 30)); p.ErrorCode != 0 || p.BaseOffset != 5 {
		t.Fatalf("retry of the acknowledged batch after kill -9: %+v, want base offset 5", p)
	}
	if p := produce(cl, testutil.IdempotentBatch(t, id, 0, 9, 1, 30)); p.ErrorCode != kerr.OutOfOrderSequenceNumber.Code {
		t.Fatalf("sequence gap after kill -9: code %d, want OUT_OF_ORDER_SEQUENCE_NUMBER", p.ErrorCode)
	}
	if p := produce(cl, testutil.IdempotentBatch(t, id, 0, 8, 1, 30)); p.ErrorCode != 0 || p.BaseOffset != 8 {
		t.Fatalf("next batch after kill -9: %+v, want base offset 8", p)
	}
	if next := initID(cl); next <= id {
		t.Fatalf("producer id %d after kill -9, want one above %d", next, id)
	}
}
