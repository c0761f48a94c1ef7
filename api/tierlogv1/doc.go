// Package tierlogv1 is the generated Go code for the tierlog gRPC API
// (proto package tierlog.v1, source api/proto/tierlog/v1/tierlog.proto):
// the messages and the TierLog service client and server interfaces.
//
// Do not edit the *.pb.go files; change the .proto and run
// `go generate ./api/...` (or `make proto`), which runs pinned versions of buf,
// protoc-gen-go and protoc-gen-go-grpc through `go run`.
//
// A minimal client:
//
//	conn, err := grpc.NewClient("localhost:7070",
//		grpc.WithTransportCredentials(insecure.NewCredentials()))
//	...
//	c := tierlogv1.NewTierLogClient(conn)
//	resp, err := c.Produce(ctx, &tierlogv1.ProduceRequest{
//		Topic:   "events",
//		Records: []*tierlogv1.Record{{Key: []byte("k"), Value: []byte("v")}},
//	})
//
// Status codes and the meaning of each field are documented in the .proto.
package tierlogv1
