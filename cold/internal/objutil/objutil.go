package objutil

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/urlredact"
)

// TempPrefix starts the name of the file backend's temporary files. Keys
// whose last element starts with it are refused so that no object can be
// mistaken for (or clobber) an upload in progress.
const TempPrefix = ".tierlog-tmp-"

// CheckKey reports whether key is a valid object key: non-empty,
// slash-separated, relative (no leading slash), without empty, "." or ".."
// elements, backslashes or NUL bytes. The same rule holds for every
// backend, so a key that works on the filesystem works on S3 and back.
func CheckKey(key string) error {
	if key == "" {
		return errors.New("empty key")
	}
	if len(key) > 1024 {
		return fmt.Errorf("key %.40q... is %d bytes long, at most 1024 are allowed", key, len(key))
	}
	if strings.ContainsAny(key, "\\\x00") {
		return fmt.Errorf("key %q contains a backslash or NUL byte", key)
	}
	for _, elem := range strings.Split(key, "/") {
		switch {
		case elem == "":
			return fmt.Errorf("key %q has an empty path element (leading, trailing or double slash)", key)
		case elem == "." || elem == "..":
			return fmt.Errorf("key %q has a %q path element", key, elem)
		case strings.HasPrefix(elem, TempPrefix):
			return fmt.Errorf("key %q has an element starting with the reserved %q", key, TempPrefix)
		}
	}
	return nil
}

// CheckPrefix reports whether prefix is a valid Iter prefix: empty, or a
// key prefix that cannot climb out of the bucket (no "." or ".."
// elements, no leading slash). A trailing slash is allowed and usual.
func CheckPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if strings.ContainsAny(prefix, "\\\x00") {
		return fmt.Errorf("prefix %q contains a backslash or NUL byte", prefix)
	}
	elems := strings.Split(prefix, "/")
	for i, elem := range elems {
		last := i == len(elems)-1
		switch {
		case elem == "" && !last:
			return fmt.Errorf("prefix %q has an empty path element (leading or double slash)", prefix)
		case elem == "." || elem == "..":
			return fmt.Errorf("prefix %q has a %q path element", prefix, elem)
		}
	}
	return nil
}

// CheckFolderPrefix reports whether prefix is a valid Folders prefix: a
// valid Iter prefix that is "" or ends in "/" (a folder).
func CheckFolderPrefix(prefix string) error {
	if err := CheckPrefix(prefix); err != nil {
		return err
	}
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		return fmt.Errorf("prefix %q is not a folder: want \"\" or a prefix ending in \"/\"", prefix)
	}
	return nil
}

// CheckRange validates GetRange arguments.
func CheckRange(off, length int64) error {
	if off < 0 {
		return fmt.Errorf("range offset %d is negative", off)
	}
	if length < -1 {
		return fmt.Errorf("range length %d is invalid (want >= 0, or -1 for the rest of the object)", length)
	}
	return nil
}

// ExactReader returns a reader of body that fails with an error wrapping
// io.ErrUnexpectedEOF if body ends before want bytes, and with an error if
// it holds more. A truncated response must never look like a short object.
// what names the object in the error.
func ExactReader(body io.ReadCloser, want int64, what string) io.ReadCloser {
	return &exactReader{body: body, left: want, want: want, what: what}
}

type exactReader struct {
	body       io.ReadCloser
	left, want int64
	what       string
	err        error
}

func (r *exactReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if int64(len(p)) > r.left+1 {
		// Ask for at most one byte beyond the announced length, so that an
		// overlong body shows without reading it all.
		p = p[:r.left+1]
	}
	n, err := r.body.Read(p)
	if int64(n) > r.left {
		n = int(r.left)
		r.left = 0
		r.err = fmt.Errorf("%s: body longer than the %d bytes announced", r.what, r.want)
		return n, r.err
	}
	r.left -= int64(n)
	switch {
	case err == io.EOF && r.left > 0:
		r.err = fmt.Errorf("%s: body ended after %d of %d bytes: %w", r.what, r.want-r.left, r.want, io.ErrUnexpectedEOF)
	case err == io.EOF:
		r.err = io.EOF
	case err != nil:
		r.err = fmt.Errorf("%s: reading body after %d of %d bytes: %w", r.what, r.want-r.left, r.want, err)
	default:
		return n, nil
	}
	return n, r.err
}

func (r *exactReader) Close() error { return r.body.Close() }

// NotS3 is the open check's diagnosis when the endpoint answered, but not
// as an S3 store does (no request ID, no XML reply): a plain HTTP server,
// such as a store's web console or another service's port, answers a
// ListObjects with a 404 page the SDKs would otherwise report as a missing
// bucket.
func NotS3(status int) string {
	return fmt.Sprintf("the endpoint does not speak S3: it answered HTTP %d without an S3 reply; check that the URL names the store's S3 API port (not a web console or another service)", status)
}

// OpenBackoff paces the retries of the reachability check at open, which
// go on until the open timeout.
var OpenBackoff = cold.Backoff{Base: 100 * time.Millisecond, Max: 2 * time.Second}

// Transport returns the HTTP transport the remote backends use unless
// given one (see ConfigureTransport).
func Transport(stall time.Duration) *http.Transport {
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment}
	ConfigureTransport(tr, stall)
	return tr
}

// ConfigureTransport sets tr up for object storage: the standard dial and
// TLS timeouts, enough idle connections per host for parallel ranged GETs
// and part uploads, and a stall timeout: every read and write on a
// connection must move a byte within stall, so a server that stops
// answering (before the headers or in the middle of a body) fails the
// attempt with a retryable timeout instead of hanging it. A slow transfer
// that keeps moving is not cut.
func ConfigureTransport(tr *http.Transport, stall time.Duration) {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dialer.DialContext(ctx, network, addr)
		if err != nil || stall <= 0 {
			return conn, err
		}
		return &stallConn{Conn: conn, stall: stall}, nil
	}
	tr.ForceAttemptHTTP2 = true
	tr.MaxIdleConns = 256
	tr.MaxIdleConnsPerHost = 64
	tr.IdleConnTimeout = 90 * time.Second
	tr.TLSHandshakeTimeout = 10 * time.Second
	tr.ExpectContinueTimeout = 1 * time.Second
}

// stallConn renews a deadline before each read and write.
type stallConn struct {
	net.Conn
	stall time.Duration
}

func (c *stallConn) Read(p []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.stall)); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = &StallError{Op: "read", Stall: c.stall, Err: err}
	}
	return n, err
}

func (c *stallConn) Write(p []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.stall)); err != nil {
		return 0, err
	}
	n, err := c.Conn.Write(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = &StallError{Op: "write", Stall: c.stall, Err: err}
	}
	return n, err
}

// StallError says a connection moved no bytes for Stall. It is a net.Error
// whose Timeout is true, which cold.IsRetryable accepts.
type StallError struct {
	Op    string
	Stall time.Duration
	Err   error
}

func (e *StallError) Error() string {
	return fmt.Sprintf("connection stalled: no bytes could be %s for %v", map[string]string{"read": "read", "write": "written"}[e.Op], e.Stall)
}
func (e *StallError) Unwrap() error   { return e.Err }
func (e *StallError) Timeout() bool   { return true }
func (e *StallError) Temporary() bool { return true }

// ContextReader returns a reader of r that fails with ctx's error once ctx
// is done, so a long copy from a slow source stops when its caller gives up.
func ContextReader(ctx context.Context, r io.Reader) io.Reader {
	return ctxReader{ctx: ctx, r: r}
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// SizedReader returns a reader of r that holds exactly size bytes, or
// fails: with an error wrapping io.ErrUnexpectedEOF if r ends early, and
// with an error (instead of the last bytes) if r holds more. Backends
// upload through it so that a caller's wrong size fails the upload rather
// than storing a cut or padded object. key names the object in errors.
func SizedReader(r io.Reader, size int64, key string) io.Reader {
	return &sizedReader{r: r, left: size, size: size, key: key}
}

type sizedReader struct {
	r          io.Reader
	left, size int64
	key        string
	err        error
}

func (s *sizedReader) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.left == 0 {
		s.err = s.checkEnd()
		return 0, s.err
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, err := s.r.Read(p)
	s.left -= int64(n)
	if s.left == 0 {
		// Check for surplus before handing over the last bytes, so the
		// upload fails before it can complete.
		if end := s.checkEnd(); end != io.EOF {
			s.err = end
			return 0, end
		}
		return n, nil
	}
	switch {
	case err == io.EOF:
		s.err = fmt.Errorf("upload %s: the reader ended after %d bytes, size says %d: %w", s.key, s.size-s.left, s.size, io.ErrUnexpectedEOF)
	case err != nil:
		s.err = fmt.Errorf("upload %s: reading after %d bytes: %w", s.key, s.size-s.left, err)
	default:
		return n, nil
	}
	return n, s.err
}

// checkEnd reads one byte more: io.EOF if there is none, else an error.
func (s *sizedReader) checkEnd() error {
	var one [1]byte
	for range 100 {
		n, err := s.r.Read(one[:])
		if n > 0 {
			return fmt.Errorf("upload %s: the reader holds more than the %d bytes size says", s.key, s.size)
		}
		if err == io.EOF {
			return io.EOF
		}
		if err != nil {
			return fmt.Errorf("upload %s: reading after %d bytes: %w", s.key, s.size, err)
		}
	}
	return fmt.Errorf("upload %s: the reader returned no data and no EOF 100 times", s.key)
}

// BucketPrefix turns the path of a bucket URL ("/logs/prod", "/logs/",
// "" or "/") into the prefix prepended to keys: "" or "logs/prod/".
func BucketPrefix(path string) (string, error) {
	p := strings.Trim(path, "/")
	if p == "" {
		return "", nil
	}
	p += "/"
	if err := CheckPrefix(p); err != nil {
		return "", fmt.Errorf("bucket prefix: %w", err)
	}
	return p, nil
}

// Answer is an S3 error answer, whichever SDK reported it: the code and
// message of the error body and the HTTP status. The backends read it
// from their SDK's error; what it means is decided here, once.
type Answer struct {
	Code, Message string
	Status        int
}

// LockRefused reports a request refused for Object Lock: S3 answers 403
// AccessDenied, MinIO 400 InvalidRequest "Object is WORM protected and
// cannot be overwritten"; some stores say ObjectLocked. A 403 with another
// code is not (RequestTimeTooSkewed, ExpiredToken: retried;
// InvalidAccessKeyId, SignatureDoesNotMatch: configuration).
func (a Answer) LockRefused() bool {
	return a.Code == "AccessDenied" || a.Code == "ObjectLocked" || a.Status == http.StatusForbidden && a.Code == "" ||
		a.Code == "InvalidRequest" && strings.Contains(a.Message, "WORM")
}

// Denied reports a request the credentials may not make: 403
// AccessDenied (which S3 also answers an Object Lock refusal with; see
// LockRefused), or a 403 whose body was not read.
func (a Answer) Denied() bool {
	return a.Code == "AccessDenied" || a.Status == http.StatusForbidden && a.Code == ""
}

// NoLockConfig reports the answer for a bucket without an Object Lock
// configuration, or for a version with no retention (or no legal hold).
func (a Answer) NoLockConfig() bool {
	return a.Code == "ObjectLockConfigurationNotFoundError" || a.Code == "NoSuchObjectLockConfiguration"
}

// NotImplemented reports a store that does not have the operation at all
// (S3's 501 NotImplemented): some S3-compatible stores keep no versions
// and answer a version listing so.
func (a Answer) NotImplemented() bool {
	return a.Code == "NotImplemented" || a.Status == http.StatusNotImplemented
}

// IsNetworkError reports whether err happened on the way to the server
// (dial, TLS, connection broken, no response), as opposed to an answer.
func IsNetworkError(err error) bool {
	var netErr net.Error
	var urlErr *url.Error
	var sendErr interface{ ConnectionError() bool }
	return errors.As(err, &netErr) || errors.As(err, &urlErr) || (errors.As(err, &sendErr) && sendErr.ConnectionError())
}

// RedactURL is u as text with every password hidden (urlredact.URL).
// Errors name a bucket URL through it.
func RedactURL(u *url.URL) string { return urlredact.URL(u) }

// ParseError is url.Parse's error without the URL it quotes, which may
// hold a password; the cause ("invalid URL escape ...") stays.
func ParseError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// ReadSmall reads the body of a conditional upload, which goes in one
// request: all of r, which must hold size bytes (size -1: any number) and
// at most limit. key names the object in errors.
func ReadSmall(r io.Reader, size, limit int64, key string) ([]byte, error) {
	if size > limit {
		return nil, fmt.Errorf("conditional upload %s: %d bytes, at most %d are allowed", key, size, limit)
	}
	if size >= 0 {
		r = SizedReader(r, size, key)
	}
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("conditional upload %s: %w", key, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("conditional upload %s: more than the %d bytes allowed", key, limit)
	}
	return data, nil
}
