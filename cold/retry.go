package cold

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// IsRetryable is the one function that decides whether an error from a
// Bucket method may succeed if the same call is made again. Every retry
// loop (the SDKs' own, the tiering daemon's, the read path's) asks it, so
// the answer is the same everywhere.
//
// The reasoning: retry what a healthy store can return while it is busy,
// restarting, or reached over a flaky network, and nothing that will fail
// the same way every time.
//
//	error                                          retryable  why
//	nil, ErrNotFound, ErrPreconditionFailed        no         an answer, not a failure (backends map
//	                                                          a 404 to ErrNotFound even when its
//	                                                          body was cut short)
//	context.Canceled                               no         the caller gave up
//	context.DeadlineExceeded, net timeouts         yes        one attempt ran out of time
//	a reply that ended early, whatever its status  yes        the connection broke mid-transfer:
//	  (io.ErrUnexpectedEOF; headers cut short)                a body cut short, even of a 200 or a
//	                                                          403, says nothing about the next try
//	connection reset / refused / aborted, EPIPE    yes        the server restarted or a proxy dropped us
//	EOF before a response, use of closed conn      yes        a pooled keep-alive connection was closed
//	TLS certificate errors                         no         configuration; retrying cannot fix it
//	DNS "no such host"                             no         configuration (temporary DNS failures: yes)
//	HTTP 500, 502, 503, 504, 408, 429              yes        server busy or failing, throttling
//	HTTP 501 and every other 4xx                   no         the request is wrong or not allowed
//	S3 codes SlowDown, InternalError,              yes        S3 asks for a retry (some come as 400/403:
//	  ServiceUnavailable, RequestTimeout,                     RequestTimeout, RequestTimeTooSkewed;
//	  RequestTimeTooSkewed, OperationAborted,                 the SDKs correct the clock skew and
//	  Throttling, ExpiredToken, XMinio*Quorum,                refresh expired tokens; a multi-object
//	  XMinioServerNotInitialized, and MinIO's                 delete's per-object errors come with
//	  SlowDownWrite, SlowDownRead (lost quorum)               a code alone, no status)
//	anything else                                  no         unknown failures fail fast, loudly
//
// A deadline is retryable because it usually is a per-attempt timeout; a
// retry loop must still stop when its own context is done, which is
// cheaper to check there (ctx.Err() != nil) than to guess here.
//
// IsRetryable sees through wrapping (errors.As). Backends keep the SDK
// error in the chain; an error exposing HTTPStatusCode() int or
// ErrorCode() string (aws-sdk-go-v2's response and API errors do; the
// minio backend wraps minio.ErrorResponse so that it does) is classified
// by them.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	switch {
	case errors.Is(err, context.Canceled):
		return false
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrPreconditionFailed), errors.Is(err, ErrObjectLocked):
		return false
	case brokenReply(err):
		return true
	}
	// The store answered: its error code and status decide.
	var coded interface{ ErrorCode() string }
	if errors.As(err, &coded) {
		if retryableCodes[coded.ErrorCode()] {
			return true
		}
	}
	var status interface{ HTTPStatusCode() int }
	if errors.As(err, &status) && status.HTTPStatusCode() != 0 {
		return retryableStatus(status.HTTPStatusCode())
	}
	return retryableTransport(err)
}

// retryableCodes are S3 (and MinIO) error codes that ask for a retry
// whatever the status code they come with.
var retryableCodes = map[string]bool{
	"SlowDown":                   true,
	"InternalError":              true,
	"ServiceUnavailable":         true,
	"RequestTimeout":             true, // 400: the socket was idle too long
	"RequestTimeTooSkewed":       true, // 403: the SDK adjusts its clock offset
	"OperationAborted":           true, // 409: a conflicting operation is in flight
	"ConditionalRequestConflict": true, // 409: a concurrent conditional write; S3 asks for a retry
	"Throttling":                 true,
	"ThrottlingException":        true,
	"RequestThrottled":           true,
	"ExpiredToken":               true, // the credential provider refreshes
	"XMinioServerNotInitialized": true,
	"XMinioReadQuorum":           true,
	"XMinioWriteQuorum":          true,
	"SlowDownWrite":              true, // MinIO: 503, no write quorum for the object
	"SlowDownRead":               true, // MinIO: 503, no read quorum for the object
}

func retryableStatus(code int) bool {
	switch code {
	case 408, 429, 500, 502, 503, 504:
		return true
	}
	return false
}

// brokenReply reports a reply that ended early: a body shorter than its
// Content-Length (io.ErrUnexpectedEOF, also when an SDK failed to decode
// it), or status line and headers cut short. Go's transport reports the
// latter only in words ("net/http: HTTP/1.x transport connection broken:
// malformed ..."), and minio-go replaces an EOF before the reply with
// words of its own ("Connection closed by foreign host ... Retry again."),
// so those two are matched by text.
func brokenReply(err error) bool {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	var urlErr *url.Error
	if !errors.As(err, &urlErr) || urlErr.Err == nil {
		return false
	}
	msg := urlErr.Err.Error()
	return strings.Contains(msg, "transport connection broken") || strings.HasPrefix(msg, "Connection closed by foreign host")
}

// retryableTransport classifies errors that never got an HTTP status: the
// request was not sent, the response never came, or the body broke.
func retryableTransport(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	// Misconfiguration that no retry can fix, even though it surfaces as a
	// network error.
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalidCert x509.CertificateInvalidError
	if errors.As(err, &certErr) || errors.As(err, &unknownAuth) || errors.As(err, &hostErr) || errors.As(err, &invalidCert) {
		return false
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return dnsErr.IsTimeout || dnsErr.IsTemporary
	}
	for _, errno := range []syscall.Errno{syscall.ECONNRESET, syscall.ECONNREFUSED, syscall.ECONNABORTED,
		syscall.EPIPE, syscall.ETIMEDOUT, syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.ENETDOWN} {
		if errors.Is(err, errno) {
			return true
		}
	}
	if errors.Is(err, net.ErrClosed) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return true
	}
	// A keep-alive connection the server closed just as we reused it shows
	// up as a bare EOF inside the request error, before any response.
	var urlErr *url.Error
	if errors.As(err, &urlErr) && errors.Is(urlErr.Err, io.EOF) {
		return true
	}
	var sendErr interface{ ConnectionError() bool }
	if errors.As(err, &sendErr) && sendErr.ConnectionError() && errors.Is(err, io.EOF) {
		return true
	}
	return false
}

// Backoff shapes a Retry loop.
type Backoff struct {
	// Attempts is the number of tries, the first included (0: no limit
	// but the context's).
	Attempts int
	// Base is the longest delay before the second try; it doubles with
	// each try up to Max. Each delay is drawn uniformly below it (full
	// jitter), so many callers retrying after one outage do not return in
	// lockstep.
	Base time.Duration
	Max  time.Duration
}

// Retry runs f until it succeeds, returns an error IsRetryable calls
// permanent, the attempts run out, or ctx ends; it returns f's last error
// (not ctx's, which would hide why the store failed). onRetry, if set,
// sees each error that is retried.
func Retry(ctx context.Context, b Backoff, onRetry func(error), f func() error) error {
	var err error
	delay := b.Base
	for attempt := 1; ; attempt++ {
		if err = f(); err == nil || !IsRetryable(err) || (b.Attempts > 0 && attempt >= b.Attempts) || ctx.Err() != nil {
			return err
		}
		if onRetry != nil {
			onRetry(err)
		}
		t := time.NewTimer(time.Duration(rand.Int64N(int64(delay) + 1)))
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		delay = min(delay*2, b.Max)
	}
}
