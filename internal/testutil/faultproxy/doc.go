// Package faultproxy is a fault-injecting HTTP reverse proxy for tests: put
// it in front of a real server (the test MinIO) and point the client at
// it. Rules choose requests by method, path, query and Range header, and
// inject one of:
//
//	Error      a 5xx/4xx answer with an S3-style XML error body (SlowDown, InternalError, …)
//	Reset      the connection reset (TCP RST) before any response
//	Stall      no answer at all until the client gives up
//	Slow       the real response, its body trickled in delayed chunks
//	Truncate   the real headers (real Content-Length), part of the body, then the connection closed
//	StallBody  the real headers and part of the body, then silence
//
// each for the first Times matches after Skip, or with a Probability drawn
// from a seeded source. Handles and the proxy count what was injected.
// The Host header is passed through unchanged, so SigV4-signed requests
// stay valid.
//
//	m := testutil.StartMinIO(t)
//	p := faultproxy.Start(t, m.URL())
//	h := p.Add(faultproxy.Rule{Method: "GET", PathContains: "/seg", Fault: faultproxy.Truncate, After: 100, Times: 1})
//	// ... open the bucket at p.Addr, read, check the error ...
//	if h.Injected() != 1 { ... }
package faultproxy
