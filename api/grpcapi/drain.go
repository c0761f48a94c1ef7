package grpcapi

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// drainTracker counts RPCs that shutdown must let finish: the unary ones
// (a Produce cut half way would be retried by its client and could store
// its records twice). Streams are not counted: a follow stream waits for
// records, a health Watch for status changes, and Stop cuts them.
//
// The count goes up in the tap handle, which the transport calls when a
// request's headers arrive and before its handler is scheduled, so an RPC
// that has started to run is always counted; it goes down at the RPC's
// stats End event. Only RPCs that will get an End event may be counted:
// gRPC runs no handler and reports no End for an unknown service or method
// (it answers UNIMPLEMENTED itself) nor for a request whose deadline has
// already passed, so the tap counts only the unary methods registered on
// the grpc.Server and lets expired requests through uncounted. Once
// shutdown begins the tap refuses new RPCs (UNAVAILABLE, which clients
// retry elsewhere or later), so the count can only fall.
type drainTracker struct {
	// services returns the grpc.Server's services; it is read once, at the
	// first RPC, when every service has been registered (gRPC refuses
	// registrations after Serve).
	services  func() map[string]grpc.ServiceInfo
	unaryOnce sync.Once
	unary     map[string]bool // full method names of the unary methods

	mu       sync.Mutex
	closing  bool
	inFlight int
	idle     chan struct{} // closed once closing and inFlight == 0
}

type drainedKey struct{}

func newDrainTracker(services func() map[string]grpc.ServiceInfo) *drainTracker {
	return &drainTracker{services: services, idle: make(chan struct{})}
}

// isUnary says whether gRPC will run a unary handler for method.
func (d *drainTracker) isUnary(method string) bool {
	d.unaryOnce.Do(func() {
		d.unary = make(map[string]bool)
		for svc, info := range d.services() {
			for _, m := range info.Methods {
				if !m.IsClientStream && !m.IsServerStream {
					d.unary["/"+svc+"/"+m.Name] = true
				}
			}
		}
	})
	return d.unary[method]
}

// tap is a tap.ServerInHandle.
func (d *drainTracker) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if !d.isUnary(info.FullMethodName) || ctx.Err() != nil {
		// A stream (Stop cuts it), or an RPC gRPC answers without a handler
		// (no End event would take it off the count).
		return ctx, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closing {
		return ctx, status.Errorf(codes.Unavailable, "%s: server is shutting down", info.FullMethodName)
	}
	d.inFlight++
	return context.WithValue(ctx, drainedKey{}, true), nil
}

func (d *drainTracker) done() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.inFlight--
	if d.closing && d.inFlight == 0 {
		close(d.idle)
	}
}

// close refuses new RPCs and returns a channel closed once none is in
// flight.
func (d *drainTracker) close() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.closing {
		d.closing = true
		if d.inFlight == 0 {
			close(d.idle)
		}
	}
	return d.idle
}

// drainTracker is a stats.Handler only to see each RPC end.
func (d *drainTracker) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (d *drainTracker) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if _, ok := s.(*stats.End); ok && ctx.Value(drainedKey{}) != nil {
		d.done()
	}
}
func (d *drainTracker) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (d *drainTracker) HandleConn(context.Context, stats.ConnStats) {}

// stopGrace bounds how long Stop lets grpc.Server.GracefulStop run once
// no unary RPC is left: long enough for the transport to write the answers
// those RPCs queued (cutting the connections at once drops them, and a
// client told its stored produce failed retries it and stores it twice),
// short enough that streams blocked sending to clients that stopped
// reading, which GracefulStop would wait for, hold the exit only briefly.
const stopGrace = time.Second

// Stop shuts g down for a process exit: it ends follow streams that wait
// for records (Close), refuses new RPCs, lets the unary RPCs in flight
// finish for up to timeout, then lets GracefulStop flush their answers and
// close the connections for up to stopGrace more (it returns at once when
// no stream is left), and finally closes every connection. Closing the
// connections is what ends a stream blocked sending to a client that
// stopped reading: cancelling its context is not enough, because Send
// waits on the transport's flow control, and GracefulStop alone would wait
// for it until the timeout. g must have been created with the options of
// ServerOptions.
func (s *Server) Stop(g *grpc.Server, timeout time.Duration) {
	start := time.Now()
	s.Close()
	drained := s.drain.close()
	stopped := make(chan struct{})
	go func() {
		g.GracefulStop() // returns once every connection has closed
		close(stopped)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-stopped:
	case <-drained:
		// Only streams are left, and answers the transport has yet to
		// write: give GracefulStop a moment to write them, then cut the
		// streams.
		grace := time.NewTimer(min(stopGrace, max(0, timeout-time.Since(start))))
		defer grace.Stop()
		select {
		case <-stopped:
		case <-grace.C:
			g.Stop()
			<-stopped
		}
	case <-t.C:
		s.log.Warn("gRPC requests still running after the shutdown timeout; cancelling them", "shutdown_timeout", timeout)
		g.Stop()
		<-stopped
	}
	s.log.Info("gRPC server stopped", "took", time.Since(start).Round(time.Millisecond))
}
