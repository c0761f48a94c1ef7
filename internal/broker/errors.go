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
