package grpcapi

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/fetchbudget"
	"github.com/tierlog/tierlog/tiering"
)

// statusCode decides the gRPC code for an error from the broker, the log or
// the batch codec. It is the one place that mapping lives, so every RPC
// reports the same failure the same way. The order matters only where an
// error could wrap two sentinels; the caller's own mistakes are checked first.
func statusCode(err error) codes.Code {
	switch {
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, broker.ErrNotLeader), errors.Is(err, broker.ErrNotEnoughReplicas),
		errors.Is(err, broker.ErrNotEnoughReplicasAfterAppend):
		// Retriable: on the leader the message names, or once replicas
		// are back in sync.
		return codes.Unavailable
	case errors.Is(err, broker.ErrInvalidReplication):
		return codes.InvalidArgument
	case errors.Is(err, broker.ErrUnknownTopic):
		return codes.NotFound
	case errors.Is(err, broker.ErrTopicDeletionPending):
		// The name frees up once the bucket is clean: retry later.
		return codes.Unavailable
	case errors.Is(err, broker.ErrTooManyPartitions), errors.Is(err, fetchbudget.ErrExhausted):
		return codes.ResourceExhausted
	case errors.Is(err, broker.ErrTopicExists):
		return codes.AlreadyExists
	case errors.Is(err, broker.ErrObjectLockUnavailable):
		// A valid config the node's bucket cannot honour: no retry helps
		// until the bucket changes.
		return codes.FailedPrecondition
	case errors.Is(err, broker.ErrInvalidPartition),
		errors.Is(err, broker.ErrInvalidConfig),
		errors.Is(err, broker.ErrInvalidTopicName),
		errors.Is(err, hot.ErrTooLarge),
		errors.Is(err, hot.ErrCorruptBatch),
		errors.Is(err, batch.ErrCorrupt),
		errors.Is(err, batch.ErrShortBatch),
		errors.Is(err, batch.ErrTooLarge):
		return codes.InvalidArgument
	case errors.Is(err, hot.ErrTransactional):
		return codes.InvalidArgument
	case errors.Is(err, hot.ErrOutOfOrderSequence), errors.Is(err, hot.ErrInvalidProducerEpoch):
		// A raw batch from an idempotent producer that does not follow
		// the producer's state in the partition: the state, not the
		// bytes, is what is wrong.
		return codes.FailedPrecondition
	case errors.Is(err, tiering.ErrNotTiered):
		// The topic does not tier or the node has no bucket: a retry
		// cannot succeed until that configuration changes.
		return codes.FailedPrecondition
	case errors.Is(err, tiering.ErrNotInTree):
		// Not tiered yet: the proof can be made once its segment is.
		return codes.FailedPrecondition
	case errors.Is(err, tiering.ErrBadRange):
		return codes.InvalidArgument
	case errors.Is(err, tiering.ErrNoRecord), errors.Is(err, tiering.ErrNoCheckpoint):
		return codes.NotFound
	case errors.Is(err, hot.ErrOffsetOutOfRange):
		return codes.OutOfRange
	case errors.Is(err, hot.ErrRetriable):
		// Nothing was written and the log is intact (e.g. a new segment
		// could not be opened for lack of descriptors): a retry may succeed.
		return codes.Unavailable
	case errors.Is(err, hot.ErrClosed), errors.Is(err, broker.ErrClosed):
		// The broker is shutting down; another node (or this one after a
		// restart) will serve the request.
		return codes.Unavailable
	case errors.Is(err, tiering.ErrLocalDiskFull):
		// A local-disk ceiling is reached (the bucket is behind): retriable,
		// the log is fine and takes appends again once below it. gRPC's own
		// example of RESOURCE_EXHAUSTED is a file system out of space.
		return codes.ResourceExhausted
	case errors.Is(err, hot.ErrLogFailed):
		// The partition refuses writes until it is reopened and recovered.
		// That is a condition of this node, not of the request: in a cluster
		// leadership moves and a retry succeeds, hence UNAVAILABLE (which
		// clients retry with backoff) rather than INTERNAL.
		return codes.Unavailable
	}
	return codes.Internal
}

// statusFor turns err into a gRPC status error whose message is err's own
// (which names what failed and what is valid). Errors that already carry a
// status pass through. Failures that are not the caller's fault are logged.
func (s *Server) statusFor(rpc string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := statusCode(err)
	switch code {
	case codes.Internal, codes.Unavailable:
		s.log.Error("grpc request failed", slog.String("rpc", rpc), slog.String("code", code.String()), slog.Any("err", err))
	}
	return status.Error(code, err.Error())
}

// invalidf reports a request the server rejects before it reaches the broker.
func invalidf(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}
