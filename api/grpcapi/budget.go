package grpcapi

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The fetch budget bounds the memory of fetch and stream responses in
// flight, server-wide (Options.FetchBudgetBytes). A fetch takes its share
// before it reads from the log and gives it back when its response has
// been handed to gRPC; a stream holds two responses' worth while it sends.
// Three rules keep slow consumers from starving everyone else:
//   - one response takes at most budget/fetchShareDivisor (fit lowers
//     max_bytes to make it so), so it takes many stalled streams, not one,
//     to hold the whole budget;
//   - a fetch waits at most Options.FetchBudgetWait for its share, then
//     fails with RESOURCE_EXHAUSTED, which clients retry;
//   - decoding a compressed batch takes the decoder's memory
//     (batch.EachMemory) on top, for as long as it decodes.

// need is the fetch budget one response of p takes: the bytes read from
// the log, plus as much again for decoded records. A response may exceed
// it by one batch larger than max_bytes.
func (s *Server) need(p fetchParams) int64 {
	n := int64(p.maxBytes)
	if !p.raw {
		n *= 2
	}
	return n
}

// fit lowers p.maxBytes so that copies responses of p take at most one
// share of the budget: budget/fetchShareDivisor.
func (s *Server) fit(p fetchParams, copies int64) fetchParams {
	per := copies
	if !p.raw {
		per *= 2
	}
	p.maxBytes = int(max(1, min(int64(p.maxBytes), s.budgetSize/fetchShareDivisor/per)))
	return p
}

// hold is fetch budget taken by one request.
type hold struct {
	s *Server
	n int64
}

// reserve takes n bytes of the fetch budget, waiting up to the budget wait
// while other responses hold it. A request for more than the whole budget
// takes all of it.
func (s *Server) reserve(ctx context.Context, n int64) (*hold, error) {
	n = min(n, s.budgetSize)
	if err := s.acquire(ctx, n); err != nil {
		return nil, err
	}
	return &hold{s: s, n: n}, nil
}

func (s *Server) acquire(ctx context.Context, n int64) error {
	wctx, cancel := context.WithTimeout(ctx, s.budgetWait)
	defer cancel()
	if err := s.budget.Acquire(wctx, n); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return status.Errorf(codes.ResourceExhausted,
			"fetch budget in use by slow consumers: no %d bytes of the %d-byte budget free within %v; retry, or lower max_bytes",
			n, s.budgetSize, s.budgetWait)
	}
	s.budgetUsed.Add(n)
	return nil
}

func (s *Server) give(n int64) {
	s.budgetUsed.Add(-n)
	s.budget.Release(n)
}

// release gives the whole hold back.
func (h *hold) release() {
	h.s.give(h.n)
	h.n = 0
}

// grow takes extra bytes more and returns how many it took (the hold never
// exceeds the whole budget). If they are not free at once it gives back
// what it holds and waits for all of it together, so that two requests
// never wait for each other while holding budget: the caller must hold
// nothing the hold accounts for (no records of the response built so far).
func (h *hold) grow(ctx context.Context, extra int64) (int64, error) {
	if n, ok := h.tryGrow(extra); ok {
		return n, nil
	}
	extra = min(extra, h.s.budgetSize-h.n)
	want := h.n + extra
	h.release()
	if err := h.s.acquire(ctx, want); err != nil {
		return 0, err
	}
	h.n = want
	return extra, nil
}

// tryGrow takes extra bytes more only if they are free at once.
func (h *hold) tryGrow(extra int64) (int64, bool) {
	extra = min(extra, h.s.budgetSize-h.n)
	if extra <= 0 {
		return 0, true
	}
	if !h.s.budget.TryAcquire(extra) {
		return 0, false
	}
	h.s.budgetUsed.Add(extra)
	h.n += extra
	return extra, true
}

// shrink gives back n bytes that grow took.
func (h *hold) shrink(n int64) {
	if n > h.n {
		panic(fmt.Sprintf("grpcapi: fetch budget: shrink %d of a %d-byte hold", n, h.n))
	}
	h.s.give(n)
	h.n -= n
}
