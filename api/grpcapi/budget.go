package grpcapi

import (
	"context"

	"github.com/tierlog/tierlog/internal/fetchbudget"
)

// The fetch budget (internal/fetchbudget, shared with the Kafka listener)
// bounds the memory of fetch and stream responses in flight. A fetch takes
// its share before it reads from the log and gives it back when its
// response has been handed to gRPC; a stream holds two responses' worth
// while it sends. Decoding a compressed batch takes the decoder's memory
// (batch.EachMemory) on top, for as long as it decodes.

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
// share of the budget.
func (s *Server) fit(p fetchParams, copies int64) fetchParams {
	per := copies
	if !p.raw {
		per *= 2
	}
	p.maxBytes = int(max(1, min(int64(p.maxBytes), s.budget.Share()/per)))
	return p
}

// reserve takes n bytes of the fetch budget; see fetchbudget.Budget.Reserve.
func (s *Server) reserve(ctx context.Context, n int64) (*fetchbudget.Hold, error) {
	return s.budget.Reserve(ctx, n)
}
