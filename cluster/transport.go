package cluster

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// probeByte starts a connection of the admission probe (admission.go) on
// the Raft port. hashicorp's NetworkTransport starts every connection with
// an rpcType byte (0 to 4 in v1.7: append entries ... pre-vote), so this
// one never reaches raft.
const probeByte = 'T'

// streamLayer is raft's TCP stream layer plus what raft's own lacks:
//   - Close also closes the connections it accepted. Without that, a
//     closed node's handlers for its peers' pooled connections (and their
//     sockets) live on until the peers happen to drop them.
//   - The first byte of each accepted connection picks its server: the
//     admission probe (probeByte) or raft, which reads the same byte again.
//   - Raft gets connections only once the node runs it (serveRaft): a node
//     waiting to be admitted closes them, so it answers no vote.
//   - Raft connections carry the dialer's Raft group id, and one of
//     another group is refused (identity.go).
type streamLayer struct {
	net.Listener
	probe func(net.Conn) // serves one probe connection and closes it
	// group returns this node's Raft group id ("" while it has none);
	// refuse is told of each connection refused for another group's id.
	group  func() string
	refuse func(remote net.Addr, theirs, mine string)
	raftOn atomic.Bool
	toRaft chan net.Conn
	done   chan struct{} // closed by Close
	loop   chan struct{} // closed when the accept loop returned

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	// handlers counts accepted connections not closed yet (raft's handler,
	// the probe's, or the router's that reads the first byte close them):
	// the node waits for them before closing the log store a handler may
	// still write (a heartbeat saving a new term panics on a closed store).
	handlers sync.WaitGroup
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func listenStream(addr string, probe func(net.Conn), group func() string, refuse func(net.Addr, string, string)) (*streamLayer, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &streamLayer{Listener: l, probe: probe, group: group, refuse: refuse, toRaft: make(chan net.Conn),
		done: make(chan struct{}), loop: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	go s.acceptLoop()
	return s, nil
}

func (s *streamLayer) acceptLoop() {
	defer close(s.loop)
	pause := 5 * time.Millisecond
	for {
		c, err := s.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors and the like: try again, without spinning.
			select {
			case <-s.done:
				return
			case <-time.After(pause):
			}
			pause = min(2*pause, time.Second)
			continue
		}
		pause = 5 * time.Millisecond
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.handlers.Add(1)
		s.mu.Unlock()
		go s.route(&trackedConn{Conn: c, s: s})
	}
}

// route reads the connection's first byte, without a deadline: raft may
// dial a pipeline connection long before it sends anything on it. Close
// ends the wait by closing the connection.
func (s *streamLayer) route(c *trackedConn) {
	var first [1]byte
	if _, err := io.ReadFull(c.Conn, first[:]); err != nil {
		c.Close()
		return
	}
	if first[0] == probeByte {
		s.probe(c)
		return
	}
	var conn net.Conn = &peekedConn{trackedConn: c, first: first[:]}
	if first[0] == groupByte {
		theirs, err := readGroup(c.Conn)
		if err != nil {
			c.Close()
			return
		}
		if mine := s.group(); mine != "" && theirs != mine {
			s.refuse(c.RemoteAddr(), theirs, mine)
			c.Close()
			return
		}
		conn = c // raft reads its own first byte next
	}
	if !s.raftOn.Load() {
		c.Close()
		return
	}
	select {
	case s.toRaft <- conn:
	case <-s.done:
		c.Close()
	}
}

// serveRaft hands raft the connections from now on.
func (s *streamLayer) serveRaft() { s.raftOn.Store(true) }

func (s *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.toRaft:
		return c, nil
	case <-s.done:
		return nil, net.ErrClosed
	}
}

// Dial connects to a peer's Raft port and names this node's group first,
// once it has one.
func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil {
		return nil, err
	}
	if id := s.group(); id != "" {
		if err := writeGroup(c, id, timeout); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func (s *streamLayer) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	err := s.Listener.Close()
	<-s.loop
	return err
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

// peekedConn gives raft the first byte the router read, then the rest.
type peekedConn struct {
	*trackedConn
	first []byte
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if len(c.first) > 0 && len(p) > 0 {
		n := copy(p, c.first)
		c.first = c.first[n:]
		return n, nil
	}
	return c.trackedConn.Read(p)
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
