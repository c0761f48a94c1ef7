package broker

import "errors"

// ErrUnknownTopic: the topic does not exist.
var ErrUnknownTopic = errors.New("unknown topic")

// ErrTopicExists: a topic of that name already exists.
var ErrTopicExists = errors.New("topic already exists")

// ErrInvalidPartition: the partition number is outside the topic's range,
// or a partition count is not positive.
var ErrInvalidPartition = errors.New("invalid partition")

// ErrInvalidConfig: an unknown topic config key or a bad value.
var ErrInvalidConfig = errors.New("invalid topic config")

// ErrInvalidTopicName: the name breaks Kafka's topic naming rules.
var ErrInvalidTopicName = errors.New("invalid topic name")

// ErrClosed: the broker is shut down.
var ErrClosed = errors.New("broker closed")

// ErrTopicDeletionPending: the topic is deleted but its data is not yet gone
// from the bucket (or the deletion is running). A create of the name is
// refused until it is, so a new topic never inherits the old one's records;
// the deletion is retried in the background, so retrying later succeeds.
// Kafka answers the same case with "marked for deletion".
var ErrTopicDeletionPending = errors.New("topic marked for deletion")

// ErrTooManyPartitions: a create would take the node past its partition
// limit (Options.MaxNodePartitions).
var ErrTooManyPartitions = errors.New("too many partitions on this node")

// ErrDirLocked: another process (or broker) holds the data directory.
var ErrDirLocked = errors.New("data directory locked")

// ErrInvalidReplication refuses a replication factor the cluster cannot
// give (more replicas than nodes, or any on a single node).
var ErrInvalidReplication = errors.New("invalid replication factor")
