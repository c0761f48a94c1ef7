package httpserver

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "tierlog_test_things_total", Help: "Things."})
	reg.MustRegister(c)
	c.Add(3)

	var notReady atomic.Pointer[string]
	reason := "broker not open"
	notReady.Store(&reason)
	srv, err := Listen("127.0.0.1:0", Options{Gatherer: reg, Ready: func() error {
		if r := notReady.Load(); r != nil {
			return errors.New(*r)
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	base := "http://" + srv.Addr().String()

	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "broker not open") {
		t.Errorf("/readyz before ready: %d %q, want 503 naming the reason", code, body)
	}
	notReady.Store(nil)
	if code, body := get(t, base+"/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz when ready: %d %q", code, body)
	}
	code, body := get(t, base+"/metrics")
	if code != 200 || !strings.Contains(body, "tierlog_test_things_total 3") || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics: %d, body lacks the counter or Go collector:\n%.500s", code, body)
	}
	if code, _ := get(t, base+"/nope"); code != 404 {
		t.Errorf("/nope: %d, want 404", code)
	}

	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve returned %v after Shutdown, want nil", err)
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestShutdownWithoutServe(t *testing.T) {
	srv, err := Listen("127.0.0.1:0", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Shutdown: %v, want net.ErrClosed (listener released)", err)
	}
}

func TestListenError(t *testing.T) {
	_, err := Listen("256.0.0.1:1", Options{})
	if err == nil || !strings.Contains(err.Error(), "listen on 256.0.0.1:1") {
		t.Fatalf("got %v, want an error naming the address", err)
	}
}

// TestConnectionLimitAndIdleTimeout: past MaxConns, a new connection is
// closed on accept when none of the open ones is idle (here: two clients
// still sending their first request), and an idle keep-alive connection is
// closed after IdleTimeout.
func TestConnectionLimitAndIdleTimeout(t *testing.T) {
	srv, err := Listen("127.0.0.1:0", Options{MaxConns: 2, IdleTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	defer func() {
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
		<-served
	}()
	const head = "GET /healthz HTTP/1.1\r\nHost: x\r\n"
	finish := func(c net.Conn) error {
		if _, err := io.WriteString(c, "\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = io.ReadAll(resp.Body)
		return err
	}
	healthz := func(c net.Conn) error {
		if _, err := io.WriteString(c, head); err != nil {
			return err
		}
		return finish(c)
	}
	// Two connections in the middle of their first request: busy, not idle.
	var conns []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, head); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	over, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	if err := healthz(over); err == nil {
		t.Fatal("/healthz on a third connection with two busy ones open succeeded, want it closed on accept")
	}
	for i, c := range conns {
		if err := finish(c); err != nil {
			t.Fatalf("/healthz within the limit, connection %d: %v", i, err)
		}
	}
	// The two kept-alive connections go idle; the server must close them.
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(time.Minute))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("idle connection %d: read %v, want EOF (closed by the idle timeout)", i, err)
		}
	}
	// Their slots are free again.
	c, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := healthz(c); err != nil {
		t.Fatalf("/healthz after idle connections were closed: %v", err)
	}
}

// TestHealthzNotLockedOutByIdleConnections: the connection cap protects
// descriptors; it must not let idle keep-alive connections (a scraper's or
// any client's pool) lock the liveness probe out until they time out
// (conn_idle_timeout, 5 minutes by default; a kubelet restarts the node
// after a few failed probes). At the cap, an idle connection should give
// way to a new one.
func TestHealthzNotLockedOutByIdleConnections(t *testing.T) {
	srv, err := Listen("127.0.0.1:0", Options{MaxConns: 2, IdleTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	defer func() {
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
		<-served
	}()
	// Two pooled clients, each with one idle keep-alive connection.
	for i := range 2 {
		c := &http.Client{Transport: &http.Transport{}}
		defer c.CloseIdleConnections()
		resp, err := c.Get("http://" + srv.Addr().String() + "/metrics")
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	probe := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := probe.Get("http://" + srv.Addr().String() + "/healthz")
	if err != nil {
		t.Fatalf("/healthz while two idle keep-alive connections fill the cap: %v", err)
	}
	resp.Body.Close()
}
