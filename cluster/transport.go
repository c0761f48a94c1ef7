package cluster

import (
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// streamLayer is raft's TCP stream layer plus one thing raft's own lacks:
// Close also closes the connections it accepted. Without that, a closed
// node's handlers for its peers' pooled connections (and their sockets)
// live on until the peers happen to drop them.
type streamLayer struct {
	net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	// handlers counts accepted connections whose raft handler has not
	// returned (it closes its connection on the way out): the node waits
	// for them before closing the log store a handler may still write
	// (a heartbeat saving a new term panics on a closed store).
	handlers sync.WaitGroup
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func listenStream(addr string) (*streamLayer, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &streamLayer{Listener: l, conns: map[net.Conn]struct{}{}}, nil
}

func (s *streamLayer) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	s.conns[c] = struct{}{}
	s.handlers.Add(1)
	return &trackedConn{Conn: c, s: s}, nil
}

func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}

func (s *streamLayer) Close() error {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	return s.Listener.Close()
}

type trackedConn struct {
	net.Conn
	s    *streamLayer
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c.Conn)
		c.s.mu.Unlock()
		c.s.handlers.Done()
	})
	return c.Conn.Close()
}

// waitHandlers waits, at most d, for the handlers of accepted connections
// to return (after Close closed their sockets); it reports whether they did.
func (s *streamLayer) waitHandlers(d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		s.handlers.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}
