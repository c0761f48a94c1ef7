package grpcapi

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/tierlog/tierlog/api/tierlogv1"
)

// TestStopNotHeldByRPCsThatNeverRan: an RPC the server answers without
// running a handler (an unknown method or service: UNIMPLEMENTED) must not
// count as in flight, or every later shutdown waits out its whole timeout
// with the streams it should cut at once (issue 6 item 16). grpcurl and
// load balancers probe unregistered services (reflection) routinely.
func TestStopNotHeldByRPCsThatNeverRan(t *testing.T) {
	e := newEnv(t)
	e.createTopic(t, "t", 1, nil)
	for _, method := range []string{
		"/tierlog.v1.TierLog/NoSuchMethod",
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
		"/no.such.Service/Method",
	} {
		err := e.conn.Invoke(context.Background(), method, &tierlogv1.FetchRequest{}, &tierlogv1.FetchResponse{})
		if status.Code(err) != codes.Unimplemented {
			t.Fatalf("%s: %v, want Unimplemented", method, err)
		}
	}
	// A stream Stop must cut rather than wait for: a health watch (the
	// follow streams that Close ends are not enough to hold Stop).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := healthpb.NewHealthClient(e.conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}

	// Draining still covers the unary methods.
	for _, m := range []string{tierlogv1.TierLog_Produce_FullMethodName, tierlogv1.TierLog_Fetch_FullMethodName, healthpb.Health_Check_FullMethodName} {
		if !e.srv.drain.isUnary(m) {
			t.Errorf("%s is not drained on Stop", m)
		}
	}
	for _, m := range []string{tierlogv1.TierLog_FetchStream_FullMethodName, healthpb.Health_Watch_FullMethodName} {
		if e.srv.drain.isUnary(m) {
			t.Errorf("stream %s is waited for on Stop", m)
		}
	}

	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		e.srv.Stop(e.g, time.Hour)
	}()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		e.g.Stop() // let the test end
		<-stopped
		t.Fatal("Stop still waiting 30 s after it was called with no unary RPC running: " +
			"the UNIMPLEMENTED calls are counted in flight forever")
	}
}
