package kafka

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// writeTimeout bounds one response write: a client that stops reading its
// responses loses the connection instead of holding the writer forever.
const writeTimeout = 30 * time.Second

// readChunk is the most a frame's buffer grows ahead of the bytes that
// arrived: a size prefix claiming 100 MiB allocates only what is sent.
const readChunk = 1 << 20

// clientConn is one client connection: a reader that decodes requests and
// starts them in order, and a writer that sends their responses in the
// same order as each becomes ready.
type clientConn struct {
	s  *Server
	nc net.Conn

	// ctx ends when the connection closes, ending its waits.
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once

	// queue holds the requests read and not yet answered, in order.
	queue chan *pending

	// draining is set by Shutdown: the reader stops (stopReading).
	draining atomic.Bool

	// clientID is the last request header's client id (for logs).
	clientID string

	// fetches is what this connection's fetches hold of the fetch budget
	// (see fetchRound); fetchTurn lets one fetch round of the connection
	// size and take its hold at a time.
	fetches   atomic.Int64
	fetchTurn chan struct{}
}

// pending is one request's place in the response order.
type pending struct {
	hdr  header
	done chan struct{}
	resp kmsg.Response // nil: send nothing
	// closeAfter closes the connection once the responses ahead are sent.
	closeAfter bool
}

// header is a request header (v1, and v2's tagged fields when flexible).
type header struct {
	key           int16
	version       int16
	correlationID int32
	clientID      *string
}

// reply is what a handler returns: a response ready now, one that must
// wait (later runs on its own goroutine; its response is still sent in
// request order), or none at all (a Produce with acks=0).
type reply struct {
	resp  kmsg.Response
	later func(ctx context.Context) kmsg.Response
	none  bool
	// closeConn closes the connection once the answers ahead are sent,
	// reading no further request: how Kafka reports a failed Produce with
	// acks=0 (which has no response), so the client refreshes metadata.
	closeConn bool
}

func newClientConn(s *Server, nc net.Conn) *clientConn {
	ctx, cancel := context.WithCancel(s.ctx)
	return &clientConn{s: s, nc: nc, ctx: ctx, cancel: cancel, queue: make(chan *pending, pipelineDepth),
		fetchTurn: make(chan struct{}, 1)}
}

func (c *clientConn) close() {
	c.once.Do(func() {
		c.cancel()
		c.nc.Close()
	})
}

// serve runs the connection until the client goes away, a protocol error,
// a request that closes it, or the server closes or drains.
func (c *clientConn) serve() {
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writeLoop()
	}()
	err := c.readLoop()
	gone := clientGone(err)
	if gone {
		// The client is gone: end the waits in flight now, as Kafka drops
		// delayed responses when the channel closes, rather than hold the
		// connection, its goroutines and the fetch budget its queued
		// responses hold until a long poll's MaxWait.
		c.cancel()
	}
	// Otherwise the client is still there, waiting for the answers ahead
	// of the request that closes the connection (or of the drain): each
	// is written when its wait ends on its own terms (a long poll at its
	// MaxWait, or at once in a drain; a produce after its fsync), as Kafka,
	// which reads no request while one is in flight, answers them first.
	close(c.queue)
	<-writerDone
	if !gone {
		c.linger()
	}
	c.close()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, errDraining) && c.ctx.Err() == nil {
		c.s.log.Debug("kafka connection closed", "remote", c.nc.RemoteAddr().String(), "client_id", c.clientID, "err", err)
	}
}

// clientGone says whether readLoop's error means the client can no longer
// read answers (its connection ended or failed, or it trickled a request
// past FrameTimeout) rather than that the server stops reading from a
// client still there: nil (a request that closes the connection), a
// protocol error in what arrived, or a drain (Shutdown).
func clientGone(err error) bool {
	var pe *protocolError
	switch {
	case err == nil, errors.Is(err, errDraining):
		return false
	case errors.As(err, &pe):
		var ne net.Error
		return errors.Is(pe.err, io.EOF) || errors.Is(pe.err, io.ErrUnexpectedEOF) || errors.As(pe.err, &ne)
	}
	return true
}

// lingerTimeout bounds how long a closing connection whose client is still
// there reads and drops what the client sends after its last answer.
const lingerTimeout = time.Second

// linger half-closes the connection once its answers are written, then
// reads and drops what the client still sends (requests that will not be
// answered) until the client closes its side, for at most lingerTimeout.
// Closing with input unread would make the kernel send a reset, which
// discards answers not yet read by the client or still in flight to it.
func (c *clientConn) linger() {
	cw, ok := c.nc.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	end := time.Now().Add(lingerTimeout)
	for time.Now().Before(end) {
		// Set again after a timeout: a concurrent stopReading may have
		// replaced this deadline with a past one.
		_ = c.nc.SetReadDeadline(end)
		_, err := io.Copy(io.Discard, c.nc)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return // the client closed (nil: EOF), or the connection failed
		}
	}
}

// protocolError closes a connection for a request the server will not
// answer: Kafka closes the connection for these too, and clients
// reconnect (or report the version problem).
type protocolError struct {
	reason string
	err    error
}

func (e *protocolError) Error() string { return e.reason + ": " + e.err.Error() }

func (c *clientConn) readLoop() error {
	r := bufio.NewReaderSize(c.nc, 64<<10)
	var sizeBuf [4]byte
	for {
		// Between requests a connection may idle up to the idle timeout;
		// once a request has started, its size and then each readChunk of
		// it must arrive within FrameTimeout: a large request on a slow,
		// steady link arrives, a client trickling bytes is closed.
		if err := c.readWithin(c.s.opts.IdleTimeout); err != nil {
			return err
		}
		if _, err := io.ReadFull(r, sizeBuf[:1]); err != nil {
			if c.draining.Load() {
				return errDraining
			}
			return err
		}
		if err := c.readWithin(c.s.opts.FrameTimeout); err != nil {
			return err
		}
		if _, err := io.ReadFull(r, sizeBuf[1:]); err != nil {
			return c.fail("truncated size", err)
		}
		size := int32(binary.BigEndian.Uint32(sizeBuf[:]))
		if size < 8 || size > c.s.opts.MaxRequestBytes {
			return c.fail("bad size", fmt.Errorf("request size %d outside 8 to %d bytes (kafka_max_request_bytes)", size, c.s.opts.MaxRequestBytes))
		}
		body, err := readFrame(r, int(size), func() error { return c.readWithin(c.s.opts.FrameTimeout) })
		if err != nil {
			return c.fail("truncated request", err)
		}
		p, err := c.start(body)
		if err != nil {
			// Answers to the requests before this one still go out.
			c.queue <- &pending{done: closedChan, closeAfter: true}
			return err
		}
		select {
		case c.queue <- p:
		case <-c.ctx.Done():
			// Never written: a response it holds budget for gives it back.
			dropAnswer(p)
			return c.ctx.Err()
		}
		if p.closeAfter {
			return nil
		}
	}
}

// errDraining ends the reader of a connection when the server drains.
var errDraining = errors.New("server shutting down")

// readWithin sets the read deadline d from now, unless the server drains.
// It checks after setting: stopReading sets draining, then a past
// deadline, so either this sees draining or that deadline comes after
// this one and the read it bounds returns at once.
func (c *clientConn) readWithin(d time.Duration) error {
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	if c.draining.Load() {
		return errDraining
	}
	return nil
}

// stopReading makes the reader return errDraining instead of reading on
// (Shutdown): requests already read are answered, then serve closes.
func (c *clientConn) stopReading() {
	c.draining.Store(true)
	_ = c.nc.SetReadDeadline(time.Unix(1, 0))
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (c *clientConn) fail(reason string, err error) error {
	if c.draining.Load() {
		return errDraining // the server stopped this read, not the client
	}
	c.s.m.errors.WithLabelValues(reason).Inc()
	return &protocolError{reason: reason, err: err}
}

// readFrame reads n bytes, growing the buffer at most readChunk ahead of
// what has arrived. renew runs before each chunk (to set its deadline).
func readFrame(r io.Reader, n int, renew func() error) ([]byte, error) {
	buf := make([]byte, 0, min(n, readChunk))
	for len(buf) < n {
		if err := renew(); err != nil {
			return nil, err
		}
		want := min(n-len(buf), readChunk)
		if cap(buf)-len(buf) < want {
			grown := make([]byte, len(buf), min(n, max(2*cap(buf), len(buf)+want)))
			copy(grown, buf)
			buf = grown
		}
		m, err := io.ReadFull(r, buf[len(buf):len(buf)+want])
		buf = buf[:len(buf)+m]
		if err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// start decodes one request and starts handling it. An error closes the
// connection after the responses already queued.
func (c *clientConn) start(body []byte) (*pending, error) {
	hdr, a, req, err := decodeRequest(body)
	if hdr.clientID != nil {
		c.clientID = *hdr.clientID
	}
	var pe *protocolError
	if errors.As(err, &pe) {
		return nil, c.fail(pe.reason, pe.err)
	}
	p := &pending{hdr: hdr, done: make(chan struct{})}
	if req == nil {
		// Clients send their newest ApiVersions first and read the v0
		// reply (error and our ranges) to downgrade.
		p.hdr.version = 0
		p.resp = apiVersionsUnsupported()
		close(p.done)
		return p, nil
	}
	c.s.m.requests.WithLabelValues(kmsg.NameForKey(hdr.key)).Inc()
	// Which versions each client chooses (the README's table is built
	// from these lines); guarded so the hot path boxes nothing at info.
	if c.s.log.Enabled(c.ctx, slog.LevelDebug) {
		c.s.log.Debug("kafka request", "api", kmsg.NameForKey(hdr.key), "version", hdr.version, "client_id", c.clientID)
	}
	rep, err := c.handle(a, req)
	if err != nil {
		return nil, c.fail("handler failed", err)
	}
	p.closeAfter = rep.closeConn
	switch {
	case rep.none:
		close(p.done)
	case rep.later != nil:
		// The goroutine names the request kind, not req: once the handler
		// has returned, the frame is garbage unless later itself keeps it.
		name, later := kmsg.NameForKey(hdr.key), rep.later
		go func() {
			defer close(p.done)
			p.resp = c.protect(name, func() kmsg.Response { return later(c.ctx) })
		}()
	default:
		p.resp = rep.resp
		close(p.done)
	}
	return p, nil
}

// decodeRequest parses a request's header, finds its kind in the table and
// decodes its body. A nil request with no error is an ApiVersions of a
// version the server does not know (answered with the v0 reply); an error
// is a *protocolError, for which the connection closes.
func decodeRequest(body []byte) (header, api, kmsg.Request, error) {
	hdr, rest, err := parseHeader(body)
	if err != nil {
		return hdr, api{}, nil, &protocolError{"bad header", err}
	}
	a, ok := apis[hdr.key]
	if !ok {
		return hdr, a, nil, &protocolError{"unknown api", fmt.Errorf("api key %d (%s) is not supported", hdr.key, kmsg.NameForKey(hdr.key))}
	}
	if hdr.version < a.min || hdr.version > a.max {
		if hdr.key == kmsg.ApiVersions.Int16() {
			return hdr, a, nil, nil
		}
		return hdr, a, nil, &protocolError{"unsupported version", fmt.Errorf("%s v%d (supported v%d to v%d)", kmsg.NameForKey(hdr.key), hdr.version, a.min, a.max)}
	}
	req := kmsg.RequestForKey(hdr.key)
	req.SetVersion(hdr.version)
	if req.IsFlexible() {
		if rest, err = skipTags(rest); err != nil {
			return hdr, a, nil, &protocolError{"bad header", err}
		}
	}
	if err := req.ReadFrom(rest); err != nil {
		return hdr, a, nil, &protocolError{"malformed request", fmt.Errorf("%s v%d: %w", kmsg.NameForKey(hdr.key), hdr.version, err)}
	}
	return hdr, a, req, nil
}

// handle runs a handler, turning a panic (a bug, never bad input: the
// request decoded) into a closed connection rather than a dead server.
func (c *clientConn) handle(a api, req kmsg.Request) (rep reply, err error) {
	defer func() {
		if v := recover(); v != nil {
			c.s.log.Error("kafka handler panicked", "api", kmsg.NameForKey(req.Key()), "panic", v, "stack", string(debug.Stack()))
			err = fmt.Errorf("internal error handling %s", kmsg.NameForKey(req.Key()))
		}
	}()
	return a.handle(c.s, c, req), nil
}

// protect runs a deferred handler; a panic yields no response and closes
// the connection. A handler that holds fetch budget gives it back as it
// unwinds (see fetchWait).
func (c *clientConn) protect(api string, f func() kmsg.Response) (resp kmsg.Response) {
	defer func() {
		if v := recover(); v != nil {
			c.s.log.Error("kafka handler panicked", "api", api, "panic", v, "stack", string(debug.Stack()))
			resp = nil
			c.close()
		}
	}()
	return f()
}

func (c *clientConn) writeLoop() {
	w := bufio.NewWriterSize(c.nc, 64<<10)
	var buf []byte
	for p := range c.queue {
		if !c.awaitAnswer(p, w) {
			// The connection or server closed while this answer was not
			// ready: it and the rest of the queue are dropped.
			dropAnswer(p)
			continue
		}
		if p.resp != nil {
			if h, ok := p.resp.(*held); ok && h.size > cap(buf) {
				buf = make([]byte, 0, h.size)
			}
			buf = appendResponse(buf[:0], p.hdr, p.resp)
			_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
			_, err := w.Write(buf)
			release(p.resp)
			if cap(buf) > maxKeptBuffer {
				buf = nil // a large fetch's buffer is not kept for the connection's life
			}
			if err != nil {
				c.close()
				continue // drain the queue so the reader is not blocked
			}
		}
		if p.closeAfter {
			// The last item: serve closes the connection once this
			// loop ends, letting the client read what was written.
			if err := w.Flush(); err != nil {
				c.close()
			}
			continue
		}
		// Flush when nothing else is ready to go, so pipelined answers
		// share a write.
		if len(c.queue) == 0 {
			if err := w.Flush(); err != nil {
				c.close()
			}
		}
	}
	_ = w.Flush()
}

// awaitAnswer waits until p's answer is ready (true) or the connection's
// context ends first (false). A produce's answer waits for its fsync,
// which a hung disk can hold forever: Close (Shutdown's end) must not wait
// for it, or the process never gets to its uploads. The record stays
// appended and becomes durable per its flush policy; only the answer is
// lost, and the client retries (an idempotent producer's sequence keeps
// the retry from storing it twice).
func (c *clientConn) awaitAnswer(p *pending, w *bufio.Writer) bool {
	select {
	case <-p.done:
		return true
	default:
	}
	if c.ctx.Err() != nil {
		return false
	}
	// The next answer is not ready: send those buffered now rather than
	// hold them behind it (a long poll can wait seconds).
	if w.Buffered() > 0 {
		_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if err := w.Flush(); err != nil {
			c.close()
		}
	}
	select {
	case <-p.done:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// dropAnswer gives back what p's answer holds (fetch budget) once its
// handler returns, without writing it. At most pipelineDepth of these wait
// per closed connection, each for a handler that sees the ended context
// (or for an fsync).
func dropAnswer(p *pending) {
	select {
	case <-p.done:
		release(p.resp)
	default:
		go func() { <-p.done; release(p.resp) }()
	}
}

// maxKeptBuffer is the largest response buffer a connection keeps between
// responses: bigger ones (fetches) are encoded into a fresh buffer, which
// the fetch budget counts, and dropped once written.
const maxKeptBuffer = 1 << 20

// held is a response that holds memory budget (a fetch's records) until
// it has been written to the connection or dropped with it.
type held struct {
	kmsg.Response
	release func()
	// size is about the encoded length, for the writer to allocate once.
	size int
}

// release gives back what resp holds, if anything.
func release(resp kmsg.Response) {
	if h, ok := resp.(*held); ok {
		h.release()
	}
}

// appendResponse frames resp: size, correlation id, the v1 header's tags
// when the response is flexible (never for ApiVersions, whose response
// header is always v0 so a client can read it at any version), body.
func appendResponse(dst []byte, hdr header, resp kmsg.Response) []byte {
	resp.SetVersion(hdr.version)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(hdr.correlationID))
	if resp.IsFlexible() && hdr.key != kmsg.ApiVersions.Int16() {
		dst = append(dst, 0) // no tagged fields
	}
	dst = resp.AppendTo(dst)
	binary.BigEndian.PutUint32(dst, uint32(len(dst)-4))
	return dst
}

// parseHeader reads the fixed request header fields (v1: key, version,
// correlation id, nullable client id) and returns what follows.
func parseHeader(b []byte) (header, []byte, error) {
	var h header
	if len(b) < 10 {
		return h, nil, fmt.Errorf("request header needs 10 bytes, got %d", len(b))
	}
	h.key = int16(binary.BigEndian.Uint16(b))
	h.version = int16(binary.BigEndian.Uint16(b[2:]))
	h.correlationID = int32(binary.BigEndian.Uint32(b[4:]))
	n := int16(binary.BigEndian.Uint16(b[8:]))
	b = b[10:]
	switch {
	case n == -1:
	case n < 0 || int(n) > len(b):
		return h, nil, fmt.Errorf("client id length %d with %d bytes left", n, len(b))
	default:
		id := string(b[:n])
		h.clientID = &id
		b = b[n:]
	}
	return h, b, nil
}

// skipTags skips a flexible header's tagged fields.
func skipTags(b []byte) ([]byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return nil, errors.New("bad tagged field count")
	}
	b = b[k:]
	for range n {
		_, k := binary.Uvarint(b) // tag
		if k <= 0 {
			return nil, errors.New("bad tag")
		}
		b = b[k:]
		size, k := binary.Uvarint(b)
		if k <= 0 || size > uint64(len(b)-k) {
			return nil, errors.New("bad tag size")
		}
		b = b[k+int(size):]
	}
	return b, nil
}
