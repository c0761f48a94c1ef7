package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/internal/batch"
)

// memoryBound is the resident set tierlog serve must stay under with its
// default settings (soft memory limit 768 MiB: 256 MiB chunk cache, 256 MiB
// fetch budget, 256 MiB headroom) while TestMemoryUnderLoad's clients run.
// The README states it.
const memoryBound = 1536 << 20

// vmHWM reads a process's peak resident set from /proc.
func vmHWM(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// rawRequest sends pre-encoded request bytes, so the test can send a
// 64 MB request of 32 M records without building them.
type rawRequest struct{}

func (rawRequest) Name() string { return "proto" }
func (rawRequest) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawRequest) Unmarshal(mem.BufferSlice, any) error { return nil }

func emptyRecords(topic string, n int) []byte {
	b := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), topic)
	for range n {
		b = append(b, 3<<3|2, 0)
	}
	return b
}

// TestMemoryUnderLoad runs the clients that took the server to gigabytes
// (issue 6, item 15) against the real binary and holds its peak RSS
// (VmHWM) under memoryBound: a 64 MB Produce of 32 M empty records, 10 M
// records to a missing topic, a 1 M-record zstd batch (refused), 20
// concurrent decoded fetches of the largest zstd batch accepted, and 50 follow streams with 64 MiB max_bytes whose clients
// stop reading. A monitor kills the server as soon as it passes the bound,
// so a regression fails the test without exhausting the machine.
func TestMemoryUnderLoad(t *testing.T) {
	n := startNode(t, filepath.Join(t.TempDir(), "data"), nil, "--bucket", "none")
	pid := n.cmd.Process.Pid
	var over atomic.Int64
	monitorDone := make(chan struct{})
	stopMonitor := make(chan struct{})
	go func() {
		defer close(monitorDone)
		for {
			select {
			case <-stopMonitor:
				return
			case <-time.After(10 * time.Millisecond): // sampling period, not a wait for an outcome
			}
			if hwm, err := vmHWM(pid); err == nil && hwm > memoryBound {
				over.Store(hwm)
				_ = n.cmd.Process.Kill()
				return
			}
		}
	}()
	defer func() {
		select {
		case <-monitorDone:
		default:
			close(stopMonitor)
			<-monitorDone
		}
	}()
	checkBound := func(phase string) {
		t.Helper()
		if hwm := over.Load(); hwm > 0 {
			t.Fatalf("%s: peak RSS passed %d MiB (VmHWM %d MiB); server killed", phase, memoryBound>>20, hwm>>20)
		}
		hwm, err := vmHWM(pid)
		if err != nil {
			t.Fatalf("%s: %v", phase, err)
		}
		t.Logf("%s: peak RSS %d MiB (bound %d MiB)", phase, hwm>>20, memoryBound>>20)
	}

	for _, topic := range []string{"t", "z", "s"} {
		ok(t, n, "", "topic", "create", topic, "--partitions", "1", "--config", "flush.policy=os")
	}
	c := dialNode(t, n)
	conn, err := grpc.NewClient(n.grpcAddr, grpcInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// A 1 M-record zstd batch (~1 MB) is refused (at most
	// batch.RecordLimit(max.message.bytes) records per batch); the largest
	// batch that is accepted is what the decoded fetches below read.
	recs := make([]batch.Record, 1<<20)
	zb, err := batch.Build(recs, batch.BuildOptions{Codec: batch.Zstd})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Produce(context.Background(), &tierlogv1.ProduceRequest{Topic: "z", Partition: new(int32), Batch: zb})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("produce of a 1 M-record batch (%d bytes): %v, want InvalidArgument", len(zb), err)
	}
	recs = recs[:batch.RecordLimit(1048588)]
	if zb, err = batch.Build(recs, batch.BuildOptions{Codec: batch.Zstd}); err != nil {
		t.Fatal(err)
	}
	recs = nil
	if _, err := c.Produce(context.Background(), &tierlogv1.ProduceRequest{Topic: "z", Partition: new(int32), Batch: zb}); err != nil {
		t.Fatalf("produce the largest accepted batch (%d bytes): %v", len(zb), err)
	}
	produceFiller(t, c, "s", 100, 1000<<10)

	// Huge produces and decoded fetches at once.
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for _, tc := range []struct {
		topic string
		n     int
		code  codes.Code
	}{{"t", 32 << 20, codes.InvalidArgument}, {"missing", 10 << 20, codes.NotFound}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := conn.Invoke(context.Background(), tierlogv1.TierLog_Produce_FullMethodName, emptyRecords(tc.topic, tc.n),
				new(tierlogv1.ProduceResponse), grpc.ForceCodecV2(rawRequest{}))
			if status.Code(err) != tc.code {
				errs <- fmt.Errorf("produce of %d empty records to %s: %v, want %v", tc.n, tc.topic, err, tc.code)
			}
		}()
	}
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := c.Fetch(context.Background(), &tierlogv1.FetchRequest{Topic: "z", MaxBytes: 64 << 20})
			if err != nil {
				errs <- fmt.Errorf("decoded fetch of the largest batch: %v", err)
			} else if len(f.Records) == 0 {
				errs <- fmt.Errorf("decoded fetch of the largest batch returned no records")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if over.Load() == 0 {
			t.Error(err)
		}
	}
	checkBound("huge produces and 20 decoded fetches")

	// 50 follow streams with 64 MiB responses whose clients read one
	// response and stop.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var first atomic.Int64
	for range 50 {
		s, err := c.FetchStream(ctx, &tierlogv1.FetchStreamRequest{
			Fetch:  &tierlogv1.FetchRequest{Topic: "s", MaxBytes: 64 << 20, Raw: true},
			Follow: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			if _, err := s.Recv(); err == nil {
				first.Add(1)
			}
		}()
	}
	// The budget (256 MiB) admits two streams at 2 x 64 MiB each; the rest
	// wait for it. Wait for those two to be sending, blocked on their
	// clients.
	eventually(t, "stalled streams are being served", func() error {
		if over.Load() > 0 {
			return nil
		}
		if got := first.Load(); got < 2 {
			return fmt.Errorf("%d streams have sent a first response", got)
		}
		return nil
	})
	checkBound("50 stalled follow streams")
	cancel()
}

func grpcInsecure() grpc.DialOption { return grpc.WithTransportCredentials(insecure.NewCredentials()) }
