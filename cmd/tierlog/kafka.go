package main

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tierlog/tierlog/api/kafka"
	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/internal/config"
	"github.com/tierlog/tierlog/internal/connlimit"
	"github.com/tierlog/tierlog/internal/fetchbudget"
)

// serveKafka starts the Kafka listener cfg names and returns the server and
// the address Metadata gives clients. With kafka_addr "none" the server
// listens nowhere (its Close does nothing) and the address is empty. A
// cluster node bound its listeners already (cn); it serves on those.
func serveKafka(cfg config.Server, b *broker.Broker, cn *clusterNode, budget *fetchbudget.Budget, connPool *connlimit.Pool, conns *connlimit.Metrics, reg prometheus.Registerer,
	logger *slog.Logger, failed chan<- error) (*kafka.Server, string, error) {
	opts := kafka.Options{Logger: logger, Registerer: reg, MaxRequestBytes: int32(cfg.KafkaMaxRequestBytes), NodeID: b.NodeID(),
		AutoCreateTopics: cfg.AutoCreateTopics, NumPartitions: cfg.NumPartitions, IdleTimeout: cfg.ConnIdleTimeout, FetchBudget: budget}
	if cfg.KafkaAddr == "none" {
		return kafka.New(b, opts), "", nil
	}
	var lns []net.Listener
	if cn != nil {
		lns, opts.AdvertisedHost, opts.AdvertisedPort = cn.kafkaLns, cn.kafkaOpt.AdvertisedHost, cn.kafkaOpt.AdvertisedPort
	} else {
		var err error
		if lns, err = kafka.Listen(cfg.KafkaAddr); err != nil {
			return nil, "", fmt.Errorf("listen for Kafka clients on %s: %w", cfg.KafkaAddr, err)
		}
		if opts.AdvertisedHost, opts.AdvertisedPort, err = advertisedKafka(cfg, lns[0].Addr()); err != nil {
			for _, ln := range lns {
				ln.Close()
			}
			return nil, "", err
		}
	}
	// Every Kafka listener (127.0.0.1 and ::1 for localhost) draws on the
	// cap the gRPC listener does.
	for i, ln := range lns {
		lns[i] = connlimit.Wrap(ln, connlimit.Options{Name: "kafka", Pool: connPool, Metrics: conns, Logger: logger})
	}
	srv := kafka.New(b, opts)
	go func() {
		if err := srv.Serve(lns...); err != nil {
			failed <- fmt.Errorf("serve Kafka on %s: %w", cfg.KafkaAddr, err)
		}
	}()
	return srv, net.JoinHostPort(opts.AdvertisedHost, strconv.Itoa(int(opts.AdvertisedPort))), nil
}

// advertisedKafka is the address Metadata gives Kafka clients: the
// configured one, or the bound one (see kafka.AdvertisedFor).
func advertisedKafka(cfg config.Server, bound net.Addr) (string, int32, error) {
	if cfg.KafkaAdvertisedAddr == "" {
		host, port := kafka.AdvertisedFor(cfg.KafkaAddr, bound)
		return host, port, nil
	}
	host, port, _ := net.SplitHostPort(cfg.KafkaAdvertisedAddr) // config checked host:port
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("kafka_advertised_addr %q: bad port", cfg.KafkaAdvertisedAddr)
	}
	return host, int32(p), nil
}
