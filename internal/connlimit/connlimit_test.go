package connlimit

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	tltest "github.com/tierlog/tierlog/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestLimit: past Max, new connections are closed at once; closing an
// accepted one frees its slot.
func TestLimit(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	ln := Wrap(raw, Options{Name: "test", Max: 2, Metrics: m})
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := dial(), dial()
	sa, sb := <-accepted, <-accepted
	over := dial()
	// The server side closed it on accept: the client reads EOF.
	_ = over.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := over.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read on a connection past the limit: %v, want EOF", err)
	}
	over.Close()
	if got := value(t, m.rejected.WithLabelValues("test")); got != 1 {
		t.Fatalf("rejected = %v, want 1", got)
	}
	if got := value(t, m.active.WithLabelValues("test")); got != 2 {
		t.Fatalf("active = %v, want 2", got)
	}
	sa.Close()
	sa.Close() // a second Close must not free a second slot
	c := dial()
	sc := <-accepted
	if got := value(t, m.active.WithLabelValues("test")); got != 2 {
		t.Fatalf("active after one close and one accept = %v, want 2", got)
	}
	over2 := dial()
	tltest.Eventually(t, time.Minute, func() bool {
		return value(t, m.rejected.WithLabelValues("test")) == 2
	}, "third connection with two open was not rejected")
	for _, x := range []net.Conn{a, b, c, over2, sb, sc} {
		x.Close()
	}
	ln.Close()
	for range accepted {
	}
}

// value reads a gauge or counter.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Gauge != nil {
		return d.Gauge.GetValue()
	}
	return d.Counter.GetValue()
}

// TestEvict: at the limit a new connection takes the slot of one that
// Evict closes; when Evict closes none, the new one is closed on accept.
func TestEvict(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics(prometheus.NewRegistry())
	accepted := make(chan net.Conn, 10)
	victim := make(chan net.Conn, 1)
	ln := Wrap(raw, Options{Name: "test", Max: 1, Metrics: m, Evict: func() bool {
		select {
		case c := <-victim:
			c.Close()
			return true
		default:
			return false
		}
	}})
	defer ln.Close()
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial()
	first := <-accepted
	victim <- first
	dial()
	second := <-accepted
	if got := value(t, m.evicted.WithLabelValues("test")); got != 1 {
		t.Fatalf("evicted = %v, want 1", got)
	}
	if got := value(t, m.active.WithLabelValues("test")); got != 1 {
		t.Fatalf("active after an eviction = %v, want 1", got)
	}
	over := dial() // nothing to evict now
	_ = over.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := over.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read on a connection past the limit with none to evict: %v, want EOF", err)
	}
	second.Close()
	ln.Close()
	for range accepted {
	}
}

// TestSharedPool: listeners sharing a Pool are capped together, each
// counted under its own name; a connection closed on one frees a slot the
// other can take.
func TestSharedPool(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	pool := NewPool(2)
	type side struct {
		raw      net.Listener
		accepted chan net.Conn
	}
	sides := map[string]*side{}
	for _, name := range []string{"a", "b"} {
		raw, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln := Wrap(raw, Options{Name: name, Pool: pool, Metrics: m})
		s := &side{raw: raw, accepted: make(chan net.Conn, 10)}
		sides[name] = s
		go func() {
			defer close(s.accepted)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				s.accepted <- c
			}
		}()
		t.Cleanup(func() {
			ln.Close()
			for c := range s.accepted {
				c.Close()
			}
		})
	}
	dial := func(name string) net.Conn {
		c, err := net.Dial("tcp", sides[name].raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial("a")
	sa := <-sides["a"].accepted
	dial("b")
	<-sides["b"].accepted
	over := dial("b") // the pool is full: a's connection counts for b too
	_ = over.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := over.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read on a connection past the shared limit: %v, want EOF", err)
	}
	if a, b := value(t, m.active.WithLabelValues("a")), value(t, m.active.WithLabelValues("b")); a != 1 || b != 1 {
		t.Fatalf("active a=%v b=%v, want 1 each", a, b)
	}
	// The refused connection is closed before its rejection is counted.
	for deadline := time.Now().Add(10 * time.Second); value(t, m.rejected.WithLabelValues("b")) != 1 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if got := value(t, m.rejected.WithLabelValues("b")); got != 1 {
		t.Fatalf("rejected on b = %v, want 1", got)
	}
	sa.Close()
	dial("b")
	<-sides["b"].accepted // a's freed slot
	if got := value(t, m.active.WithLabelValues("b")); got != 2 {
		t.Fatalf("active on b after a's connection closed = %v, want 2", got)
	}
}
