package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tierlog/tierlog/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// payload is what the upstream serves at every path.
var payload = bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB

// setup starts an upstream that echoes the Host header it got (in a
// response header), stores PUT bodies, and serves payload; and a proxy in
// front of it.
func setup(t *testing.T) (*Proxy, *http.Client) {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-Host", r.Host)
		w.Header().Set("X-Seen-Path", r.URL.EscapedPath())
		if r.Method == http.MethodPut {
			n, _ := io.Copy(io.Discard, r.Body)
			w.Header().Set("X-Put-Bytes", strings.Repeat("x", int(n%10)))
			return
		}
		http.ServeContent(w, r, "obj", time.Time{}, bytes.NewReader(payload))
	}))
	t.Cleanup(up.Close)
	p := Start(t, up.URL)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return p, &http.Client{Transport: tr}
}

func get(t *testing.T, c *http.Client, ctx context.Context, url string, hdr ...string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func TestPassThrough(t *testing.T) {
	p, c := setup(t)
	resp, body, err := get(t, c, context.Background(), p.URL+"/bucket/a%2Fb/obj?x=1")
	if err != nil || !bytes.Equal(body, payload) {
		t.Fatalf("GET through the proxy: %d bytes, %v", len(body), err)
	}
	if got := resp.Header.Get("X-Seen-Host"); got != p.Addr {
		t.Errorf("upstream saw Host %q, want the proxy's %q (signatures cover it)", got, p.Addr)
	}
	if got := resp.Header.Get("X-Seen-Path"); got != "/bucket/a%2Fb/obj" {
		t.Errorf("upstream saw path %q, want it unchanged", got)
	}
	if p.Requests() != 1 {
		t.Errorf("Requests() = %d, want 1", p.Requests())
	}
}

func TestError(t *testing.T) {
	p, c := setup(t)
	h := p.Add(Rule{Method: "GET", PathContains: "/obj", Fault: Error, Times: 2})
	p.Add(Rule{Method: "GET", PathContains: "/forbidden", Fault: Error, Status: 403, Code: "AccessDenied"})
	for i := range 3 {
		resp, body, err := get(t, c, context.Background(), p.URL+"/b/obj")
		if err != nil {
			t.Fatal(err)
		}
		if i < 2 {
			if resp.StatusCode != 503 || !strings.Contains(string(body), "<Code>SlowDown</Code>") {
				t.Errorf("request %d: %d %s, want 503 SlowDown", i, resp.StatusCode, body)
			}
		} else if resp.StatusCode != 200 {
			t.Errorf("request %d after Times ran out: %d, want 200", i, resp.StatusCode)
		}
	}
	resp, body, err := get(t, c, context.Background(), p.URL+"/b/forbidden")
	if err != nil || resp.StatusCode != 403 || !strings.Contains(string(body), "<Code>AccessDenied</Code>") {
		t.Errorf("403 rule: %v %s %v", resp.StatusCode, body, err)
	}
	if h.Injected() != 2 || h.Matched() != 3 || p.Injected(Error) != 3 {
		t.Errorf("counts: rule injected %d matched %d, proxy errors %d; want 2, 3, 3", h.Injected(), h.Matched(), p.Injected(Error))
	}
}

func TestReset(t *testing.T) {
	p, c := setup(t)
	p.Add(Rule{Fault: Reset, Times: 1})
	if _, _, err := get(t, c, context.Background(), p.URL+"/b/obj"); err == nil {
		t.Errorf("GET through a reset: no error")
	}
	if _, body, err := get(t, c, context.Background(), p.URL+"/b/obj"); err != nil || !bytes.Equal(body, payload) {
		t.Errorf("GET after the reset: %d bytes, %v", len(body), err)
	}
	if p.Injected(Reset) != 1 {
		t.Errorf("resets injected: %d, want 1", p.Injected(Reset))
	}
}

func TestTruncate(t *testing.T) {
	p, c := setup(t)
	p.Add(Rule{Method: "GET", Fault: Truncate, After: 1000, Times: 1})
	resp, body, err := get(t, c, context.Background(), p.URL+"/b/obj")
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated body: %v, want io.ErrUnexpectedEOF", err)
	}
	if resp == nil || resp.ContentLength != int64(len(payload)) {
		t.Errorf("truncated response should announce the full length %d", len(payload))
	}
	if len(body) != 1000 || !bytes.Equal(body, payload[:1000]) {
		t.Errorf("truncated body: got %d bytes, want the first 1000", len(body))
	}
}

func TestRangeOnly(t *testing.T) {
	p, c := setup(t)
	p.Add(Rule{RangeOnly: true, Fault: Truncate, After: 10})
	if _, body, err := get(t, c, context.Background(), p.URL+"/b/obj"); err != nil || len(body) != len(payload) {
		t.Errorf("plain GET hit a RangeOnly rule: %d bytes, %v", len(body), err)
	}
	if _, body, err := get(t, c, context.Background(), p.URL+"/b/obj", "Range", "bytes=100-199"); !errors.Is(err, io.ErrUnexpectedEOF) || len(body) != 10 {
		t.Errorf("ranged GET: %d bytes, %v; want 10 then io.ErrUnexpectedEOF", len(body), err)
	}
}

func TestSlow(t *testing.T) {
	p, c := setup(t)
	p.Add(Rule{Fault: Slow, ChunkSize: 16 << 10, Delay: 20 * time.Millisecond})
	start := time.Now()
	_, body, err := get(t, c, context.Background(), p.URL+"/b/obj")
	if err != nil || !bytes.Equal(body, payload) {
		t.Fatalf("slow body: %d bytes, %v; want all of it intact", len(body), err)
	}
	// Four chunks, each after a delay: a lower bound, never flaky.
	if el := time.Since(start); el < 80*time.Millisecond {
		t.Errorf("slow body arrived in %v, want at least 4 delays of 20ms", el)
	}
}

func TestStall(t *testing.T) {
	p, c := setup(t)
	p.Add(Rule{Fault: Stall, Times: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, _, err := get(t, c, ctx, p.URL+"/b/obj"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("stalled request: %v, want the client's deadline", err)
	}
	if _, body, err := get(t, c, context.Background(), p.URL+"/b/obj"); err != nil || len(body) != len(payload) {
		t.Errorf("after the stall: %d bytes, %v", len(body), err)
	}
}

func TestStallBody(t *testing.T) {
	p, c := setup(t)
	p.Add(Rule{Fault: StallBody, After: 5000})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	resp, body, err := get(t, c, ctx, p.URL+"/b/obj")
	if resp == nil || resp.StatusCode != 200 {
		t.Fatalf("StallBody should send the headers: %v", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) || len(body) != 5000 {
		t.Errorf("stalled body: %d bytes, %v; want 5000 then the deadline", len(body), err)
	}
}

// A proxy closed while a request stalls releases it and leaks nothing.
func TestCloseReleasesStalledRequests(t *testing.T) {
	p, c := setup(t)
	p.Add(Rule{Fault: Stall})
	done := make(chan error)
	go func() {
		_, _, err := get(t, c, context.Background(), p.URL+"/b/obj")
		done <- err
	}()
	for p.Injected(Stall) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	p.Close()
	if err := <-done; err == nil {
		t.Errorf("stalled request succeeded after Close")
	}
}

func TestMatchingAndSkip(t *testing.T) {
	p, c := setup(t)
	h := p.Add(Rule{Method: "PUT", QueryContains: "partNumber=2", Fault: Error, Status: 500, Skip: 1})
	put := func(query string) int {
		req, _ := http.NewRequest(http.MethodPut, p.URL+"/b/obj?"+query, strings.NewReader("body"))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := put("partNumber=1"); got != 200 {
		t.Errorf("part 1: %d", got)
	}
	if got := put("partNumber=2"); got != 200 {
		t.Errorf("part 2, first time (skipped): %d", got)
	}
	if got := put("partNumber=2"); got != 500 {
		t.Errorf("part 2, second time: %d, want 500", got)
	}
	if resp, _, _ := get(t, c, context.Background(), p.URL+"/b/obj?partNumber=2"); resp.StatusCode != 200 {
		t.Errorf("GET matched a PUT rule")
	}
	if h.Matched() != 2 || h.Injected() != 1 {
		t.Errorf("matched %d injected %d, want 2 and 1", h.Matched(), h.Injected())
	}
}

func TestProbabilityIsSeeded(t *testing.T) {
	run := func() []int {
		p, c := setup(t)
		p.Add(Rule{Fault: Error, Probability: 0.5})
		var got []int
		for range 20 {
			resp, _, err := get(t, c, context.Background(), p.URL+"/b/obj")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, resp.StatusCode)
		}
		return got
	}
	a, b := run(), run()
	errs := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("two runs with the same seed differ: %v vs %v", a, b)
		}
		if a[i] == 503 {
			errs++
		}
	}
	if errs == 0 || errs == len(a) {
		t.Errorf("probability 0.5 injected %d of %d", errs, len(a))
	}
}

// A 404 (or any error status) can lose the end of its body too.
func TestTruncateErrorStatus(t *testing.T) {
	p, c := setup(t)
	p.Add(Rule{Method: "GET", Fault: Error, Status: 404, Code: "NoSuchKey", After: 20, Times: 1})
	resp, body, err := get(t, c, context.Background(), p.URL+"/b/missing")
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated error body: %v, want io.ErrUnexpectedEOF", err)
	}
	if resp == nil || resp.StatusCode != 404 || len(body) != 20 {
		t.Errorf("truncated error reply: %v, %d body bytes; want a 404 with 20", resp, len(body))
	}
}

// Replies without a body (HEAD, an empty PUT reply) and CutHeaders lose
// their headers part way; the server still got the request.
func TestCutHeaders(t *testing.T) {
	p, c := setup(t)
	for _, tc := range []struct {
		name   string
		method string
		rule   Rule
	}{
		{"HEAD truncated", http.MethodHead, Rule{Method: "HEAD", Fault: Truncate, After: 30}},
		{"PUT reply truncated", http.MethodPut, Rule{Method: "PUT", Fault: Truncate}},
		{"GET headers cut", http.MethodGet, Rule{PathContains: "/b/obj", Fault: CutHeaders, After: 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.Clear()
			tc.rule.Times = 1
			h := p.Add(tc.rule)
			// A reused connection first, so a client that resends on a
			// connection closed before any reply would hide the fault.
			if _, _, err := get(t, c, context.Background(), p.URL+"/warm"); err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest(tc.method, p.URL+"/b/obj", strings.NewReader("data"))
			resp, err := c.Do(req)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("%s through a cut reply: status %s, want an error", tc.method, resp.Status)
			}
			// Cut in the middle of a line, the reply reads as malformed.
			if !strings.Contains(err.Error(), "transport connection broken") {
				t.Errorf("cut reply: %v, want a broken connection", err)
			}
			if h.Injected() != 1 {
				t.Errorf("injected %d, want 1", h.Injected())
			}
		})
	}
}

// TestHold: a Hold rule keeps requests until Release, counts them while it
// does, then forwards them untouched.
func TestHold(t *testing.T) {
	p, c := setup(t)
	h := p.Add(Rule{Method: "GET", PathContains: "/held", Fault: Hold})
	type result struct {
		body []byte
		err  error
	}
	done := make(chan result, 2)
	for range 2 {
		go func() {
			_, body, err := get(t, c, context.Background(), p.URL+"/held")
			done <- result{body, err}
		}()
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return h.Held() == 2 }, "two concurrent GETs are not both held (held: %d)", h.Held())
	select {
	case r := <-done:
		t.Fatalf("a held GET was answered before Release: %v", r.err)
	default:
	}
	h.Release()
	for range 2 {
		r := <-done
		if r.err != nil || !bytes.Equal(r.body, payload) {
			t.Fatalf("released GET: %v, %d bytes (want the %d-byte payload)", r.err, len(r.body), len(payload))
		}
	}
	if h.Held() != 0 {
		t.Fatalf("held after release: %d", h.Held())
	}
	// After Release the rule holds nothing more.
	if _, body, err := get(t, c, context.Background(), p.URL+"/held"); err != nil || !bytes.Equal(body, payload) {
		t.Fatalf("GET after release: %v", err)
	}
}
