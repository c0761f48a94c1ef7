package grpcapi

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/broker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testEnv is a real broker in a temporary directory behind a real gRPC server
// on a loopback port, and a client connected to it.
type testEnv struct {
	b    *broker.Broker
	srv  *Server
	g    *grpc.Server
	c    tierlogv1.TierLogClient
	conn *grpc.ClientConn
}

func newEnv(tb testing.TB) *testEnv {
	tb.Helper()
	return newEnvWith(tb, broker.Options{Dir: tb.TempDir(), Defaults: broker.DefaultTopicConfig()})
}

// newEnvWith is newEnv with the broker's options (a bucket, tiering).
func newEnvWith(tb testing.TB, opts broker.Options) *testEnv {
	tb.Helper()
	return newEnvServer(tb, opts, Options{})
}

// newEnvServer is newEnvWith with the server's options too (its Logger is
// replaced).
func newEnvServer(tb testing.TB, opts broker.Options, sopts Options) *testEnv {
	tb.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	b, err := broker.Open(context.Background(), opts)
	if err != nil {
		tb.Fatalf("open broker: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Close()
		tb.Fatalf("listen: %v", err)
	}
	sopts.Logger = slog.New(slog.DiscardHandler)
	srv := NewServer(b, sopts)
	g := grpc.NewServer(append(srv.ServerOptions(), grpc.MaxRecvMsgSize(80<<20))...)
	srv.Register(g)
	hs := RegisterHealth(g)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = g.Serve(lis)
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		g.Stop()
		b.Close()
		tb.Fatalf("dial: %v", err)
	}
	tb.Cleanup(func() {
		conn.Close()
		hs.Shutdown()
		srv.Close()
		g.GracefulStop()
		<-served
		if err := b.Close(); err != nil {
			tb.Errorf("close broker: %v", err)
		}
	})
	return &testEnv{b: b, srv: srv, g: g, c: tierlogv1.NewTierLogClient(conn), conn: conn}
}

// createTopic creates a topic with flush.policy=os unless config says
// otherwise, so tests do not wait on fsync.
func (e *testEnv) createTopic(tb testing.TB, name string, partitions int32, config map[string]string) {
	tb.Helper()
	cfg := map[string]string{"flush.policy": "os"}
	for k, v := range config {
		cfg[k] = v
	}
	if _, err := e.c.CreateTopic(context.Background(), &tierlogv1.CreateTopicRequest{Name: name, Partitions: partitions, Config: cfg}); err != nil {
		tb.Fatalf("create topic %s: %v", name, err)
	}
}

func (e *testEnv) produce(tb testing.TB, req *tierlogv1.ProduceRequest) *tierlogv1.ProduceResponse {
	tb.Helper()
	resp, err := e.c.Produce(context.Background(), req)
	if err != nil {
		tb.Fatalf("produce to %s: %v", req.GetTopic(), err)
	}
	return resp
}

func (e *testEnv) fetch(tb testing.TB, req *tierlogv1.FetchRequest) *tierlogv1.FetchResponse {
	tb.Helper()
	resp, err := e.c.Fetch(context.Background(), req)
	if err != nil {
		tb.Fatalf("fetch %s/%d: %v", req.GetTopic(), req.GetPartition(), err)
	}
	return resp
}

// wantStatus checks that err is a gRPC status with the code and a message
// containing every one of parts.
func wantStatus(tb testing.TB, err error, code codes.Code, parts ...string) {
	tb.Helper()
	st, ok := status.FromError(err)
	if !ok || err == nil {
		tb.Fatalf("got error %v, want status %s", err, code)
	}
	tb.Logf("%s: %s", st.Code(), st.Message())
	if st.Code() != code {
		tb.Fatalf("got status %s (%q), want %s", st.Code(), st.Message(), code)
	}
	for _, p := range parts {
		if !strings.Contains(st.Message(), p) {
			tb.Errorf("status message %q does not mention %q", st.Message(), p)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func offsetStart(o int64) *tierlogv1.FetchRequest_Offset {
	return &tierlogv1.FetchRequest_Offset{Offset: o}
}
