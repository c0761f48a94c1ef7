package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/internal/fetchbudget"
)

// Options configures a Server. The zero value is usable.
type Options struct {
	// Logger receives connection and internal errors; nil discards them.
	Logger *slog.Logger
	// Registerer receives the listener's metrics; nil leaves them
	// unregistered.
	Registerer prometheus.Registerer
	// NodeID is this node's broker id in Metadata (0 for a single node).
	NodeID int32
	// AdvertisedHost and AdvertisedPort are what Metadata tells clients to
	// connect to (see AdvertisedFor).
	AdvertisedHost string
	AdvertisedPort int32
	// MaxRequestBytes bounds one request (Kafka's socket.request.max.bytes);
	// 0 means DefaultMaxRequestBytes. A larger size prefix closes the
	// connection before anything is allocated for it.
	MaxRequestBytes int32
	// AutoCreateTopics creates a topic a Metadata request names (when the
	// client allows it) with NumPartitions partitions (0: 1).
	AutoCreateTopics bool
	NumPartitions    int32
	// IdleTimeout closes a connection that sends no request for this long
	// (0: DefaultIdleTimeout), as Kafka's connections.max.idle.ms.
	IdleTimeout time.Duration
	// FrameTimeout bounds how long a request's size, once its first byte
	// has arrived, and then each readChunk (1 MiB) of the request may take
	// to arrive (0: DefaultFrameTimeout), so a client trickling bytes
	// cannot hold a connection and its buffer forever, while a large
	// request on a slow but steady link (at least 1 MiB per FrameTimeout)
	// arrives however long it takes in all.
	FrameTimeout time.Duration
	// FetchBudget is the server-wide fetch budget, shared with the gRPC
	// API (nil: one of fetchbudget.DefaultBytes for this server alone).
	// A fetch holds its records' memory from it until its response is
	// written.
	FetchBudget *fetchbudget.Budget
}

const (
	// DefaultMaxRequestBytes is Kafka's socket.request.max.bytes default.
	DefaultMaxRequestBytes = 100 << 20
	// DefaultIdleTimeout closes idle connections (Kafka: 10 minutes).
	DefaultIdleTimeout = 10 * time.Minute
	// DefaultFrameTimeout bounds the arrival of each MiB of a request.
	DefaultFrameTimeout = 30 * time.Second
	// pipelineDepth is how many requests of one connection may be in
	// flight (read, not yet answered) before the server stops reading it.
	pipelineDepth = 32
)

// Server is the Kafka protocol front end of a broker. Requests on one
// connection are read and started in order and answered in order; a
// request that waits (a long-poll fetch, a produce waiting for its fsync)
// does not stop the requests behind it from being read and started.
type Server struct {
	b    *broker.Broker
	opts Options
	log  *slog.Logger
	m    metrics

	// ctx ends when the server closes: long polls and waits return.
	ctx    context.Context
	cancel context.CancelFunc
	// drain is closed when Shutdown starts: long polls answer at once
	// with what they have.
	drain chan struct{}

	mu        sync.Mutex
	listeners []net.Listener
	conns     map[*clientConn]struct{}
	draining  bool // Shutdown started: no new connection
	closed    bool
	wg        sync.WaitGroup

	// testHookRead, set by tests before serving, runs before each
	// partition read of a fetch, on the goroutine that reads.
	testHookRead func(topic string, partition int32)
}

type metrics struct {
	requests *prometheus.CounterVec
	errors   *prometheus.CounterVec
	conns    prometheus.Gauge
	// fetchBytes counts record batch bytes sent in fetch responses, by
	// tier; coldReads is the bucket reads fetches are waiting for.
	fetchBytes *prometheus.CounterVec
	coldReads  prometheus.Gauge
	// fetchWaiting is the fetches waiting for records (long polls).
	fetchWaiting prometheus.Gauge
	// fetchStarved counts fetches answered without records for want of
	// fetch budget, by which budget: "server" (server-wide) or
	// "connection" (the connection's share).
	fetchStarved *prometheus.CounterVec
}

// New returns a Kafka front end for b. The caller keeps ownership of b and
// closes it after Close.
func New(b *broker.Broker, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.MaxRequestBytes <= 0 {
		opts.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if opts.NumPartitions <= 0 {
		opts.NumPartitions = 1
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.FrameTimeout <= 0 {
		opts.FrameTimeout = DefaultFrameTimeout
	}
	if opts.FetchBudget == nil {
		opts.FetchBudget = fetchbudget.New(0, 0, nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := promauto.With(opts.Registerer)
	return &Server{b: b, opts: opts, log: opts.Logger, ctx: ctx, cancel: cancel, drain: make(chan struct{}),
		conns: map[*clientConn]struct{}{},
		m: metrics{
			requests: f.NewCounterVec(prometheus.CounterOpts{Name: "tierlog_kafka_requests_total",
				Help: "Kafka requests handled, by API."}, []string{"api"}),
			errors: f.NewCounterVec(prometheus.CounterOpts{Name: "tierlog_kafka_connection_errors_total",
				Help: "Kafka connections closed for a protocol error, by reason."}, []string{"reason"}),
			conns: f.NewGauge(prometheus.GaugeOpts{Name: "tierlog_kafka_connections",
				Help: "Open Kafka protocol connections."}),
			fetchBytes: f.NewCounterVec(prometheus.CounterOpts{Name: "tierlog_kafka_fetch_bytes_total",
				Help: "Record batch bytes sent in Kafka fetch responses, by tier the read started in (hot or cold)."}, []string{"tier"}),
			coldReads: f.NewGauge(prometheus.GaugeOpts{Name: "tierlog_kafka_fetch_cold_reads",
				Help: "Partition reads from the bucket in flight for Kafka fetches."}),
			fetchWaiting: f.NewGauge(prometheus.GaugeOpts{Name: "tierlog_kafka_fetch_waiting",
				Help: "Kafka fetches waiting for records to arrive (MaxWaitMillis long polls)."}),
			fetchStarved: f.NewCounterVec(prometheus.CounterOpts{Name: "tierlog_kafka_fetch_starved_total",
				Help: "Kafka fetches answered without records because the fetch budget was in use, by budget: server (server-wide, --fetch-budget-bytes) or connection (the responses the connection has not read hold its share)."}, []string{"budget"}),
		}}
}

// Listen binds addr for the Kafka listener. A host of "localhost" binds
// every loopback address it resolves to (127.0.0.1 and ::1 where the
// machine has IPv6) on one port, so a client that tries either first
// connects; other hosts bind as net.Listen does.
func Listen(addr string) ([]net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if host != "localhost" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		return []net.Listener{ln}, nil
	}
	first, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		return nil, err
	}
	// Same port on ::1 (the one the first bind chose, if port was 0).
	_, bound, _ := net.SplitHostPort(first.Addr().String())
	second, err := net.Listen("tcp6", net.JoinHostPort("::1", bound))
	if err != nil {
		// No IPv6 loopback on this machine: localhost resolves to
		// 127.0.0.1 only, which is bound.
		if !errors.Is(err, syscall.EADDRINUSE) {
			return []net.Listener{first}, nil
		}
		first.Close()
		return nil, fmt.Errorf("listen on [::1]:%s (localhost): %w", bound, err)
	}
	return []net.Listener{first, second}, nil
}

// Serve accepts connections on every listener until Close. It returns the
// first accept error that is not the listeners closing.
func (s *Server) Serve(lns ...net.Listener) error {
	s.mu.Lock()
	if s.closed || s.draining {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.listeners = append(s.listeners, lns...)
	s.mu.Unlock()
	errc := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { errc <- s.accept(ln) }()
	}
	var first error
	for range lns {
		if err := <-errc; err != nil && first == nil {
			first = err
			s.Close()
		}
	}
	return first
}

// AdvertisedFor is the host and port to advertise for a listener bound to
// a from listenAddr (the --kafka-addr it was given): "localhost" when that
// named localhost (Listen bound every loopback family it resolves to, so
// clients may resolve it either way), the machine's name for a wildcard
// bind, the bound IP otherwise (a 127.0.0.1 listener is advertised as
// 127.0.0.1, which a client resolving localhost to ::1 first would miss).
func AdvertisedFor(listenAddr string, a net.Addr) (string, int32) {
	host, port, _ := net.SplitHostPort(a.String())
	p, _ := strconv.Atoi(port)
	ip := net.ParseIP(host)
	configured, _, _ := net.SplitHostPort(listenAddr)
	switch {
	case configured == "localhost":
		return "localhost", int32(p)
	case ip == nil || ip.IsUnspecified():
		// Bound to every address: name the machine, as Kafka does.
		if h, err := os.Hostname(); err == nil {
			return h, int32(p)
		}
	}
	return host, int32(p)
}

func (s *Server) accept(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("accept Kafka connection on %s: %w", ln.Addr(), err)
		}
		cc := newClientConn(s, c)
		s.mu.Lock()
		if s.closed || s.draining {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.conns[cc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		s.m.conns.Inc()
		go func() {
			defer s.wg.Done()
			defer s.m.conns.Dec()
			cc.serve()
			s.mu.Lock()
			delete(s.conns, cc)
			s.mu.Unlock()
		}()
	}
}

// Addrs returns the bound listener addresses.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]net.Addr, len(s.listeners))
	for i, ln := range s.listeners {
		out[i] = ln.Addr()
	}
	return out
}

// stopGrace is what Shutdown adds to its timeout for the answers of the
// requests that finished within it to be written (as the gRPC API's Stop).
const stopGrace = time.Second

// Shutdown stops the server for a process exit without dropping answers:
// it stops accepting and stops reading requests on every connection (a
// request already read is handled; one partly read is dropped, and its
// client sends it again after it reconnects), answers long polls at once
// with what they have (clients fetch again, after reconnecting), and lets
// each connection write its answers in order (a produce's once its flush
// policy's promise holds) and close, for up to timeout + stopGrace. Then
// Close ends what is left. Closing at once would drop the answers of
// produces already stored, and a producer that is not idempotent, told
// nothing, sends them again and stores them twice.
func (s *Server) Shutdown(timeout time.Duration) error {
	start := time.Now()
	s.mu.Lock()
	if s.closed || s.draining {
		s.mu.Unlock()
		return s.Close()
	}
	s.draining = true
	lns := s.listeners
	conns := make([]*clientConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	close(s.drain)
	var errs []error
	for _, ln := range lns {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	for _, c := range conns {
		c.stopReading()
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(timeout + stopGrace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.log.Warn("Kafka connections still answering after the shutdown timeout; closing them", "shutdown_timeout", timeout)
	}
	errs = append(errs, s.Close())
	s.log.Info("Kafka server stopped", "connections", len(conns), "took", time.Since(start).Round(time.Millisecond))
	return errors.Join(errs...)
}

// Close stops accepting, ends waits in progress and closes every
// connection, then waits for their goroutines. Requests already being
// handled finish against the broker (an append in progress completes, its
// response may not reach the client, which retries: the idempotent
// producer's sequence keeps that from duplicating). Close does not wait
// for answers that are not ready: a produce whose fsync hangs keeps its
// record appended (durable per its flush policy once the fsync returns)
// and loses only its answer. Shutdown is the graceful way.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	lns := s.listeners
	conns := make([]*clientConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.cancel()
	var errs []error
	for _, ln := range lns {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	for _, c := range conns {
		c.close()
	}
	s.wg.Wait()
	return errors.Join(errs...)
}
