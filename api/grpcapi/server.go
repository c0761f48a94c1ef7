package grpcapi

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the "proto" codec produceCodec wraps
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/internal/fetchbudget"
)

// Options configures a Server. The zero value is usable.
type Options struct {
	// Logger receives errors the server cannot attribute to the caller
	// (INTERNAL and UNAVAILABLE statuses). Nil discards them.
	Logger *slog.Logger
	// Registerer receives the API's metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
	// FetchBudgetBytes bounds the memory of fetch and stream responses in
	// flight, server-wide (0: fetchbudget.DefaultBytes). A fetch waits for its
	// share before it reads from the log, so slow consumers get
	// back-pressure rather than the server buffering for them.
	//
	// One response takes at most an eighth of the budget (a stream, which
	// holds two responses, a sixteenth each): larger max_bytes are lowered
	// to fit, so a few slow consumers cannot hold all of it.
	FetchBudgetBytes int64
	// FetchBudgetWait bounds how long a fetch waits for its share of the
	// budget (0: fetchbudget.DefaultWait). Past it the fetch fails with
	// RESOURCE_EXHAUSTED, which clients retry, rather than hanging behind
	// consumers that stopped reading.
	FetchBudgetWait time.Duration
	// Budget is the server-wide fetch budget, shared with the Kafka
	// listener; nil makes one from FetchBudgetBytes and FetchBudgetWait.
	Budget *fetchbudget.Budget
}

// Server implements tierlogv1.TierLogServer on a broker. It is safe for
// concurrent use; every RPC goes straight to the broker.
type Server struct {
	tierlogv1.UnimplementedTierLogServer

	b   *broker.Broker
	log *slog.Logger
	// recordsOut counts records served by Fetch and FetchStream, by topic
	// (the hot tier counts bytes and batches; only the API decodes records).
	recordsOut *prometheus.CounterVec

	// closing is cancelled by Close to end follow streams, which would
	// otherwise wait for new records until their clients cancel and keep
	// grpc.Server.GracefulStop waiting forever.
	closing context.Context
	close   context.CancelFunc
	// drain counts the RPCs Stop lets finish.
	drain *drainTracker
	// grpc is the server Register registered s on; drain asks it which
	// methods are unary.
	grpc atomic.Pointer[grpc.Server]
	// budget holds the bytes of fetch responses in flight; see reserve.
	budget *fetchbudget.Budget
}

// NewServer returns a server for b. The caller keeps ownership of b and
// closes it after the gRPC server has stopped.
func NewServer(b *broker.Broker, opts Options) *Server {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	closing, cancel := context.WithCancel(context.Background())
	recordsOut := promauto.With(opts.Registerer).NewCounterVec(prometheus.CounterOpts{
		Name: "tierlog_grpc_records_out_total", Help: "Records served by Fetch and FetchStream.",
	}, []string{"topic"})
	budget := opts.Budget
	if budget == nil {
		budget = fetchbudget.New(opts.FetchBudgetBytes, opts.FetchBudgetWait, opts.Registerer)
	}
	s := &Server{b: b, log: log, closing: closing, close: cancel, recordsOut: recordsOut, budget: budget}
	s.drain = newDrainTracker(func() map[string]grpc.ServiceInfo {
		if g := s.grpc.Load(); g != nil {
			return g.GetServiceInfo()
		}
		return nil
	})
	return s
}

// ServerOptions are the options the grpc.Server that s is registered on
// needs: for Stop to drain it (a tap handle and a stats handler that count
// unary RPCs in flight), and a codec that checks a Produce request before
// decoding its records (produceCodec). Pass them to grpc.NewServer with the
// caller's own.
func (s *Server) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.InTapHandle(s.drain.tap),
		grpc.StatsHandler(s.drain),
		grpc.ForceServerCodecV2(produceCodec{s: s, base: encoding.GetCodecV2("proto")}),
	}
}

// Close ends every FetchStream that is waiting for records with UNAVAILABLE
// (its message names the offset to resume from), and makes later streams
// end instead of waiting. Unary RPCs and streams still reading are not
// affected. Call it before grpc.Server.GracefulStop, which waits for every
// open stream. It is idempotent.
func (s *Server) Close() {
	s.close()
}

// Register registers the TierLog service on g, which must have been
// created with ServerOptions.
func (s *Server) Register(g *grpc.Server) {
	s.grpc.Store(g)
	tierlogv1.RegisterTierLogServer(g, s)
}

// RegisterHealth registers the standard grpc.health.v1 service on g, reporting
// SERVING for the whole server ("") and for tierlog.v1.TierLog. Call
// Shutdown on the returned server before stopping g so load balancers and
// clients watching health stop sending new work while g drains.
func RegisterHealth(g *grpc.Server) *health.Server {
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(tierlogv1.TierLog_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, hs)
	return hs
}
