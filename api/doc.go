// Package api holds tierlog's external interfaces: the protobuf definitions
// (proto/tierlog/v1), the generated Go code (tierlogv1), and the servers that
// implement them (grpcapi for the gRPC API on :7070).
//
// The generated code is committed. To regenerate after editing the .proto:
//
//	go generate ./api/...
//
// which runs buf with the local plugins protoc-gen-go and protoc-gen-go-grpc,
// each pinned and fetched through the Go module proxy (see buf.gen.yaml), so
// no protoc installation is needed.
package api
