// Package broker holds the topics of one node: it creates, persists and
// deletes topics, opens one hot.Log per partition, routes records to
// partitions (murmur2 of the key as Kafka clients do, round-robin without a
// key) and is what the gRPC and Kafka front ends call.
//
// On disk, under the data directory:
//
//	.lock                            exclusive flock of the broker using the directory (holds its pid)
//	topics/<topic>/topic.json        partition count, config overrides, state (atomic)
//	topics/<topic>/<partition>/      one hot.Log: segments, indexes, checkpoints
//	groups/offsets.log               consumer groups' committed offsets (see package groups)
//
// A topic exists once topic.json is durable without a state. A topic.json
// whose state is "creating" (a create cut short) or "deleting" (a deletion
// not finished in the bucket) is a deletion to finish: open resumes it in
// the background, and the name cannot be created again until it is done
// (see topics.go). A directory without topic.json never reached the bucket
// and is removed at open.
// Topic config keys use Kafka's names; a key a topic does not set follows
// the server-wide default, so changing a default reaches those topics at the
// next start.
package broker
