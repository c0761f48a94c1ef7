package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/internal/batch"
)

// dialNode connects a gRPC client to n that accepts responses up to 128 MiB.
func dialNode(t *testing.T, n *node) tierlogv1.TierLogClient {
	t.Helper()
	conn, err := grpc.NewClient(n.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(128<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return tierlogv1.NewTierLogClient(conn)
}

// produceFiller appends count batches of one value of valueBytes to
// topic/partition 0 and returns the batches' values in order.
func produceFiller(t *testing.T, c tierlogv1.TierLogClient, topic string, count, valueBytes int) [][]byte {
	t.Helper()
	var values [][]byte
	for i := range count {
		v := bytes.Repeat([]byte{byte('a' + i%26)}, valueBytes)
		b, err := batch.Build([]batch.Record{{Timestamp: time.Now().UnixMilli(), Value: v}}, batch.BuildOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Produce(context.Background(), &tierlogv1.ProduceRequest{Topic: topic, Partition: new(int32), Batch: b}); err != nil {
			t.Fatalf("produce filler batch %d: %v", i, err)
		}
		values = append(values, v)
	}
	return values
}

// TestShutdownCutsStalledStreams: follow streams whose clients stopped
// reading block in Send; SIGTERM must end them at once rather than wait out
// the shutdown timeout, and every acknowledged record is there after a
// restart.
func TestShutdownCutsStalledStreams(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	const timeout = "20s"
	n := startNode(t, dataDir, nil, "--shutdown-timeout", timeout, "--bucket", "none")
	ok(t, n, "", "topic", "create", "t", "--partitions", "1", "--config", "flush.policy=os")
	c := dialNode(t, n)
	// 40 MiB: more than a stalled client's transport absorbs (flow-control
	// windows grow to at most 16 MiB), so each stream ends up blocked in Send.
	values := produceFiller(t, c, "t", 40, 1000<<10)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 20 {
		s, err := c.FetchStream(ctx, &tierlogv1.FetchStreamRequest{
			Fetch:  &tierlogv1.FetchRequest{Topic: "t", Start: &tierlogv1.FetchRequest_Earliest{Earliest: true}, MaxBytes: 4 << 20, Raw: true},
			Follow: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		// One response proves the stream runs; then the client stops reading.
		if _, err := s.Recv(); err != nil {
			t.Fatalf("stream %d: first response: %v", i, err)
		}
	}

	start := time.Now()
	if code := n.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM with stalled streams: exit %d\n%s", code, n.stderr.String())
	}
	t.Logf("exit took %v with 20 stalled streams (shutdown timeout %s)", time.Since(start).Round(time.Millisecond), timeout)
	if out := n.stderr.String(); strings.Contains(out, "still running after the shutdown timeout") {
		t.Fatalf("shutdown waited out the %s timeout for stalled streams:\n%s", timeout, out)
	}
	cancel()

	n2 := startNode(t, dataDir, nil, "--bucket", "none")
	c2 := dialNode(t, n2)
	off := int64(0)
	for i, want := range values {
		f, err := c2.Fetch(context.Background(), &tierlogv1.FetchRequest{Topic: "t", Start: &tierlogv1.FetchRequest_Offset{Offset: off}, MaxRecords: 1})
		if err != nil {
			t.Fatalf("after restart, fetch offset %d: %v", off, err)
		}
		if len(f.Records) != 1 || !bytes.Equal(f.Records[0].Value, want) {
			t.Fatalf("after restart, record %d differs from what was acknowledged", i)
		}
		off = f.NextOffset
	}
	if code := n2.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("second node: exit %d", code)
	}
}
