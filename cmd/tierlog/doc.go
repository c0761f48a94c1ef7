// Command tierlog runs a tierlog node and talks to one.
//
//	tierlog serve [--data-dir DIR] [--grpc-addr ADDR] [--http-addr ADDR] [--config FILE] [--default k=v ...]
//	tierlog topic create NAME [--partitions N] [--config k=v ...]
//	tierlog topic list | describe NAME | delete NAME | legal-hold NAME on|off
//	tierlog produce TOPIC [--key K] [--partition P] [--value V] [--compression C] [--batch N]
//	tierlog consume TOPIC [--partition P] [--from-beginning | --offset N | --since TIME] [--max N] [--follow] [--format text|json]
//	tierlog prove TOPIC PARTITION OFFSET [-o FILE] [--bucket URL]
//	tierlog prove-consistency TOPIC PARTITION --from SIZE|--from-checkpoint FILE [--to SIZE] [-o FILE] [--bucket URL]
//	tierlog verify-proof FILE --public-key KEY|FILE
//	tierlog checkpoint TOPIC PARTITION [--size N] [--bucket URL] | checkpoint --public-key [--signing-key FILE]
//	tierlog bucket consume --bucket URL TOPIC [--partition P] [--from N | --from-time T] [--to N | --to-time T] [--max N] [--format text|json]
//	tierlog verify --bucket URL [TOPIC [PARTITION]] --public-key KEY|FILE [--checkpoint FILE ...]
//
// serve resolves its settings with internal/config (flag > TIERLOG_* env >
// YAML file > default), opens the broker, serves the gRPC API
// (api/grpcapi) and the HTTP endpoints (internal/httpserver), and shuts
// down on SIGINT/SIGTERM: readiness off, follow streams ended
// (grpcapi.Server.Close), GracefulStop bounded by --shutdown-timeout, then
// broker.Close, which flushes and fsyncs. --ready-file writes the bound
// addresses once serving, so scripts and tests can use port 0.
//
// The client commands use the generated gRPC client (api/tierlogv1) against
// --server (env TIERLOG_SERVER, default 127.0.0.1:7070); bucket consume,
// verify, verify-proof and the --bucket forms of prove, prove-consistency
// and checkpoint read a bucket or a file with no server. produce sends the
// lines available together as one batch (up to --batch records and
// --batch-bytes), so a piped file of 100,000 lines takes a hundred calls, not
// a hundred thousand. consume without --follow reads partitions one after
// another up to the log end, so its output is the same bytes on every run
// over the same data.
//
// Exit codes: 0 success; 1 the command failed (the gRPC status message or
// the error is printed); 2 usage or configuration error. verify sets its
// own (exitCodeError): 1 a disagreement, 2 also a bucket it could not read.
package main
