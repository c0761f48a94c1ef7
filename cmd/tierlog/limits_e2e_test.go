package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
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

// h2Preface opens an HTTP/2 connection: the client preface and an empty
// SETTINGS frame, after which a gRPC server answers with its own SETTINGS.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + "\x00\x00\x00\x04\x00\x00\x00\x00\x00"

// floodConn is a raw connection that completed the HTTP/2 preface and then
// stays idle; done is closed when the server closes it, got says whether
// the server had answered first (accepted) or closed it on accept.
type floodConn struct {
	c    net.Conn
	got  atomic.Int64
	done chan struct{}
}

func openFlood(t *testing.T, addr string) *floodConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	f := &floodConn{c: c, done: make(chan struct{})}
	_, _ = io.WriteString(c, h2Preface) // fails on a connection closed on accept
	go func() {
		defer close(f.done)
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			f.got.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	return f
}

// TestConnectionLimit: past --max-connections new connections are closed
// on accept while /healthz and a client that already holds a connection
// keep working; idle connections are closed after --conn-idle-timeout,
// which frees their slots.
func TestConnectionLimit(t *testing.T) {
	const max = 8
	n := startNode(t, filepath.Join(t.TempDir(), "data"), nil, "--bucket", "none",
		"--max-connections", strconv.Itoa(max), "--conn-idle-timeout", "2s")
	ok(t, n, "", "topic", "create", "t", "--partitions", "1", "--config", "flush.policy=os")
	c := dialNode(t, n)
	produce := func(c tierlogv1.TierLogClient) error {
		_, err := c.Produce(context.Background(), &tierlogv1.ProduceRequest{Topic: "t", Records: []*tierlogv1.Record{{Value: []byte("v")}}})
		return err
	}
	if err := produce(c); err != nil {
		t.Fatal(err)
	}
	// An open follow stream keeps the client's connection from being idle.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	follow, err := c.FetchStream(ctx, &tierlogv1.FetchStreamRequest{Fetch: &tierlogv1.FetchRequest{Topic: "t"}, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := follow.Recv(); err != nil {
		t.Fatal(err)
	}

	var flood []*floodConn
	for range 3 * max {
		flood = append(flood, openFlood(t, n.grpcAddr))
	}
	// max-1 slots were free: exactly the rest are closed on accept, without
	// an answer. Only a closed connection counts, so this waits for the
	// server's decision, not for time to pass.
	refused := func() (closed, unanswered int) {
		for _, f := range flood {
			select {
			case <-f.done:
				closed++
				if f.got.Load() == 0 {
					unanswered++
				}
			default:
			}
		}
		return
	}
	eventually(t, "connections past the limit are closed on accept", func() error {
		if _, u := refused(); u < len(flood)-(max-1) {
			return fmt.Errorf("%d of %d connections past the limit closed unanswered, want %d", u, len(flood), len(flood)-(max-1))
		}
		return nil
	})
	if _, u := refused(); u != len(flood)-(max-1) {
		t.Fatalf("%d connections closed unanswered, want exactly %d (the slots past %d)", u, len(flood)-(max-1), max)
	}
	if code, _, err := httpGet("http://" + n.httpAddr + "/healthz"); err != nil || code != 200 {
		t.Fatalf("/healthz with the gRPC listener full: %d, %v", code, err)
	}
	if err := produce(c); err != nil {
		t.Fatalf("produce on an open connection with the listener full: %v", err)
	}
	// The accepted flood connections never send an RPC: the idle timeout
	// closes them all.
	eventually(t, "idle connections are closed after the idle timeout", func() error {
		if cl, _ := refused(); cl != len(flood) {
			return fmt.Errorf("%d of %d idle connections still open", len(flood)-cl, len(flood))
		}
		return nil
	})
	c2 := dialNode(t, n)
	if err := produce(c2); err != nil {
		t.Fatalf("produce on a new connection once idle ones were closed: %v", err)
	}
	if !strings.Contains(n.stderr.String(), "connection limit reached") {
		t.Errorf("no warning logged for the refused connections")
	}
}

// TestConnectionLimitFromDescriptors: without --max-connections the cap
// is the descriptor limit less the reserve and the HTTP connections, and
// the node logs it.
func TestConnectionLimitFromDescriptors(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	// The child raises its soft limit to the hard one, which it inherits.
	want := int64(rl.Max) - 1000 - 64
	n := startNode(t, filepath.Join(t.TempDir(), "data"), nil, "--bucket", "none", "--fd-reserve", "1000")
	if !strings.Contains(n.stderr.String(), fmt.Sprintf("max_connections=%d ", want)) {
		t.Fatalf("log does not state max_connections=%d (hard limit %d - fd_reserve 1000 - 64 HTTP):\n%s", want, rl.Max, n.stderr.String())
	}
	if code := n.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
