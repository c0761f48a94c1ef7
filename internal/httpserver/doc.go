// Package httpserver serves the operational HTTP endpoints of a tierlog
// node:
//
//	/metrics  Prometheus exposition of the registry passed in
//	/healthz  200 while the process is alive and serving HTTP at all
//	/readyz   200 when the node can take traffic (broker open, gRPC
//	          serving), 503 with the reason otherwise
//
// Liveness and readiness are kept apart on purpose: an orchestrator restarts
// a process whose /healthz fails, but only stops routing to one whose
// /readyz fails — a node that is starting up, recovering its logs, or
// draining on shutdown is alive and not ready.
//
// Usage:
//
//	srv, err := httpserver.Listen("127.0.0.1:7071", httpserver.Options{
//		Gatherer: reg,
//		Ready:    func() error { ... },
//		Logger:   logger,
//	})
//	go srv.Serve()
//	...
//	srv.Shutdown(ctx)
package httpserver
