// Package kafka is tierlog's Kafka protocol front end: a listener that
// answers Kafka clients (kafka-python, librdkafka/kcat, franz-go, the Java
// client) from the broker, with franz-go's kmsg for every request and
// response codec.
//
// One file per request kind (produce.go, fetch.go, metadata.go, groups.go,
// ...) keeps each protocol's rules beside its handler; api.go is the table
// of kinds and versions the server implements (and advertises in
// ApiVersions); conn.go reads, starts and answers requests in order on one
// connection.
package kafka
