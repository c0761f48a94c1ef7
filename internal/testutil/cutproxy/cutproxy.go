// Package cutproxy is a TCP proxy for tests that cuts connections, as a
// flaky network does: put it in front of a real server (the Kafka
// listener) and point the client at it. Each connection is cut - both
// sides closed at once - after a number of bytes, drawn from [MinBytes,
// MaxBytes] by a seeded source, has passed through it in either
// direction, so a cut falls anywhere: inside a request, between a request
// and its response, inside a response. (faultproxy does the same for
// HTTP requests; this one knows nothing of the protocol.)
//
//	p := cutproxy.Start(t, kafkaAddr, cutproxy.Options{MinBytes: 8 << 10, MaxBytes: 256 << 10, Seed: 1})
//	// ... point the client at p.Addr(), produce ...
//	p.SetCutting(false) // let the client finish
//	t.Logf("%d connections cut", p.Cuts())
package cutproxy

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Options choose when connections are cut.
type Options struct {
	// MinBytes and MaxBytes bound the bytes (both directions together) a
	// connection carries before it is cut.
	MinBytes, MaxBytes int64
	// Seed makes the sequence of cut points repeatable.
	Seed uint64
}

// Proxy forwards connections to one target and cuts them.
type Proxy struct {
	ln     net.Listener
	target string
	opts   Options

	cutting atomic.Bool
	cuts    atomic.Int64
	conns   atomic.Int64

	mu   sync.Mutex
	rng  *rand.Rand
	open map[net.Conn]struct{}
	wg   sync.WaitGroup
}

// Start listens on a free loopback port and forwards to target until the
// test ends.
func Start(t testing.TB, target string, opts Options) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if opts.MaxBytes < opts.MinBytes {
		opts.MaxBytes = opts.MinBytes
	}
	p := &Proxy{ln: ln, target: target, opts: opts, rng: rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15)),
		open: map[net.Conn]struct{}{}}
	p.cutting.Store(opts.MaxBytes > 0)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the address clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cuts is how many connections the proxy has cut.
func (p *Proxy) Cuts() int64 { return p.cuts.Load() }

// Conns is how many connections the proxy has accepted.
func (p *Proxy) Conns() int64 { return p.conns.Load() }

// SetCutting turns cutting on or off for every connection, open or new.
func (p *Proxy) SetCutting(on bool) { p.cutting.Store(on) }

// Close stops accepting and closes every connection.
func (p *Proxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.open {
		c.Close()
	}
	p.open = nil
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.conns.Add(1)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(c)
		}()
	}
}

func (p *Proxy) track(c net.Conn, on bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !on {
		delete(p.open, c)
		return true
	}
	if p.open == nil {
		return false // closed
	}
	p.open[c] = struct{}{}
	return true
}

func (p *Proxy) serve(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	if !p.track(client, true) || !p.track(server, true) {
		client.Close()
		server.Close()
		return
	}
	defer p.track(client, false)
	defer p.track(server, false)

	p.mu.Lock()
	budget := p.opts.MinBytes
	if span := p.opts.MaxBytes - p.opts.MinBytes; span > 0 {
		budget += p.rng.Int64N(span + 1)
	}
	p.mu.Unlock()
	var left atomic.Int64
	left.Store(budget)
	var once sync.Once
	cut := func(counted bool) {
		once.Do(func() {
			if counted {
				p.cuts.Add(1)
			}
			client.Close()
			server.Close()
		})
	}
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		buf := make([]byte, 16<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				m := int64(n)
				if p.cutting.Load() {
					if rest := left.Add(-m); rest < 0 {
						// Forward what fits, then cut.
						if keep := m + rest; keep > 0 {
							dst.Write(buf[:keep])
						}
						cut(true)
						return
					}
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					cut(false)
					return
				}
			}
			if err != nil {
				// EOF or an error: half-close is not modelled, a side
				// that ends ends the connection.
				cut(false)
				return
			}
		}
	}
	go pipe(server, client)
	go pipe(client, server)
	wg.Wait()
}
