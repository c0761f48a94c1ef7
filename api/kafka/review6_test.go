package kafka

import (
	"testing"
	"time"

	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/internal/testutil"
)

// Shutdown promises to end what is left after timeout + stopGrace (Close).
// A produce whose fsync is stuck (a disk that hangs) must not hold it:
// Close ends the connection, the answer is lost (the client retries), but
// the process can go on to its uploads. Here the fsync is held and
// Shutdown(200ms) never returns while it is: the produce's later ignores
// its ctx (pa.Wait), so the writer waits on p.done forever and Close's
// wg.Wait with it.
func TestReview_ShutdownBoundedWhileFsyncStuck(t *testing.T) {
	g := &partGateFS{hold: "/topics/stuck/0/", watch: "/no-such-path/", held: make(chan struct{}), gate: make(chan struct{})}
	n := startKafkaNode(t, t.TempDir(), nodeOptions{broker: func(o *broker.Options) { o.OpenFile = g.open }})
	n.createTopic("stuck", 1, map[string]string{"flush.policy": "always"})
	released := false
	release := func() {
		if !released {
			released = true
			close(g.gate)
		}
	}
	defer release()

	r := dialRaw(t, n.addr)
	g.armed.Store(true)
	r.send(produceReq(9, -1, "stuck", map[int32][]byte{0: testutil.Batch(t, 0, 3, 100, time.Now().UnixMilli())}))
	<-g.held // stored, its fsync stuck

	const timeout = 200 * time.Millisecond
	shutdown := make(chan error, 1)
	go func() { shutdown <- n.s.Shutdown(timeout) }()
	// Bound: timeout + stopGrace, with a wide margin; the fsync stays
	// held the whole time.
	select {
	case <-shutdown:
	case <-time.After(timeout + stopGrace + 10*time.Second):
		t.Fatalf("Shutdown(%v) has not returned after %v while a produce's fsync is stuck: it waits for the fsync, not its timeout + stopGrace",
			timeout, timeout+stopGrace+10*time.Second)
	}
}
