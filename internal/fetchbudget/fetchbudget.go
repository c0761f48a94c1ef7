// Package fetchbudget bounds the memory of fetch responses in flight,
// server-wide and across front ends: the gRPC API and the Kafka listener
// draw from one Budget (--fetch-budget-bytes), created once by serve, so a
// slow consumer on either gets back-pressure instead of the server
// buffering for it.
//
// A fetch takes its share before it reads from the log and gives it back
// once its response has left (been handed to gRPC, or written to the Kafka
// connection). Three rules keep slow consumers from starving everyone else:
//   - one response takes at most Share (the front end lowers its byte limit
//     to fit), so it takes many stalled consumers, not one, to hold the
//     whole budget;
//   - a fetch waits at most the budget wait for its share, then fails with
//     ErrExhausted (the front end answers so that clients retry);
//   - extra memory a response turns out to need (decoding a compressed
//     batch) is taken with Grow or TryGrow for as long as it is used.
package fetchbudget

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/sync/semaphore"
)

const (
	// DefaultBytes is the budget when New is given 0.
	DefaultBytes = 256 << 20
	// DefaultWait is the budget wait when New is given 0.
	DefaultWait = 5 * time.Second
	// ShareDivisor: one response takes at most Bytes/ShareDivisor.
	ShareDivisor = 8
)

// ErrExhausted is returned by Reserve and Grow when the budget stayed in
// use (by slow consumers) for the whole budget wait. It is retriable.
var ErrExhausted = errors.New("fetch budget in use by slow consumers")

// Budget is the server-wide fetch budget. It is safe for concurrent use.
type Budget struct {
	sem  *semaphore.Weighted
	size int64
	wait time.Duration
	used atomic.Int64 // what sem has handed out, for the metric and tests
}

// New returns a budget of size bytes (0: DefaultBytes) whose fetches wait
// at most wait for their share (0: DefaultWait), with its gauge
// tierlog_fetch_budget_used_bytes on reg (nil: unregistered).
func New(size int64, wait time.Duration, reg prometheus.Registerer) *Budget {
	if size <= 0 {
		size = DefaultBytes
	}
	if wait <= 0 {
		wait = DefaultWait
	}
	b := &Budget{sem: semaphore.NewWeighted(size), size: size, wait: wait}
	promauto.With(reg).NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tierlog_fetch_budget_used_bytes",
		Help: "Fetch budget held by fetch responses in flight, gRPC and Kafka (see --fetch-budget-bytes).",
	}, func() float64 { return float64(b.used.Load()) })
	return b
}

// Bytes is the whole budget.
func (b *Budget) Bytes() int64 { return b.size }

// Share is the most one response may take.
func (b *Budget) Share() int64 { return b.size / ShareDivisor }

// Used is what fetches hold now.
func (b *Budget) Used() int64 { return b.used.Load() }

// Hold is budget taken by one request.
type Hold struct {
	b *Budget
	n int64
}

// Reserve takes n bytes, waiting up to the budget wait while other
// responses hold them. A request for more than the whole budget takes all
// of it.
func (b *Budget) Reserve(ctx context.Context, n int64) (*Hold, error) {
	n = min(max(n, 0), b.size)
	if err := b.acquire(ctx, n); err != nil {
		return nil, err
	}
	return &Hold{b: b, n: n}, nil
}

func (b *Budget) acquire(ctx context.Context, n int64) error {
	wctx, cancel := context.WithTimeout(ctx, b.wait)
	defer cancel()
	if err := b.sem.Acquire(wctx, n); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: no %d bytes of the %d-byte budget free within %v; retry, or lower the fetch's byte limit",
			ErrExhausted, n, b.size, b.wait)
	}
	b.used.Add(n)
	return nil
}

func (b *Budget) give(n int64) {
	b.used.Add(-n)
	b.sem.Release(n)
}

// Bytes is what the hold holds.
func (h *Hold) Bytes() int64 { return h.n }

// Release gives the whole hold back. It may be called more than once.
func (h *Hold) Release() {
	h.b.give(h.n)
	h.n = 0
}

// Grow takes extra bytes more and returns how many it took (the hold never
// exceeds the whole budget). If they are not free at once it gives back
// what it holds and waits for all of it together, so that two requests
// never wait for each other while holding budget: the caller must hold
// nothing the hold accounts for (no records of the response built so far).
func (h *Hold) Grow(ctx context.Context, extra int64) (int64, error) {
	if n, ok := h.TryGrow(extra); ok {
		return n, nil
	}
	extra = min(extra, h.b.size-h.n)
	want := h.n + extra
	h.Release()
	if err := h.b.acquire(ctx, want); err != nil {
		return 0, err
	}
	h.n = want
	return extra, nil
}

// TryGrow takes extra bytes more only if they are free at once.
func (h *Hold) TryGrow(extra int64) (int64, bool) {
	extra = min(extra, h.b.size-h.n)
	if extra <= 0 {
		return 0, true
	}
	if !h.b.sem.TryAcquire(extra) {
		return 0, false
	}
	h.b.used.Add(extra)
	h.n += extra
	return extra, true
}

// Shrink gives back n of the bytes held: what Grow or TryGrow took, or
// what a request reserved and turned out not to need.
func (h *Hold) Shrink(n int64) {
	if n > h.n {
		panic(fmt.Sprintf("fetchbudget: shrink %d of a %d-byte hold", n, h.n))
	}
	h.b.give(n)
	h.n -= n
}
