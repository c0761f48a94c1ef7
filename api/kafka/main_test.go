package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/tierlog/tierlog/broker"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testNode is a broker on a temporary directory with its Kafka listener
// on a free loopback port.
type testNode struct {
	b    *broker.Broker
	s    *Server
	addr string
}

// startNode opens a broker on dir ("" for a new temporary one) and serves
// Kafka for it with opts; both close when the test ends.
func startNode(t testing.TB, dir string, opts Options) *testNode {
	t.Helper()
	return startNodeWith(t, broker.Options{Dir: dir}, opts)
}

// startNodeWith is startNode with the broker's options.
func startNodeWith(t testing.TB, bo broker.Options, opts Options) *testNode {
	t.Helper()
	if bo.Dir == "" {
		bo.Dir = t.TempDir()
	}
	b, err := broker.Open(context.Background(), bo)
	if err != nil {
		t.Fatal(err)
	}
	lns, err := Listen("127.0.0.1:0")
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	addr := lns[0].Addr().String()
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	opts.AdvertisedHost, opts.AdvertisedPort = host, int32(p)
	s := New(b, opts)
	served := make(chan error, 1)
	go func() { served <- s.Serve(lns...) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		b.Close()
	})
	return &testNode{b: b, s: s, addr: addr}
}

// rawConn is a Kafka connection written by hand: requests framed with
// kmsg, responses read frame by frame, for bad input and exact checks.
type rawConn struct {
	t    testing.TB
	c    net.Conn
	corr int32
	fmt  *kmsg.RequestFormatter
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, fmt: kmsg.NewRequestFormatter(kmsg.FormatterClientID("raw-test"))}
}

// frame is one request, framed, with the next correlation id.
func (r *rawConn) frame(req kmsg.Request) ([]byte, int32) {
	r.corr++
	return r.fmt.AppendRequest(nil, req, r.corr), r.corr
}

func (r *rawConn) write(b []byte) {
	r.t.Helper()
	_ = r.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// send writes req and returns its correlation id.
func (r *rawConn) send(req kmsg.Request) int32 {
	r.t.Helper()
	b, corr := r.frame(req)
	r.write(b)
	return corr
}

// readFrame reads one response frame: its correlation id and the rest.
func (r *rawConn) readFrame() (int32, []byte, error) {
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var size [4]byte
	if _, err := io.ReadFull(r.c, size[:]); err != nil {
		return 0, nil, err
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(r.c, body); err != nil {
		return 0, nil, err
	}
	if len(body) < 4 {
		return 0, nil, errors.New("response frame shorter than a correlation id")
	}
	return int32(binary.BigEndian.Uint32(body)), body[4:], nil
}

// recv reads the response to req (sent with correlation id corr).
func (r *rawConn) recv(req kmsg.Request, corr int32) kmsg.Response {
	r.t.Helper()
	got, body, err := r.readFrame()
	if err != nil {
		r.t.Fatalf("read response to %s: %v", kmsg.NameForKey(req.Key()), err)
	}
	if got != corr {
		r.t.Fatalf("response correlation id %d, want %d", got, corr)
	}
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	if resp.IsFlexible() && req.Key() != kmsg.ApiVersions.Int16() {
		body = body[1:] // the response header's (empty) tagged fields
	}
	if err := resp.ReadFrom(body); err != nil {
		r.t.Fatalf("decode %s response: %v", kmsg.NameForKey(req.Key()), err)
	}
	return resp
}

// roundTrip sends req and returns its response.
func (r *rawConn) roundTrip(req kmsg.Request) kmsg.Response {
	r.t.Helper()
	return r.recv(req, r.send(req))
}

// expectClosed reads until the server closes the connection, failing if
// it sends a response first or keeps it open for 10 s.
func (r *rawConn) expectClosed() {
	r.t.Helper()
	corr, _, err := r.readFrame()
	if err == nil {
		r.t.Fatalf("got a response (correlation id %d), want the connection closed", corr)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		r.t.Fatal("connection still open after 10 s, want it closed")
	}
}

// checkAlive proves a connection still works: a Metadata round trip.
func (r *rawConn) checkAlive() {
	r.t.Helper()
	req := kmsg.NewPtrMetadataRequest()
	req.SetVersion(4)
	r.roundTrip(req)
}
