package main

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// streamDrainer ends streaming RPCs on shutdown. grpc's GracefulStop waits
// for every RPC to finish, but a FetchStream in follow mode never finishes
// on its own, so without this every shutdown with a follower connected
// would wait out the whole shutdown timeout. Draining cancels the streams'
// contexts, and the client is told UNAVAILABLE (reconnect elsewhere or
// later) rather than a cancellation it did not ask for.
type streamDrainer struct {
	mu       sync.Mutex
	draining bool
	cancels  map[*context.CancelFunc]struct{}
}

func newStreamDrainer() *streamDrainer {
	return &streamDrainer{cancels: make(map[*context.CancelFunc]struct{})}
}

var errShuttingDown = status.Error(codes.Unavailable, "tierlog server is shutting down; reconnect to continue")

// intercept is a grpc.StreamServerInterceptor.
func (d *streamDrainer) intercept(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	key := &cancel
	d.mu.Lock()
	if d.draining {
		d.mu.Unlock()
		return errShuttingDown
	}
	d.cancels[key] = struct{}{}
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.cancels, key)
		d.mu.Unlock()
	}()

	err := handler(srv, &drainedStream{ServerStream: ss, ctx: ctx})
	if err != nil && ctx.Err() != nil && ss.Context().Err() == nil {
		return errShuttingDown // ended by drain, not by the client
	}
	return err
}

// drain cancels every open stream and refuses new ones.
func (d *streamDrainer) drain() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.draining = true
	for c := range d.cancels {
		(*c)()
	}
}

type drainedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *drainedStream) Context() context.Context { return s.ctx }
