package grpcapi

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/fetchbudget"
	"github.com/tierlog/tierlog/internal/testutil"
)

// produceMiB appends n batches of one 1000 KiB record to t/0.
func produceMiB(t *testing.T, e *testEnv, n int) {
	t.Helper()
	for i := range n {
		b, err := batch.Build([]batch.Record{{Timestamp: 1, Value: bytes.Repeat([]byte{byte('a' + i%26)}, 1000<<10)}}, batch.BuildOptions{})
		if err != nil {
			t.Fatal(err)
		}
		e.produce(t, &tierlogv1.ProduceRequest{Topic: "t", Partition: new(int32), Batch: b})
	}
}

// TestStalledStreamDoesNotStarveOtherFetches: the fetch budget gives a
// slow consumer back-pressure; it must not stop every other client. One
// client opens a stream (max_bytes within the API's range) and stops
// reading; another client's small fetch must still be served.
func TestStalledStreamDoesNotStarveOtherFetches(t *testing.T) {
	const budget = 16 << 20
	e := newEnvServer(t, broker.Options{Dir: t.TempDir(), Defaults: broker.DefaultTopicConfig()}, Options{FetchBudgetBytes: budget})
	e.createTopic(t, "t", 1, nil)
	// 40 MiB: more than a stalled client's transport absorbs, so the
	// stream ends up blocked in Send.
	produceMiB(t, e, 40)

	stalled, err := grpc.NewClient(e.conn.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(128<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := tierlogv1.NewTierLogClient(stalled).FetchStream(ctx, &tierlogv1.FetchStreamRequest{
		Fetch: &tierlogv1.FetchRequest{Topic: "t", Start: offsetStart(0), MaxBytes: 8 << 20, Raw: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil { // the stream runs; now its client stops reading
		t.Fatal(err)
	}

	fctx, fcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer fcancel()
	if _, err := e.c.Fetch(fctx, &tierlogv1.FetchRequest{Topic: "t", Start: offsetStart(0), MaxBytes: 1 << 10, Raw: true}); err != nil {
		t.Fatalf("a 1 KiB fetch while another client's stream (max_bytes 8 MiB) is stalled: %v "+
			"(the stalled stream holds the whole %d MiB fetch budget for as long as its client does not read)", err, budget>>20)
	}
}

// TestDecodedFetchOfCompressedBatchStaysInBudget: a decoded fetch takes
// 2 x max_bytes of the fetch budget, plus what decoding a compressed batch
// holds (batch.EachMemory: the zstd window, 8 MiB here, which no streaming
// decoder can do without), so what it allocates must stay within that. A
// stored zstd batch (under 1 MiB, within max.message.bytes and the record
// limit) whose records section is 50 MiB was decompressed whole by every
// decoded fetch of it, however small its max_bytes: 100 concurrent fetches
// of 1 KiB each held 5 GB while the budget counted 200 KiB.
func TestDecodedFetchOfCompressedBatchStaysInBudget(t *testing.T) {
	e := newEnvServer(t, broker.Options{Dir: t.TempDir(), Defaults: broker.DefaultTopicConfig()}, Options{FetchBudgetBytes: 16 << 20})
	e.createTopic(t, "t", 1, nil)
	const n, size = 100_000, 500
	recs := make([]batch.Record, n)
	v := bytes.Repeat([]byte{'x'}, size)
	for i := range recs {
		recs[i] = batch.Record{Offset: int64(i), Timestamp: 1, Value: v}
	}
	b, err := batch.Build(recs, batch.BuildOptions{Codec: batch.Zstd})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("zstd batch of %d records of %d bytes: %d bytes", n, size, len(b))
	e.produce(t, &tierlogv1.ProduceRequest{Topic: "t", Partition: new(int32), Batch: b})
	decoding := uint64(batch.EachMemory(b))
	recs, b = nil, nil

	const maxBytes = 1 << 10
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f := e.fetch(t, &tierlogv1.FetchRequest{Topic: "t", Start: offsetStart(0), MaxBytes: maxBytes, MaxRecords: 1})
	runtime.ReadMemStats(&after)
	if len(f.Records) != 1 {
		t.Fatalf("got %d records, want 1", len(f.Records))
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	// Beside the response and the decoder: the request, the log read (one
	// batch) and gRPC's buffers.
	const slack = 1 << 20
	t.Logf("decoded fetch of 1 record (max_bytes %d) allocated %d KiB; budget taken %d KiB", maxBytes, alloc>>10, (2*maxBytes+decoding)>>10)
	if alloc > 2*maxBytes+decoding+slack {
		t.Errorf("decoded fetch of 1 record with max_bytes %d took %d KiB of fetch budget but allocated %d MiB: "+
			"the compressed batch is decompressed outside the budget", maxBytes, (2*maxBytes+decoding)>>10, alloc>>20)
	}
}

// TestFetchBudgetHeldBySlowConsumersRefusesRetriably: streams whose
// clients stopped reading can still hold the whole budget together; a
// fetch that then cannot get its share within the budget wait must fail
// with RESOURCE_EXHAUSTED naming the cause (clients retry it), not hang,
// and fetches are served again once those clients go.
func TestFetchBudgetHeldBySlowConsumersRefusesRetriably(t *testing.T) {
	const budget = 16 << 20
	e := newEnvServer(t, broker.Options{Dir: t.TempDir(), Defaults: broker.DefaultTopicConfig()},
		Options{FetchBudgetBytes: budget, FetchBudgetWait: 200 * time.Millisecond})
	e.createTopic(t, "t", 1, nil)
	produceMiB(t, e, 40)

	// One share is budget/8 and a stream takes one: 8 stalled streams hold
	// it all. Each on its own connection with small, fixed flow-control
	// windows, so its Send blocks after the first response.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range fetchbudget.ShareDivisor {
		conn, err := grpc.NewClient(e.conn.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := tierlogv1.NewTierLogClient(conn).FetchStream(ctx, &tierlogv1.FetchStreamRequest{
			Fetch: &tierlogv1.FetchRequest{Topic: "t", Start: offsetStart(0), MaxBytes: 8 << 20, Raw: true},
		}); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	testutil.Eventually(t, time.Minute, func() bool { return e.srv.budget.Used() == budget },
		"8 stalled streams do not hold the whole %d-byte budget (held: %d)", budget, e.srv.budget.Used())

	_, err := e.c.Fetch(context.Background(), &tierlogv1.FetchRequest{Topic: "t", Start: offsetStart(0), MaxBytes: 1 << 10, Raw: true})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "slow consumers") {
		t.Fatalf("fetch while stalled streams hold the whole budget: %v, want RESOURCE_EXHAUSTED naming slow consumers", err)
	}

	cancel() // the slow consumers go away
	testutil.Eventually(t, time.Minute, func() bool { return e.srv.budget.Used() == 0 },
		"budget still held after the stalled streams were cancelled: %d", e.srv.budget.Used())
	if _, err := e.c.Fetch(context.Background(), &tierlogv1.FetchRequest{Topic: "t", Start: offsetStart(0), MaxBytes: 1 << 10, Raw: true}); err != nil {
		t.Fatalf("fetch after the slow consumers left: %v", err)
	}
}
