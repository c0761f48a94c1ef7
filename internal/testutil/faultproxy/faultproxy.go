package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Fault is what the proxy does to a request a rule matches.
type Fault int

const (
	// Error answers with Rule.Status (default 503) and an S3-style XML
	// error body with Rule.Code (default "SlowDown" for 503, 429,
	// "InternalError" otherwise), without forwarding the request. With
	// Rule.After > 0, the body is cut after After bytes (the
	// Content-Length announces all of it).
	Error Fault = iota + 1
	// Reset closes the connection with a TCP RST before any response.
	Reset
	// Stall forwards nothing and answers nothing until the client gives up.
	Stall
	// Slow forwards the request and sends the response body in chunks of
	// Rule.ChunkSize bytes (default 1024), waiting Rule.Delay before each.
	Slow
	// Truncate forwards the request, sends the response headers (with the
	// real Content-Length) and Rule.After bytes of the body, then closes
	// the connection. A reply without a body (to a HEAD, or of length 0,
	// as PUT and DELETE replies are) is cut as CutHeaders cuts it.
	Truncate
	// StallBody forwards the request, sends the headers and Rule.After
	// bytes of the body, then sends nothing more until the client gives up.
	StallBody
	// CutHeaders forwards the request (the server acts on it), then sends
	// only the first Rule.After bytes of the reply's status line and
	// headers (at least one, so the client cannot mistake it for an idle
	// connection closed under it and resend on its own) and closes the
	// connection: the reply is lost, the request may have taken effect.
	CutHeaders
	// Hold keeps the request, unforwarded, until the rule's Handle.Release
	// (or the client gives up), then forwards it untouched. Handle.Held
	// counts the requests held at once: a test that needs requests to be
	// concurrent waits for Held to reach their number, which it can only
	// if the client sent them together, then releases them.
	Hold
)

var faultNames = map[Fault]string{Error: "error", Reset: "reset", Stall: "stall", Slow: "slow", Truncate: "truncate", StallBody: "stall-body", CutHeaders: "cut-headers", Hold: "hold"}

func (f Fault) String() string {
	if n, ok := faultNames[f]; ok {
		return n
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// Rule matches requests and says which fault to inject, how often.
type Rule struct {
	// Match: every non-zero field must match.
	Method        string // e.g. "GET", "PUT"
	PathContains  string // substring of the URL path
	QueryContains string // substring of the raw query, e.g. "partNumber=" for part uploads
	RangeOnly     bool   // only requests with a Range header

	Fault Fault
	// Status and Code of an Error (defaults above).
	Status int
	Code   string
	// After is the number of body bytes Truncate, StallBody and Error let
	// through, or of header bytes CutHeaders lets through.
	After int64
	// Delay and ChunkSize shape a Slow body.
	Delay     time.Duration
	ChunkSize int

	// Skip lets the first Skip matching requests through untouched.
	Skip int
	// Times is how many faults the rule injects, then it stops (0: no
	// limit).
	Times int
	// Probability of injecting into a matching request (0: always). The
	// proxy's random source is seeded (Options.Seed): runs repeat.
	Probability float64
}

// Handle follows one rule.
type Handle struct {
	rule     Rule
	matched  atomic.Int64
	injected atomic.Int64
	// For Hold: the requests held now, and closed by Release.
	held    atomic.Int64
	release chan struct{}
	once    sync.Once
}

// Held is the number of requests a Hold rule is holding now.
func (h *Handle) Held() int { return int(h.held.Load()) }

// Release lets the requests a Hold rule holds, and every later one it
// matches, through. It may be called more than once.
func (h *Handle) Release() { h.once.Do(func() { close(h.release) }) }

// Injected is the number of faults the rule has injected.
func (h *Handle) Injected() int { return int(h.injected.Load()) }

// Matched is the number of requests the rule matched (injected or not).
func (h *Handle) Matched() int { return int(h.matched.Load()) }

// Options configure a proxy.
type Options struct {
	// Seed of the random source for Rule.Probability (0 is a fine seed).
	Seed uint64
	// Logf receives the proxy's errors (nil: discarded); pass t.Logf.
	Logf func(format string, args ...any)
}

// Proxy is a fault-injecting HTTP reverse proxy in front of one server.
type Proxy struct {
	// URL is the proxy's base URL, http://127.0.0.1:PORT; Addr its
	// host:port.
	URL  string
	Addr string

	target   *url.URL
	srv      *http.Server
	ln       net.Listener
	rp       *httputil.ReverseProxy
	upstream *http.Transport
	closing  chan struct{}
	served   sync.WaitGroup // the Serve goroutine
	active   sync.WaitGroup // handlers running

	mu       sync.Mutex
	closed   bool
	rules    []*Handle
	rnd      *rand.Rand
	requests int64
	counts   map[Fault]int
}

// New starts a proxy on 127.0.0.1 in front of target (e.g.
// "http://127.0.0.1:9000"). Close stops it.
func New(target string, opts Options) (*Proxy, error) {
	tu, err := url.Parse(target)
	if err != nil || tu.Host == "" {
		return nil, fmt.Errorf("faultproxy: target %q is not a URL like http://host:port", target)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p := &Proxy{
		URL:      "http://" + ln.Addr().String(),
		Addr:     ln.Addr().String(),
		target:   tu,
		ln:       ln,
		upstream: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64, DisableCompression: true},
		closing:  make(chan struct{}),
		rnd:      rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x5eed)),
		counts:   map[Fault]int{},
	}
	logf := func(format string, args ...any) {
		p.mu.Lock()
		closed := p.closed
		p.mu.Unlock()
		if opts.Logf != nil && !closed {
			opts.Logf(format, args...)
		}
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(tu)
			// Signed requests (SigV4) cover the Host header: keep the one
			// the client signed.
			r.Out.Host = r.In.Host
			r.Out.URL.Path, r.Out.URL.RawPath = r.In.URL.Path, r.In.URL.RawPath
		},
		Transport:     p.upstream,
		FlushInterval: -1, // pass every write on at once: slow and truncated bodies arrive as sent
		ErrorLog:      log.New(logWriter(logf), "faultproxy: ", 0),
		ModifyResponse: func(resp *http.Response) error {
			h, ok := resp.Request.Context().Value(bodyFaultKey{}).(*Handle)
			if !ok {
				return nil
			}
			bodyless := resp.Request.Method == http.MethodHead || resp.ContentLength == 0
			if h.rule.Fault == CutHeaders || (h.rule.Fault == Truncate && bodyless) {
				return &cutReply{resp: resp, after: h.rule.After}
			}
			resp.Body = p.faultyBody(resp.Request.Context(), resp.Body, h.rule)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var cut *cutReply
			if errors.As(err, &cut) {
				cut.send(w)
				return
			}
			logf("faultproxy: %v", err)
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve), ErrorLog: log.New(logWriter(logf), "faultproxy: ", 0)}
	p.served.Add(1)
	go func() {
		defer p.served.Done()
		p.srv.Serve(ln)
	}()
	return p, nil
}

type logWriter func(format string, args ...any)

func (w logWriter) Write(b []byte) (int, error) {
	w("%s", strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// Add installs a rule (after the existing ones; the first rule that fires
// wins) and returns its handle.
func (p *Proxy) Add(r Rule) *Handle {
	h := &Handle{rule: r, release: make(chan struct{})}
	p.mu.Lock()
	p.rules = append(p.rules, h)
	p.mu.Unlock()
	return h
}

// Clear removes every rule; requests pass untouched.
func (p *Proxy) Clear() {
	p.mu.Lock()
	p.rules = nil
	p.mu.Unlock()
}

// Requests is the number of requests the proxy has received.
func (p *Proxy) Requests() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return int(p.requests)
}

// Injected is the number of faults of kind f injected so far.
func (p *Proxy) Injected(f Fault) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[f]
}

// Close stops the proxy: stalled requests are released, connections
// closed, and the serving goroutines have ended when it returns.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	close(p.closing)
	err := p.srv.Close()
	p.served.Wait()
	p.active.Wait()
	p.upstream.CloseIdleConnections()
	return err
}

// pick returns the rule to apply to r, or nil, counting it.
func (p *Proxy) pick(r *http.Request) *Handle {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests++
	for _, h := range p.rules {
		rule := h.rule
		if !matches(rule, r) {
			continue
		}
		n := h.matched.Add(1)
		if n <= int64(rule.Skip) {
			continue
		}
		if rule.Times > 0 && h.injected.Load() >= int64(rule.Times) {
			continue
		}
		if rule.Probability > 0 && p.rnd.Float64() >= rule.Probability {
			continue
		}
		h.injected.Add(1)
		p.counts[rule.Fault]++
		return h
	}
	return nil
}

func matches(rule Rule, r *http.Request) bool {
	return (rule.Method == "" || strings.EqualFold(rule.Method, r.Method)) &&
		(rule.PathContains == "" || strings.Contains(r.URL.Path, rule.PathContains)) &&
		(rule.QueryContains == "" || strings.Contains(r.URL.RawQuery, rule.QueryContains)) &&
		(!rule.RangeOnly || r.Header.Get("Range") != "")
}

type bodyFaultKey struct{}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	// Count handlers so Close can wait for them; none starts once closed.
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		panic(http.ErrAbortHandler)
	}
	p.active.Add(1)
	p.mu.Unlock()
	defer p.active.Done()
	h := p.pick(r)
	if h == nil {
		p.rp.ServeHTTP(w, r)
		return
	}
	switch h.rule.Fault {
	case Error:
		p.writeError(w, r, h.rule)
	case Reset:
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0) // RST instead of FIN
		}
		conn.Close()
	case Stall:
		select {
		case <-r.Context().Done():
		case <-p.closing:
		}
		panic(http.ErrAbortHandler) // close without answering
	case Hold:
		h.held.Add(1)
		select {
		case <-h.release:
		case <-r.Context().Done():
		case <-p.closing:
		}
		h.held.Add(-1)
		if r.Context().Err() != nil {
			panic(http.ErrAbortHandler)
		}
		p.rp.ServeHTTP(w, r)
	case Slow, Truncate, StallBody, CutHeaders:
		p.rp.ServeHTTP(headerFlusher{w}, r.WithContext(context.WithValue(r.Context(), bodyFaultKey{}, h)))
	default:
		http.Error(w, fmt.Sprintf("faultproxy: unknown fault %v", h.rule.Fault), http.StatusInternalServerError)
	}
}

func (p *Proxy) writeError(w http.ResponseWriter, r *http.Request, rule Rule) {
	status, code := rule.Status, rule.Code
	if status == 0 {
		status = http.StatusServiceUnavailable
	}
	if code == "" {
		switch status {
		case http.StatusServiceUnavailable:
			code = "SlowDown"
		case http.StatusTooManyRequests:
			code = "TooManyRequests"
		default:
			code = "InternalError"
		}
	}
	// Unread request bodies would be sent to nobody; the server closes
	// the connection after answering, as S3 does.
	w.Header().Set("Connection", "close")
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("X-Amz-Request-Id", "faultproxy")
	body := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
		`<Error><Code>%s</Code><Message>injected by faultproxy</Message><Resource>%s</Resource><RequestId>faultproxy</RequestId></Error>`,
		code, r.URL.Path)
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	if rule.After > 0 && rule.After < int64(len(body)) {
		// Send the headers and the first bytes, then drop the connection.
		io.WriteString(w, body[:rule.After])
		http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler)
	}
	io.WriteString(w, body)
}

// headerFlusher sends the headers as soon as they are written, so a body
// cut before its first byte still arrives as a status and headers (the
// reverse proxy would otherwise flush them only with body bytes).
type headerFlusher struct{ http.ResponseWriter }

func (w headerFlusher) WriteHeader(code int) {
	w.ResponseWriter.WriteHeader(code)
	if code >= 200 {
		http.NewResponseController(w.ResponseWriter).Flush()
	}
}

func (w headerFlusher) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// cutReply is the reply a CutHeaders fault (or a Truncate of a reply
// without a body) cuts; the reverse proxy hands it to its ErrorHandler.
type cutReply struct {
	resp  *http.Response
	after int64
}

func (c *cutReply) Error() string { return "faultproxy: reply cut in its headers" }

// send writes the first bytes of the reply's head to the raw connection
// and closes it.
func (c *cutReply) send(w http.ResponseWriter) {
	c.resp.Body.Close()
	var head bytes.Buffer
	fmt.Fprintf(&head, "HTTP/1.1 %s\r\n", c.resp.Status)
	c.resp.Header.Write(&head)
	head.WriteString("\r\n")
	n := min(max(c.after, 1), int64(head.Len()-1))
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	conn.Write(head.Bytes()[:n])
	conn.Close()
}

// errInjected ends a faulty body; the reverse proxy then aborts the
// connection (it cannot send an error mid-body).
var errInjected = errors.New("faultproxy: injected body fault")

func (p *Proxy) faultyBody(ctx context.Context, body io.ReadCloser, rule Rule) io.ReadCloser {
	return &faultyBody{ReadCloser: body, rule: rule, ctx: ctx, closing: p.closing}
}

type faultyBody struct {
	io.ReadCloser
	rule    Rule
	ctx     context.Context
	closing <-chan struct{}
	sent    int64
}

func (b *faultyBody) Read(p []byte) (int, error) {
	switch b.rule.Fault {
	case Slow:
		chunk := b.rule.ChunkSize
		if chunk <= 0 {
			chunk = 1024
		}
		if len(p) > chunk {
			p = p[:chunk]
		}
		select {
		case <-time.After(b.rule.Delay):
		case <-b.ctx.Done():
			return 0, b.ctx.Err()
		case <-b.closing:
			return 0, errInjected
		}
	case Truncate, StallBody:
		left := b.rule.After - b.sent
		if left <= 0 {
			if b.rule.Fault == StallBody {
				select {
				case <-b.ctx.Done():
				case <-b.closing:
				}
			}
			return 0, errInjected
		}
		if int64(len(p)) > left {
			p = p[:left]
		}
	}
	n, err := b.ReadCloser.Read(p)
	b.sent += int64(n)
	return n, err
}

// Start starts a proxy in front of target for t, logging to t and closing
// when t ends.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := New(target, Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}
