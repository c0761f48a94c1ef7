package cold_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"syscall"
	"testing"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/tierlog/tierlog/cold"
)

// awsErr builds the error chain aws-sdk-go-v2 returns for a response with
// status and code: OperationError → ResponseError → smithy ResponseError
// → APIError.
func awsErr(status int, code string) error {
	api := &smithy.GenericAPIError{Code: code, Message: "test"}
	resp := &awshttp.ResponseError{
		ResponseError: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
			Err:      api,
		},
		RequestID: "req",
	}
	return &smithy.OperationError{ServiceID: "S3", OperationName: "GetObject", Err: resp}
}

// awsErrWrapping is the chain aws-sdk-go-v2 returns when a response with
// status failed to deserialize with err.
func awsErrWrapping(status int, err error) error {
	resp := &awshttp.ResponseError{
		ResponseError: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
			Err:      &smithy.DeserializationError{Err: err},
		},
	}
	return &smithy.OperationError{ServiceID: "S3", OperationName: "ListObjectsV2", Err: resp}
}

func TestIsRetryableTable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"not found", fmt.Errorf("get k: %w", cold.ErrNotFound), false},
		{"not found and an SDK 404", fmt.Errorf("get k: %w: %w", cold.ErrNotFound, awsErr(404, "NoSuchKey")), false},
		{"canceled", fmt.Errorf("get: %w", context.Canceled), false},
		{"canceled inside a url.Error", &url.Error{Op: "Get", URL: "u", Err: context.Canceled}, false},
		{"deadline", fmt.Errorf("get: %w", context.DeadlineExceeded), true},
		{"unexpected EOF", fmt.Errorf("read body: %w", io.ErrUnexpectedEOF), true},
		{"bare EOF", io.EOF, false},
		{"EOF before a response", &url.Error{Op: "Get", URL: "u", Err: io.EOF}, true},
		{"EOF in a send error", &smithyhttp.RequestSendError{Err: io.EOF}, true},
		{"reset", &net.OpError{Op: "read", Net: "tcp", Err: &netSyscallErr{syscall.ECONNRESET}}, true},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: &netSyscallErr{syscall.ECONNREFUSED}}, true},
		{"broken pipe", &net.OpError{Op: "write", Net: "tcp", Err: &netSyscallErr{syscall.EPIPE}}, true},
		{"closed conn", fmt.Errorf("x: %w", net.ErrClosed), true},
		{"dns no such host", &net.DNSError{Err: "no such host", Name: "nope.invalid", IsNotFound: true}, false},
		{"dns temporary", &net.DNSError{Err: "server misbehaving", Name: "x", IsTemporary: true}, true},
		{"500", awsErr(500, "InternalError"), true},
		{"502", awsErr(502, ""), true},
		{"503 SlowDown", awsErr(503, "SlowDown"), true},
		{"503 other code", awsErr(503, "Whatever"), true},
		{"504", awsErr(504, ""), true},
		{"429", awsErr(429, "TooManyRequests"), true},
		{"408", awsErr(408, ""), true},
		{"400 RequestTimeout", awsErr(400, "RequestTimeout"), true},
		{"403 RequestTimeTooSkewed", awsErr(403, "RequestTimeTooSkewed"), true},
		{"409 OperationAborted", awsErr(409, "OperationAborted"), true},
		{"400 ExpiredToken", awsErr(400, "ExpiredToken"), true},
		{"403 AccessDenied", awsErr(403, "AccessDenied"), false},
		{"403 InvalidAccessKeyId", awsErr(403, "InvalidAccessKeyId"), false},
		{"403 SignatureDoesNotMatch", awsErr(403, "SignatureDoesNotMatch"), false},
		{"404 NoSuchBucket", awsErr(404, "NoSuchBucket"), false},
		{"400 InvalidArgument", awsErr(400, "InvalidArgument"), false},
		{"416 InvalidRange", awsErr(416, "InvalidRange"), false},
		{"501 NotImplemented", awsErr(501, "NotImplemented"), false},
		{"code only, retryable", &smithy.GenericAPIError{Code: "SlowDown"}, true},
		{"code only, MinIO lost quorum", &smithy.GenericAPIError{Code: "SlowDownWrite"}, true},
		{"code only, other", &smithy.GenericAPIError{Code: "AccessDenied"}, false},
		{"unknown", errors.New("something odd"), false},
		// A reply cut short is transient whatever its status said.
		{"200 with a truncated body", awsErrWrapping(200, fmt.Errorf("deserialization failed: %w", io.ErrUnexpectedEOF)), true},
		{"403 with a truncated body", awsErrWrapping(403, fmt.Errorf("failed to copy error response body, %w", io.ErrUnexpectedEOF)), true},
		{"headers cut short", &url.Error{Op: "Get", URL: "u", Err: errors.New(`net/http: HTTP/1.x transport connection broken: malformed MIME header: missing colon: "C"`)}, true},
		{"minio-go's EOF before a reply", &url.Error{Op: "Put", URL: "u", Err: errors.New("Connection closed by foreign host u. Retry again.")}, true},
		{"url.Error of a bad request", &url.Error{Op: "Get", URL: "u", Err: errors.New("unsupported protocol scheme \"ftp\"")}, false},
	} {
		if got := cold.IsRetryable(tc.err); got != tc.want {
			t.Errorf("%s: IsRetryable(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// netSyscallErr is what the net package wraps an errno in.
type netSyscallErr struct{ errno syscall.Errno }

func (e *netSyscallErr) Error() string { return e.errno.Error() }
func (e *netSyscallErr) Unwrap() error { return e.errno }

// Errors produced by a real HTTP client against real misbehaving servers,
// not hand-built: the classification must hold for what the stack returns.
func TestIsRetryableRealNetworkErrors(t *testing.T) {
	tr := &http.Transport{ResponseHeaderTimeout: 200 * time.Millisecond}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	get := func(ctx context.Context, u string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = io.ReadAll(resp.Body)
		return err
	}

	t.Run("connection refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		err = get(context.Background(), "http://"+addr+"/")
		if err == nil || !cold.IsRetryable(err) {
			t.Errorf("IsRetryable(%v) = false, want true", err)
		}
	})

	t.Run("reset before the response", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			conn.(*net.TCPConn).SetLinger(0) // RST, not FIN
			conn.Close()
		}))
		defer srv.Close()
		err := get(context.Background(), srv.URL)
		if err == nil || !cold.IsRetryable(err) {
			t.Errorf("IsRetryable(%v) = false, want true", err)
		}
	})

	t.Run("truncated body", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "100")
			w.Write(make([]byte, 10))
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // close the connection mid-body
		}))
		defer srv.Close()
		err := get(context.Background(), srv.URL)
		if !errors.Is(err, io.ErrUnexpectedEOF) || !cold.IsRetryable(err) {
			t.Errorf("got %v; want a retryable error wrapping io.ErrUnexpectedEOF", err)
		}
	})

	t.Run("headers cut short", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			conn.Write([]byte("HTTP/1.1 200 OK\r\nContent-Le"))
			conn.Close()
		}))
		defer srv.Close()
		err := get(context.Background(), srv.URL)
		if err == nil || !cold.IsRetryable(err) {
			t.Errorf("IsRetryable(%v) = false, want true", err)
		}
	})

	t.Run("stalled server", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done() // answer nothing until the client leaves
		}))
		defer srv.Close()
		err := get(context.Background(), srv.URL)
		if err == nil || !cold.IsRetryable(err) {
			t.Errorf("IsRetryable(%v) = false, want true (response header timeout)", err)
		}
	})

	t.Run("caller canceled", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		}))
		defer srv.Close()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := get(ctx, srv.URL)
		if err == nil || cold.IsRetryable(err) {
			t.Errorf("IsRetryable(%v) = true, want false", err)
		}
	})

	t.Run("untrusted certificate", func(t *testing.T) {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshake failure is the point
		srv.StartTLS()
		defer srv.Close()
		err := get(context.Background(), srv.URL)
		if err == nil || cold.IsRetryable(err) {
			t.Errorf("IsRetryable(%v) = true, want false", err)
		}
	})
}
