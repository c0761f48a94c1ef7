package kafka

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/tiering"
)

// errorCode is the Kafka error code for an error from the broker, the log
// or the batch codec: the one place that mapping lives (as statusCode is
// for gRPC), so every request kind reports a failure the same way. Codes
// are those Kafka itself returns in the same situation, so clients retry
// what is retriable and surface the rest.
func errorCode(err error) int16 {
	var coded *codedError
	if code, ok := groupErrorCode(err); ok {
		return code
	}
	switch {
	case err == nil:
		return 0
	case errors.As(err, &coded):
		return coded.code.Code
	case errors.Is(err, broker.ErrNotLeader):
		return kerr.NotLeaderForPartition.Code
	case errors.Is(err, broker.ErrNotEnoughReplicas):
		return kerr.NotEnoughReplicas.Code
	case errors.Is(err, broker.ErrNotEnoughReplicasAfterAppend):
		return kerr.NotEnoughReplicasAfterAppend.Code
	case errors.Is(err, broker.ErrFencedLeaderEpoch):
		return kerr.FencedLeaderEpoch.Code
	case errors.Is(err, broker.ErrUnknownLeaderEpoch):
		return kerr.UnknownLeaderEpoch.Code
	case errors.Is(err, broker.ErrInvalidReplication):
		return kerr.InvalidReplicationFactor.Code
	case errors.Is(err, broker.ErrUnknownTopic):
		return kerr.UnknownTopicOrPartition.Code
	case errors.Is(err, broker.ErrInvalidPartition):
		return kerr.UnknownTopicOrPartition.Code
	case errors.Is(err, broker.ErrTopicDeletionPending):
		// Kafka: "Topic 'x' is marked for deletion" on a create.
		return kerr.TopicAlreadyExists.Code
	case errors.Is(err, broker.ErrTooManyPartitions):
		return kerr.PolicyViolation.Code
	case errors.Is(err, broker.ErrTopicExists):
		return kerr.TopicAlreadyExists.Code
	case errors.Is(err, broker.ErrInvalidConfig):
		return kerr.InvalidConfig.Code
	case errors.Is(err, broker.ErrInvalidTopicName):
		return kerr.InvalidTopicException.Code
	case errors.Is(err, hot.ErrTooLarge), errors.Is(err, batch.ErrTooLarge), errors.Is(err, batch.ErrTooManyRecords):
		return kerr.MessageTooLarge.Code
	case errors.Is(err, hot.ErrCorruptBatch), errors.Is(err, batch.ErrCorrupt), errors.Is(err, batch.ErrShortBatch):
		return kerr.CorruptMessage.Code
	case errors.Is(err, hot.ErrOutOfOrderSequence):
		return kerr.OutOfOrderSequenceNumber.Code
	case errors.Is(err, hot.ErrInvalidProducerEpoch):
		// Kafka's answer to a produce since 2.7 (KIP-588); clients bump
		// their epoch and retry, where PRODUCER_FENCED would be fatal.
		return kerr.InvalidProducerEpoch.Code
	case errors.Is(err, hot.ErrTransactional):
		// What Kafka answers a transactional batch whose producer has no
		// transaction open (none can be: tierlog has no coordinator).
		return kerr.InvalidTxnState.Code
	case errors.Is(err, hot.ErrOffsetOutOfRange):
		return kerr.OffsetOutOfRange.Code
	case errors.Is(err, tiering.ErrLocalDiskFull):
		// Kafka answers a full log directory with KAFKA_STORAGE_ERROR,
		// which clients retry after refreshing metadata.
		return kerr.KafkaStorageError.Code
	case errors.Is(err, hot.ErrLogFailed):
		return kerr.KafkaStorageError.Code
	case errors.Is(err, hot.ErrRetriable), errors.Is(err, hot.ErrClosed), errors.Is(err, broker.ErrClosed),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		// Retriable: the request may succeed on a retry (after a restart,
		// or on the partition's next leader).
		return kerr.NotLeaderForPartition.Code
	}
	return kerr.UnknownServerError.Code
}

// codedError is a failure the front end itself finds (a request that
// makes no sense, a replication factor one node cannot have), with the
// Kafka code that answers it and a message saying why.
type codedError struct {
	code *kerr.Error
	msg  string
}

func (e *codedError) Error() string { return e.msg }

func codedErrorf(code *kerr.Error, format string, args ...any) error {
	return &codedError{code: code, msg: fmt.Sprintf(format, args...)}
}

// errorMessage is err's text for responses that carry one, nil for none.
func errorMessage(err error) *string {
	if err == nil {
		return nil
	}
	m := err.Error()
	return &m
}
