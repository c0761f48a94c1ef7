// Package grpcapi serves the tierlog.v1.TierLog gRPC API (see
// api/proto/tierlog/v1/tierlog.proto) on top of a *broker.Broker.
//
// The server is a thin translation layer: it resolves fetch positions
// (offset, timestamp, earliest, latest), builds a RecordBatch v2 from plain
// records on produce (internal/batch), decodes stored batches on fetch, and
// maps broker errors onto gRPC status codes in one place (statusCode). It holds
// nothing but the broker and a shutdown signal, so it can be registered on any
// *grpc.Server the caller configures (TLS, interceptors, message size limits):
//
//	s := grpcapi.NewServer(b, grpcapi.Options{Logger: logger})
//	g := grpc.NewServer(grpc.MaxRecvMsgSize(16 << 20))
//	s.Register(g)
//	hs := grpcapi.RegisterHealth(g) // grpc.health.v1, SERVING
//	go g.Serve(lis)
//	...
//	hs.Shutdown() // NOT_SERVING while draining
//	s.Close()     // end follow streams, which would otherwise never finish
//	g.GracefulStop()
//	b.Close()
//
// Message sizes: gRPC limits received messages to 4 MiB by default on both
// sides. A produce of a larger batch fails with RESOURCE_EXHAUSTED before it
// reaches this package unless the server raises MaxRecvMsgSize; a fetch with
// max_bytes above about 4 MiB needs the client to raise MaxCallRecvMsgSize.
//
// Produce routing: a request is one batch for one partition, so it is atomic
// and gets consecutive offsets. Without a partition the server picks one from
// the first record's key (murmur2, as Kafka clients do) or round-robin when
// that key is null or the request carries a raw batch.
//
// Fetch semantics: the broker returns whole batches, and the first one may
// start before the requested offset; decoded fetches drop the records below
// it and stop at max_records, setting next_offset just past the last record
// returned. Raw fetches return whole batches and leave the skipping to the
// caller. FetchStream repeats fetches from next_offset and, in follow mode,
// waits on the broker for new records when it reaches the log end.
package grpcapi
