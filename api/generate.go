package api

// Regenerate api/tierlogv1 from api/proto with pinned tools fetched through the
// Go module proxy (buf drives protoc-gen-go and protoc-gen-go-grpc, see
// buf.gen.yaml). Run with `go generate ./api/...` or `make proto`.
//go:generate go run github.com/bufbuild/buf/cmd/buf@v1.75.0 generate
