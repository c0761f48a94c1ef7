package tiering_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/metrics"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The measuring instruments of BenchmarkTiering: an HTTP request counter
// in front of the bucket backend, an RSS sampler, a log handler that
// timestamps the daemon's uploads, and a reader of Prometheus counters.

// requestCounter counts the HTTP requests a bucket backend sends, by the
// class a bill counts them in: PUT (object and part uploads), POST
// (multipart initiate and complete, batch delete), GET (object and ranged
// reads), LIST (listings and other bucket queries), HEAD, DELETE.
type requestCounter struct {
	base http.RoundTripper
	mu   sync.Mutex
	n    map[string]int64
}

// newRequestCounter wraps a transport configured as the remote backends
// configure their own (cold/internal/objutil.ConfigureTransport: enough idle
// connections per host for parallel ranged GETs and part uploads), minus
// the per-connection stall deadline, which a benchmark on loopback does not
// need. The backends use a given transport as is.
func newRequestCounter() *requestCounter {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &requestCounter{base: tr, n: map[string]int64{}}
}

func (c *requestCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	kind := r.Method
	if kind == http.MethodGet {
		q := r.URL.Query()
		for _, k := range []string{"list-type", "uploads", "location", "versions", "versioning", "prefix", "delimiter"} {
			if q.Has(k) {
				kind = "LIST"
				break
			}
		}
	}
	c.mu.Lock()
	c.n[kind]++
	c.mu.Unlock()
	return c.base.RoundTrip(r)
}

// snapshot returns the counts so far.
func (c *requestCounter) snapshot() requests {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := requests{}
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

func (c *requestCounter) close() { c.base.(*http.Transport).CloseIdleConnections() }

// requests are request counts by class.
type requests map[string]int64

// since returns the requests sent after before was taken.
func (r requests) since(before requests) requests {
	out := requests{}
	for k, v := range r {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

func (r requests) String() string {
	keys := make([]string, 0, len(r))
	for k := range r {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, r[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// rssSampler records the process's peak resident set between start and
// stop, two ways: the kernel's high-water mark (VmHWM, reset at start by
// writing 5 to /proc/self/clear_refs) and VmRSS sampled every 5ms, in
// case the reset is not allowed. It also samples the Go heap live after
// the last GC: RSS minus that is the collector's headroom (GOGC), which
// GOMEMLIMIT bounds.
type rssSampler struct {
	base, peak, livePeak int64 // bytes
	hwmReset             bool
	stopc                chan struct{}
	done                 chan struct{}
}

func startRSS() *rssSampler {
	s := &rssSampler{stopc: make(chan struct{}), done: make(chan struct{})}
	s.hwmReset = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	s.base, _ = procStatus("VmRSS")
	s.peak = s.base
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	go func() {
		defer close(s.done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.stopc:
				return
			case <-t.C:
				if v, ok := procStatus("VmRSS"); ok {
					s.peak = max(s.peak, v)
				}
				metrics.Read(live)
				if live[0].Value.Kind() == metrics.KindUint64 {
					s.livePeak = max(s.livePeak, int64(live[0].Value.Uint64()))
				}
			}
		}
	}()
	return s
}

// stop ends sampling and returns the RSS at start, the peak RSS since, and
// the largest live heap seen.
func (s *rssSampler) stop() (base, peak, livePeak int64) {
	close(s.stopc)
	<-s.done
	if hwm, ok := procStatus("VmHWM"); ok && s.hwmReset {
		s.peak = max(s.peak, hwm)
	}
	return s.base, s.peak, s.livePeak
}

// procStatus reads a kB field of /proc/self/status, in bytes.
func procStatus(field string) (int64, bool) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != field {
			continue
		}
		v, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		return v << 10, err == nil
	}
	return 0, false
}

// uploadLog is a slog handler for the daemon's logger: it keeps when each
// upload started and ended (from the "segment uploaded" record's time and
// its took attribute) and every warning.
type uploadLog struct {
	mu       sync.Mutex
	starts   []time.Time
	ends     []time.Time
	warnings []string
}

func (h *uploadLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h *uploadLog) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h *uploadLog) WithGroup(string) slog.Handler                { return h }

func (h *uploadLog) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.Level >= slog.LevelWarn {
		var b bytes.Buffer
		b.WriteString(r.Message)
		r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
		h.warnings = append(h.warnings, b.String())
		return nil
	}
	if r.Message != "segment uploaded" {
		return nil
	}
	var took time.Duration
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "took" {
			took = a.Value.Duration()
			return false
		}
		return true
	})
	h.starts = append(h.starts, r.Time.Add(-took))
	h.ends = append(h.ends, r.Time)
	return nil
}

// span returns the number of uploads logged and the time from the first
// upload's start to the last one's commit.
func (h *uploadLog) span() (int, time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.starts) == 0 {
		return 0, 0
	}
	first, last := h.starts[0], h.ends[0]
	for i := range h.starts {
		if h.starts[i].Before(first) {
			first = h.starts[i]
		}
		if h.ends[i].After(last) {
			last = h.ends[i]
		}
	}
	return len(h.starts), last.Sub(first)
}

// metric sums the samples of a gathered counter (or the sample count of
// a histogram) whose labels include the given ones.
func metric(reg *prometheus.Registry, name string, labels ...string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return -1
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Histogram != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

// mbps is bytes per second in MB (10^6 bytes), as `go test` prints MB/s.
func mbps(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds() / 1e6
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
