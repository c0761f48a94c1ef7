// Package broker holds the topics of one node: it creates, persists and
// deletes topics, opens one hot.Log per partition, routes records to
// partitions (murmur2 of the key as Kafka clients do, round-robin without a
// key) and is what the gRPC and Kafka front ends call.
//
// On disk, under the data directory:
//
//	topics/<topic>/topic.json        partition count, config overrides (atomic)
//	topics/<topic>/<partition>/      one hot.Log: segments, indexes, checkpoints
//
// A topic exists once topic.json is durable; a directory without it is the
// remains of a creation or deletion cut short and is removed at open.
// Topic config keys use Kafka's names; a key a topic does not set follows
// the server-wide default, so changing a default reaches those topics at the
// next start.
package broker
