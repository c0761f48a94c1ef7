// Package connlimit bounds the connections a listener keeps open, so a
// flood of clients (or idle connections nobody closes) cannot use up the
// process's file descriptors, which the logs need for their segment files.
//
// A connection past the limit is accepted and closed at once, so its client
// gets a prompt EOF it can retry on, instead of waiting in the kernel's
// accept queue (what golang.org/x/net/netutil.LimitListener does) for a
// slot that an idle connection may hold for minutes.
//
//	m := connlimit.NewMetrics(reg)
//	ln = connlimit.Wrap(ln, connlimit.Options{Name: "grpc", Max: 1000, Metrics: m, Logger: logger})
//
// Listeners that draw on one budget of descriptors share a Pool:
//
//	pool := connlimit.NewPool(1000)
//	grpcLn = connlimit.Wrap(grpcLn, connlimit.Options{Name: "grpc", Pool: pool, Metrics: m})
//	kafkaLn = connlimit.Wrap(kafkaLn, connlimit.Options{Name: "kafka", Pool: pool, Metrics: m})
package connlimit

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are shared by every limited listener of a process, labelled by
// listener name.
type Metrics struct {
	active   *prometheus.GaugeVec
	rejected *prometheus.CounterVec
	evicted  *prometheus.CounterVec
}

// NewMetrics registers the listeners' metrics on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	return &Metrics{
		active: promauto.With(reg).NewGaugeVec(prometheus.GaugeOpts{
			Name: "tierlog_server_connections_active", Help: "Open connections, by listener.",
		}, []string{"listener"}),
		rejected: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "tierlog_server_connections_rejected_total", Help: "Connections closed on accept because the listener was at its limit, by listener.",
		}, []string{"listener"}),
		evicted: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "tierlog_server_connections_evicted_total", Help: "Idle connections closed to make room for a new one at the limit, by listener.",
		}, []string{"listener"}),
	}
}

// Pool is a cap on the connections open at once on every listener that
// shares it.
type Pool struct {
	max  int64
	open atomic.Int64
}

// NewPool returns a cap of max connections (positive) to share.
func NewPool(max int) *Pool { return &Pool{max: int64(max)} }

// Max is the cap.
func (p *Pool) Max() int { return int(p.max) }

// take takes a slot if one is free.
func (p *Pool) take() bool {
	if p.open.Add(1) <= p.max {
		return true
	}
	p.open.Add(-1)
	return false
}

func (p *Pool) give() { p.open.Add(-1) }

// Options configure one limited listener.
type Options struct {
	Name string // listener label in metrics and logs, e.g. "grpc"
	// Pool, if set, is the cap this listener shares with others; else the
	// listener has its own of Max connections (Max must be positive).
	Pool    *Pool
	Max     int
	Metrics *Metrics
	Logger  *slog.Logger // nil discards the warnings
	// Evict, if set, is called when a new connection arrives at the limit:
	// it may close one open connection the server deems idle (a keep-alive
	// connection between requests) and say whether it did, so the new one
	// takes its slot instead of being closed. Idle pooled connections then
	// cannot lock out a health probe until they time out.
	Evict func() bool
}

// rejectLogEvery spaces the warnings a flood causes.
const rejectLogEvery = 10 * time.Second

// Wrap returns ln limited to opts.Max open connections.
func Wrap(ln net.Listener, opts Options) net.Listener {
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Pool == nil {
		opts.Pool = NewPool(opts.Max)
	}
	return &listener{Listener: ln, opts: opts,
		active:   opts.Metrics.active.WithLabelValues(opts.Name),
		rejected: opts.Metrics.rejected.WithLabelValues(opts.Name),
		evicted:  opts.Metrics.evicted.WithLabelValues(opts.Name)}
}

type listener struct {
	net.Listener
	opts     Options
	active   prometheus.Gauge
	rejected prometheus.Counter
	evicted  prometheus.Counter
	lastLog  atomic.Int64 // unix nanoseconds of the last rejection warning
}

// Accept returns the next connection within the limit, closing the ones
// past it.
func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if !l.take() {
			c.Close()
			l.rejected.Inc()
			now := time.Now().UnixNano()
			if last := l.lastLog.Load(); now-last >= int64(rejectLogEvery) && l.lastLog.CompareAndSwap(last, now) {
				l.opts.Logger.Warn("connection limit reached; closing new connections", "listener", l.opts.Name,
					"max_connections", l.opts.Pool.Max(), "remote", c.RemoteAddr().String())
			}
			continue
		}
		l.active.Inc()
		return &conn{Conn: c, l: l}, nil
	}
}

// take takes a slot for a new connection, evicting an idle one at the
// limit if Evict can.
func (l *listener) take() bool {
	if l.opts.Pool.take() {
		return true
	}
	if l.opts.Evict == nil || !l.opts.Evict() {
		return false
	}
	// The evicted connection's Close freed its slot, unless a concurrent
	// Accept took it first.
	l.evicted.Inc()
	return l.opts.Pool.take()
}

type conn struct {
	net.Conn
	l    *listener
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.opts.Pool.give()
		c.l.active.Dec()
	})
	return err
}

// CloseWrite half-closes the connection (TCP's FIN) where the connection
// can: a server that stops reading sends its last answers, then FIN, and
// drains what the client still sends instead of resetting the connection.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
