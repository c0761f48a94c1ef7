package kafka

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	itest "github.com/tierlog/tierlog/internal/testutil"
)

// header appends a request header v1: key, version, correlation id,
// client id.
func rawHeader(key, version int16, corr int32, clientID string) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(key))
	b = binary.BigEndian.AppendUint16(b, uint16(version))
	b = binary.BigEndian.AppendUint32(b, uint32(corr))
	b = binary.BigEndian.AppendUint16(b, uint16(len(clientID)))
	return append(b, clientID...)
}

// sized prefixes body with its size.
func sized(body []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// storedState is what a bad request must not change: every topic with its
// partition count, end offsets and config overrides.
func storedState(t *testing.T, n *testNode) string {
	t.Helper()
	var buf bytes.Buffer
	for _, ti := range n.b.Topics() {
		buf.WriteString(ti.Name)
		for _, p := range ti.Partitions {
			buf.WriteString(" " + strconv.FormatInt(p.EndOffset, 10))
		}
		for k, v := range ti.Overrides {
			buf.WriteString(" " + k + "=" + v)
		}
		buf.WriteString("\n")
	}
	return buf.String()
}

// Each bad frame closes its connection (after answering what came before
// it); the server stays up, a connection opened before is unaffected, new
// connections work, and nothing stored changes.
func TestBadFramesCloseOnlyTheirConnection(t *testing.T) {
	n := startNode(t, "", Options{FrameTimeout: 500 * time.Millisecond})
	if _, err := n.b.CreateTopic("keep", 2, map[string]string{"retention.ms": "60000"}); err != nil {
		t.Fatal(err)
	}
	before := storedState(t, n)
	bystander := dialRaw(t, n.addr)
	bystander.checkAlive()

	createBody := func() []byte {
		req := kmsg.NewPtrCreateTopicsRequest()
		req.SetVersion(4)
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic, rt.NumPartitions, rt.ReplicationFactor = "never", 3, 1
		req.Topics = append(req.Topics, rt)
		b := (&kmsg.RequestFormatter{}).AppendRequest(nil, req, 1)
		return b[4:] // without the size
	}()

	cases := []struct {
		name string
		data []byte
	}{
		{"size below a header", sized([]byte{0, 18, 0})},
		{"negative size (a 2 GiB claim)", []byte{0x80, 0, 0, 0, 1, 2, 3}},
		{"size past kafka_max_request_bytes", append(binary.BigEndian.AppendUint32(nil, DefaultMaxRequestBytes+1), make([]byte, 64)...)},
		{"client id longer than the frame", sized(append(rawHeader(18, 0, 1, "")[:8], 0, 5, 'a', 'b'))},
		{"negative client id length", sized(append(rawHeader(18, 0, 1, "")[:8], 0x80, 0x00))},
		{"unknown api key", sized(append(rawHeader(999, 0, 1, "x"), 0, 0, 0, 0))},
		{"known kind the server does not implement (LeaderAndIsr)", sized(append(rawHeader(4, 0, 1, "x"), make([]byte, 32)...))},
		{"unsupported Metadata version", sized(append(rawHeader(3, 99, 1, "x"), make([]byte, 32)...))},
		{"unsupported CreateTopics version", sized(append(rawHeader(19, 99, 1, "x"), make([]byte, 32)...))},
		{"truncated body (CreateTopics cut short)", sized(createBody[:len(createBody)-12])},
		{"garbage body (Metadata v9)", sized(append(rawHeader(3, 9, 1, "x"), 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f))},
		{"bad flexible header tags", sized(append(rawHeader(3, 9, 1, "x"), 5, 1))},
		{"frame shorter than its size", append(binary.BigEndian.AppendUint32(nil, 200), createBody[:50]...)},
		{"size prefix cut short", []byte{0, 0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := dialRaw(t, n.addr)
			r.write(c.data)
			r.expectClosed()
			bystander.checkAlive()
			dialRaw(t, n.addr).checkAlive()
			if after := storedState(t, n); after != before {
				t.Fatalf("stored state changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
	if ti, _ := n.b.Topic("never"); ti.Name != "" {
		t.Fatal("a truncated CreateTopics created its topic")
	}
}

// The requests before a bad one are answered, in order, before the
// connection closes.
func TestBadRequestAfterGoodOnesAnswersThemFirst(t *testing.T) {
	n := startNode(t, "", Options{})
	r := dialRaw(t, n.addr)
	av := kmsg.NewPtrApiVersionsRequest()
	av.SetVersion(3)
	md := kmsg.NewPtrMetadataRequest()
	md.SetVersion(9)
	b1, c1 := r.frame(av)
	b2, c2 := r.frame(md)
	bad := sized(append(rawHeader(999, 0, 3, "x"), 0))
	r.write(append(append(b1, b2...), bad...))
	r.recv(av, c1)
	r.recv(md, c2)
	r.expectClosed()
}

// ApiVersions of a version the server does not know gets the v0 reply:
// UNSUPPORTED_VERSION with the ranges, the correlation id of the request;
// the connection stays open for the client's retry at a version it shares.
func TestApiVersionsUnsupportedVersionDowngrades(t *testing.T) {
	n := startNode(t, "", Options{})
	r := dialRaw(t, n.addr)
	// v99's body is unknown; a flexible-style body the server must not read.
	r.write(sized(append(rawHeader(18, 99, 7, "future"), 0, 3, 'a', 'b', 0)))
	req := kmsg.NewPtrApiVersionsRequest()
	req.SetVersion(0)
	resp := r.recv(req, 7).(*kmsg.ApiVersionsResponse)
	if resp.ErrorCode != kerr.UnsupportedVersion.Code {
		t.Fatalf("error code %d, want UNSUPPORTED_VERSION", resp.ErrorCode)
	}
	found := false
	for _, k := range resp.ApiKeys {
		if k.ApiKey == 18 {
			found = k.MinVersion == 0 && k.MaxVersion == 3
		}
	}
	if !found {
		t.Fatalf("ranges %+v do not give ApiVersions v0-v3", resp.ApiKeys)
	}
	r.corr = 7
	req.SetVersion(3)
	if got := r.roundTrip(req).(*kmsg.ApiVersionsResponse); got.ErrorCode != 0 {
		t.Fatalf("retry at v3: error code %d", got.ErrorCode)
	}
}

// A client that connects and sends nothing is closed after the idle
// timeout; one that trickles a request a byte at a time is closed by the
// frame timeout although each byte comes well within the idle timeout.
func TestIdleAndTricklingClientsAreClosed(t *testing.T) {
	reg := prometheus.NewRegistry()
	n := startNode(t, "", Options{IdleTimeout: 300 * time.Millisecond, FrameTimeout: 400 * time.Millisecond, Registerer: reg})
	t.Run("idle", func(t *testing.T) {
		r := dialRaw(t, n.addr)
		r.expectClosed()
	})
	t.Run("one byte at a time", func(t *testing.T) {
		r := dialRaw(t, n.addr)
		req := kmsg.NewPtrMetadataRequest()
		req.SetVersion(4)
		frame, _ := r.frame(req)
		closed := false
		for _, b := range frame {
			_ = r.c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := r.c.Write([]byte{b}); err != nil {
				closed = true
				break
			}
			time.Sleep(150 * time.Millisecond) // a slow client, not a timing assertion
		}
		if !closed {
			r.expectClosed()
		}
		if v := testutil.ToFloat64(n.s.m.errors.WithLabelValues("truncated request")) + testutil.ToFloat64(n.s.m.errors.WithLabelValues("truncated size")); v < 1 {
			t.Errorf("no truncated-frame close counted (%v)", v)
		}
	})
	dialRaw(t, n.addr).checkAlive()
}

// readFrame allocates as bytes arrive, not as the size prefix claims: a
// claim of 1 GiB backed by 3 MiB allocates a few MiB.
func TestReadFrameAllocatesOnlyWhatArrives(t *testing.T) {
	const claim = 1 << 30
	arrived := io.LimitReader(zeroReader{}, 3<<20)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := readFrame(arrived, claim, func() error { return nil })
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("readFrame of a cut-short frame succeeded")
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
		t.Fatalf("reading 3 MiB of a 1 GiB claim allocated %d MiB", grew>>20)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// Over the wire too: with kafka_max_request_bytes at 1 GiB, a client
// claiming 1 GiB and sending 1 KiB costs the server about a read chunk,
// and a claim past the limit (here 2 GiB, which is negative as an int32)
// closes the connection at once.
func TestHugeSizeClaimAllocatesNothing(t *testing.T) {
	n := startNode(t, "", Options{MaxRequestBytes: 1 << 30, FrameTimeout: time.Minute})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := dialRaw(t, n.addr)
	r.write(append(binary.BigEndian.AppendUint32(nil, 1<<30), make([]byte, 1024)...))
	// Once the client gives up, the server's read of the frame fails: its
	// buffer was allocated by then, and TotalAlloc counts it.
	itest.Eventually(t, 5*time.Second, func() bool { return testutil.ToFloat64(n.s.m.conns) == 1 }, "the server to take the connection")
	r.c.Close()
	itest.Eventually(t, 5*time.Second, func() bool {
		return testutil.ToFloat64(n.s.m.errors.WithLabelValues("truncated request")) == 1
	}, "the server to see the frame cut short")
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Fatalf("a 1 GiB claim with 1 KiB sent allocated %d MiB", grew>>20)
	}

	r = dialRaw(t, n.addr)
	r.write([]byte{0x80, 0, 0, 0})
	r.expectClosed()
	dialRaw(t, n.addr).checkAlive()
}

// slowAPI borrows a kind tierlog never answers (Envelope) for a test: its
// answer waits (later) until the test releases it by the first byte of
// the request's data, or the connection closes.
func slowAPI(t *testing.T) (release func(id byte)) {
	var chans [256]chan struct{}
	for i := range chans {
		chans[i] = make(chan struct{})
	}
	key := kmsg.Envelope.Int16()
	apis[key] = api{min: 0, max: 0, hidden: true, handle: func(s *Server, c *clientConn, req kmsg.Request) reply {
		id := req.(*kmsg.EnvelopeRequest).RequestData[0]
		return reply{later: func(ctx context.Context) kmsg.Response {
			select {
			case <-chans[id]:
			case <-ctx.Done():
			}
			return req.ResponseKind()
		}}
	}}
	t.Cleanup(func() { delete(apis, key) })
	return func(id byte) { close(chans[id]) }
}

func slowRequest(id byte) kmsg.Request {
	req := kmsg.NewPtrEnvelopeRequest()
	req.RequestData = []byte{id}
	return req
}

// Answers that are ready go out while the one behind them waits: they are
// not held in the write buffer until it is ready too.
func TestReadyAnswersNotHeldBehindSlowOne(t *testing.T) {
	release := slowAPI(t)
	reg := prometheus.NewRegistry()
	n := startNode(t, "", Options{Registerer: reg})
	r := dialRaw(t, n.addr)
	av := kmsg.NewPtrApiVersionsRequest()
	b1, c1 := r.frame(slowRequest(1))
	b2, c2 := r.frame(av)
	b3, c3 := r.frame(slowRequest(2))
	r.write(append(append(b1, b2...), b3...))
	itest.Eventually(t, 10*time.Second, func() bool {
		return testutil.ToFloat64(n.s.m.requests.WithLabelValues("Envelope")) == 2
	}, "both slow requests to start")
	release(1)
	r.recv(slowRequest(1), c1)
	r.recv(av, c2) // while the third still waits
	release(2)
	r.recv(slowRequest(2), c3)
}

// Pipelined requests are answered in order with their correlation ids,
// past the pipeline depth, a request whose answer waits (later) holding
// back the ready answers behind it without stopping them being started.
func TestPipelinedAnswersInOrder(t *testing.T) {
	release := slowAPI(t)
	reg := prometheus.NewRegistry()
	n := startNode(t, "", Options{Registerer: reg})
	r := dialRaw(t, n.addr)

	type sent struct {
		req  kmsg.Request
		corr int32
	}
	var all []sent
	var buf []byte
	add := func(req kmsg.Request) {
		b, corr := r.frame(req)
		buf = append(buf, b...)
		all = append(all, sent{req, corr})
	}
	add(slowRequest(1))
	fast := 0
	for i := range pipelineDepth - 2 {
		if i%2 == 0 {
			req := kmsg.NewPtrApiVersionsRequest()
			req.SetVersion(int16(i % 4))
			add(req)
			fast++
		} else {
			req := kmsg.NewPtrMetadataRequest()
			req.SetVersion(int16(i % 13))
			add(req)
		}
	}
	r.write(buf)
	// Every request behind the slow one is started (its answer ready)
	// while the slow one waits.
	itest.Eventually(t, 10*time.Second, func() bool {
		return testutil.ToFloat64(n.s.m.requests.WithLabelValues("ApiVersions")) == float64(fast)
	}, "the fast requests behind the slow one to start")
	release(1)
	// More behind them, past the pipeline depth.
	buf = nil
	for range 3 * pipelineDepth {
		req := kmsg.NewPtrMetadataRequest()
		req.SetVersion(12)
		add(req)
	}
	r.write(buf)
	for _, s := range all {
		r.recv(s.req, s.corr)
	}
}
