package kafka

import (
	"net"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/internal/testutil"
)

// Shutdown answers the requests it has read before closing: a long-poll
// Fetch at once (empty, not dropped: the consumer fetches again after it
// reconnects) and a Produce already stored once its fsync is done (closing
// at once would tell a producer that is not idempotent nothing, and it
// would store the batch again). New connections are refused meanwhile,
// and Shutdown returns only once the answers are written.
func TestShutdownAnswersRequestsAlreadyRead(t *testing.T) {
	g := &partGateFS{hold: "/topics/sd/0/", watch: "/no-such-path/", held: make(chan struct{}), gate: make(chan struct{})}
	n := startKafkaNode(t, t.TempDir(), nodeOptions{broker: func(o *broker.Options) { o.OpenFile = g.open }})
	n.createTopic("sd", 1, map[string]string{"flush.policy": "always"})
	n.createTopic("lp", 1, nil)
	released := false
	release := func() {
		if !released {
			released = true
			close(g.gate)
		}
	}
	defer release()

	r := dialRaw(t, n.addr)
	poll := fetchReq("lp", 1<<20, 1<<20, map[int32]int64{0: 0}, 0)
	poll.SetVersion(11)
	poll.MaxWaitMillis = 60_000 // far beyond rawConn's 10 s read deadline
	pollCorr := r.send(poll)
	testutil.Eventually(t, 30*time.Second, func() bool { return promtest.ToFloat64(n.s.m.fetchWaiting) == 1 },
		"the long poll is not waiting")
	g.armed.Store(true)
	prodCorr := r.send(produceReq(9, -1, "sd", map[int32][]byte{0: testutil.Batch(t, 0, 3, 100, time.Now().UnixMilli())}))
	<-g.held // stored, its fsync held

	shutdown := make(chan error, 1)
	go func() { shutdown <- n.s.Shutdown(time.Minute) }()
	testutil.Eventually(t, 30*time.Second, func() bool {
		c, err := net.Dial("tcp", n.addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, "the listener still accepts during Shutdown")

	got, body, err := r.readFrame()
	if err != nil || got != pollCorr {
		t.Fatalf("the long poll was not answered at Shutdown: correlation id %d (want %d), %v", got, pollCorr, err)
	}
	fr := kmsg.NewPtrFetchResponse()
	fr.SetVersion(11)
	if err := fr.ReadFrom(body); err != nil { // v11: no header tags
		t.Fatal(err)
	}
	if p := fr.Topics[0].Partitions[0]; p.ErrorCode != 0 || len(p.RecordBatches) != 0 {
		t.Fatalf("long poll answered at Shutdown: error %d, %d bytes; want an empty answer", p.ErrorCode, len(p.RecordBatches))
	}
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned (%v) while a stored produce's answer waited for its fsync", err)
	default:
	}

	release()
	resp := kmsg.NewPtrProduceResponse()
	resp.SetVersion(9)
	got, body, err = r.readFrame()
	if err != nil || got != prodCorr {
		t.Fatalf("the stored produce was not answered at Shutdown: correlation id %d (want %d), %v", got, prodCorr, err)
	}
	if err := resp.ReadFrom(body[1:]); err != nil {
		t.Fatal(err)
	}
	if p := resp.Topics[0].Partitions[0]; p.ErrorCode != 0 || p.BaseOffset != 0 {
		t.Fatalf("produce answered at Shutdown: error %d, base offset %d; want stored at 0", p.ErrorCode, p.BaseOffset)
	}
	r.expectClosed()
	if err := <-shutdown; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if end := n.endOffset("sd", 0); end != 3 {
		t.Fatalf("end offset %d after Shutdown, want 3", end)
	}
}

// Shutdown promises to end what is left after timeout + stopGrace (Close).
// A produce whose fsync is stuck (a disk that hangs) must not hold it:
// Close ends the connection, the answer is lost (the client retries), but
// the process can go on to its uploads. Here the fsync is held and
// Shutdown(200ms) must return while it is: the produce's later still
// waits in pa.Wait, but the connection's writer stops waiting for its
// answer once Close ends the connection's context.
func TestShutdownBoundedWhileFsyncStuck(t *testing.T) {
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
