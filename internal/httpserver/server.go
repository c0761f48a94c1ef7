package httpserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tierlog/tierlog/internal/connlimit"
)

// Options configure the endpoints.
type Options struct {
	// Gatherer is exposed on /metrics; nil serves an empty exposition.
	Gatherer prometheus.Gatherer
	// Ready reports whether the node can take traffic: nil error means
	// ready, an error is served on /readyz as the reason it is not. Nil
	// Ready means always ready.
	Ready func() error
	// Logger receives serving errors; nil discards them.
	Logger *slog.Logger
	// MaxConns caps the connections open at once (0: no cap). At the cap a
	// new connection closes the longest-idle keep-alive connection to take
	// its slot, or, when none is idle, is closed on accept. Conns receives
	// its metrics.
	MaxConns int
	Conns    *connlimit.Metrics
	// IdleTimeout closes keep-alive connections idle that long (0: 2
	// minutes). Without it an idle connection is kept forever.
	IdleTimeout time.Duration
}

// defaultIdleTimeout applies when Options.IdleTimeout is zero.
const defaultIdleTimeout = 2 * time.Minute

// Handler returns the mux with /metrics, /healthz and /readyz.
func Handler(opts Options) http.Handler {
	g := opts.Gatherer
	if g == nil {
		g = prometheus.NewRegistry()
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
		// Serve what could be gathered rather than failing the whole
		// scrape on one bad collector; the error is still logged.
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      promLogger{logger(opts.Logger)},
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if opts.Ready != nil {
			if err := opts.Ready(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintf(w, "not ready: %v\n", err)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// Server is an HTTP server bound to a listener.
type Server struct {
	ln  net.Listener
	srv *http.Server
}

// Listen binds addr (port 0 picks a free port; see Addr) and prepares the
// server. Nothing is served until Serve.
func Listen(addr string, opts Options) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("httpserver: listen on %s: %w", addr, err)
	}
	idle := &idleConns{since: make(map[net.Conn]time.Time)}
	if opts.MaxConns > 0 {
		ln = connlimit.Wrap(ln, connlimit.Options{Name: "http", Max: opts.MaxConns, Metrics: opts.Conns, Logger: opts.Logger,
			Evict: idle.evict})
	}
	idleTimeout := opts.IdleTimeout
	if idleTimeout <= 0 {
		idleTimeout = defaultIdleTimeout
	}
	return &Server{
		ln: ln,
		srv: &http.Server{
			Handler:           Handler(opts),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       idleTimeout,
			ConnState:         idle.track,
			ErrorLog:          slog.NewLogLogger(logger(opts.Logger).Handler(), slog.LevelWarn),
		},
	}, nil
}

// idleConns tracks the keep-alive connections waiting for their next
// request, so that a new connection at the cap can take the slot of one.
// A connection not yet past its first request (StateNew) is not idle: the
// read-header timeout bounds it.
type idleConns struct {
	mu    sync.Mutex
	since map[net.Conn]time.Time
}

// track is an http.Server.ConnState hook.
func (ic *idleConns) track(c net.Conn, st http.ConnState) {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if st == http.StateIdle {
		ic.since[c] = time.Now()
	} else {
		delete(ic.since, c)
	}
}

// evict closes the connection idle longest and says whether there was
// one. Closing a keep-alive connection between requests is what its idle
// timeout does anyway; HTTP clients retry a request that meets it closed.
func (ic *idleConns) evict() bool {
	ic.mu.Lock()
	var oldest net.Conn
	var at time.Time
	for c, t := range ic.since {
		if oldest == nil || t.Before(at) {
			oldest, at = c, t
		}
	}
	delete(ic.since, oldest)
	ic.mu.Unlock()
	if oldest == nil {
		return false
	}
	_ = oldest.Close() // the server sees the close and forgets the connection
	return true
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until Shutdown; it returns nil after a shutdown and the
// serving error otherwise.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("httpserver: serve on %s: %w", s.ln.Addr(), err)
	}
	return nil
}

// Shutdown stops accepting, waits for in-flight requests until ctx is done,
// then closes what is left. It also closes the listener if Serve was never
// called.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		err = errors.Join(err, s.srv.Close())
	}
	// Shutdown does not close a listener that Serve never took over.
	if cerr := s.ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
		err = errors.Join(err, cerr)
	}
	if err != nil {
		return fmt.Errorf("httpserver: shutdown %s: %w", s.ln.Addr(), err)
	}
	return nil
}

func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// promLogger adapts slog to promhttp's Println-style logger.
type promLogger struct{ l *slog.Logger }

func (p promLogger) Println(v ...any) {
	p.l.Warn("metrics gathering failed", "error", fmt.Sprint(v...))
}
