package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/tierlog/tierlog/internal/bytesize"
)

// Server is the resolved configuration of one `tierlog serve` process.
type Server struct {
	DataDir  string // data_dir: where the broker keeps its partitions
	GRPCAddr string // grpc_addr: host:port of the gRPC listener (port 0 = any free port)
	HTTPAddr string // http_addr: host:port of /metrics, /healthz, /readyz
	// KafkaAddr (kafka_addr) is host:port of the Kafka listener; "localhost"
	// binds every loopback address it resolves to (127.0.0.1 and ::1), so a
	// client given localhost:9092 connects whichever it tries first; "none"
	// turns the listener off.
	KafkaAddr string
	// KafkaAdvertisedAddr (kafka_advertised_addr) is the host:port Metadata
	// gives clients; empty means the bound address (localhost:PORT when
	// KafkaAddr's host is localhost).
	KafkaAdvertisedAddr string
	// KafkaMaxRequestBytes (kafka_max_request_bytes, Kafka's
	// socket.request.max.bytes) bounds one Kafka request; a larger size
	// prefix closes the connection before anything is allocated.
	KafkaMaxRequestBytes int64
	// AutoCreateTopics (auto_create_topics_enable, Kafka's
	// auto.create.topics.enable) lets Metadata create a topic a client asks
	// for, with NumPartitions partitions (num_partitions).
	AutoCreateTopics bool
	NumPartitions    int32
	LogFormat        string        // log_format: text or json
	LogLevel         string        // log_level: debug, info, warn or error
	ShutdownTimeout  time.Duration // shutdown_timeout: how long in-flight RPCs may take to finish on shutdown
	ReadyFile        string        // ready_file: if set, the bound addresses are written there once serving
	// ShutdownUploadTimeout (shutdown_upload_timeout) bounds the upload of
	// every tiered partition's active segment at a graceful shutdown, so a
	// node restored from the bucket loses nothing; 0 turns it off.
	ShutdownUploadTimeout time.Duration

	// Bucket is the cold tier's URL (bucket): file:///path, s3://bucket/prefix?…
	// or minio://host:port/bucket/prefix?…; empty means a file:// bucket in
	// DataDir/bucket; "none" runs without tiering.
	Bucket          string
	CacheBytes      int64 // cache_bytes: budget of the remote chunk cache
	UploadRate      int64 // upload_rate: tiering upload bytes/s, 0 unlimited
	RemoteReadRate  int64 // remote_read_rate: historical read bytes/s from the bucket, 0 unlimited
	TieringParallel int   // tiering_concurrency: partitions uploading at once
	// SigningKey (signing_key) is the file of the Ed25519 key that signs
	// the partitions' checkpoints; empty: DataDir/signing.key.
	SigningKey string
	// MaxNodePartitions (max_node_partitions) bounds the partitions of all
	// topics on the node together; a create past it is refused.
	MaxNodePartitions int

	// MaxConnections caps open gRPC and Kafka connections together
	// (max_connections); 0 derives it from the file descriptor limit minus
	// FDReserve.
	MaxConnections int64
	// HTTPMaxConnections caps open connections to /metrics, /healthz and
	// /readyz (http_max_connections), apart from gRPC so a gRPC flood
	// cannot silence the probes.
	HTTPMaxConnections int64
	// FDReserve is how many file descriptors are kept for segment files,
	// the bucket and the runtime (fd_reserve); 0 means half the limit.
	FDReserve int64
	// ConnIdleTimeout closes connections idle that long (conn_idle_timeout).
	ConnIdleTimeout time.Duration
	// FetchBudgetBytes bounds the bytes of fetch and stream responses held
	// in memory at once, server-wide (fetch_budget_bytes).
	FetchBudgetBytes int64
	// LocalDiskMax (local_disk_max_bytes) is the node's local-disk ceiling:
	// 0 means 90% of the data directory's file system, -1 none.
	LocalDiskMax int64

	// OffsetsRetentionMinutes (offsets_retention_minutes, Kafka's
	// offsets.retention.minutes) is how long a consumer group without
	// members keeps its committed offsets after it became empty.
	OffsetsRetentionMinutes int64

	// TopicDefaults are Kafka-named topic configs applied to every new topic
	// unless the topic sets its own (e.g. "segment.bytes": "1048576").
	TopicDefaults map[string]string

	// Cluster makes the node one of a replicated cluster (cluster.go).
	Cluster Cluster
}

// Default returns the configuration used when nothing is set: one node,
// data in ./data, loopback listeners.
func Default() Server {
	return Server{
		DataDir:               "./data",
		GRPCAddr:              "127.0.0.1:7070",
		HTTPAddr:              "127.0.0.1:7071",
		KafkaAddr:             "localhost:9092",
		KafkaMaxRequestBytes:  100 << 20,
		AutoCreateTopics:      true,
		NumPartitions:         1,
		LogFormat:             "text",
		LogLevel:              "info",
		ShutdownTimeout:       10 * time.Second,
		ShutdownUploadTimeout: 30 * time.Second,
		CacheBytes:            256 << 20,
		TieringParallel:       2,
		// Each partition holds open files and memory; the sum over all
		// topics must leave descriptors for connections and segment rolls.
		MaxNodePartitions:       10000,
		OffsetsRetentionMinutes: 7 * 24 * 60, // Kafka's
		HTTPMaxConnections:      64,
		ConnIdleTimeout:         5 * time.Minute,
		FetchBudgetBytes:        256 << 20,
		TopicDefaults:           map[string]string{},
		Cluster:                 Cluster{ReplicaLagMax: 10 * time.Second, SessionTimeout: 2 * time.Second},
	}
}

// setting is one scalar configuration value. name is the YAML key; the flag
// is name with '_' replaced by '-', the environment variable is
// TIERLOG_ + upper-case name.
type setting struct {
	name  string
	usage string
	// typ names the value in flag help: size (a byte count that takes
	// units, see setBytes), int, duration or, when empty, string.
	typ string
	get func(*Server) string
	set func(*Server, string) error
}

func (s setting) flag() string { return strings.ReplaceAll(s.name, "_", "-") }
func (s setting) env() string  { return envPrefix + strings.ToUpper(s.name) }

const (
	envPrefix = "TIERLOG_"
	// envDefaultPrefix starts the per-key environment variables of topic
	// defaults: TIERLOG_DEFAULT_SEGMENT_BYTES sets segment.bytes.
	envDefaultPrefix = envPrefix + "DEFAULT_"
	// configSetting names the file setting; it is read from flag and env
	// only (a YAML file cannot name another file).
	configSetting = "config"
	// topicDefaultsKey is the YAML key of the topic defaults map.
	topicDefaultsKey = "topic_defaults"
	// defaultFlag is the repeatable flag of topic defaults.
	defaultFlag = "default"
)

// settings is the one table of scalar settings.
var settings = []setting{
	{
		name: "data_dir", usage: "directory holding the broker's data",
		get: func(c *Server) string { return c.DataDir },
		set: func(c *Server, v string) error {
			if v == "" {
				return fmt.Errorf("must not be empty")
			}
			c.DataDir = v
			return nil
		},
	},
	{
		name: "grpc_addr", usage: "host:port of the gRPC listener (port 0 picks a free port)",
		get: func(c *Server) string { return c.GRPCAddr },
		set: func(c *Server, v string) error { return setAddr(&c.GRPCAddr, v) },
	},
	{
		name: "http_addr", usage: "host:port of the HTTP listener serving /metrics, /healthz and /readyz (port 0 picks a free port)",
		get: func(c *Server) string { return c.HTTPAddr },
		set: func(c *Server, v string) error { return setAddr(&c.HTTPAddr, v) },
	},
	{
		name: "kafka_addr", usage: "host:port of the Kafka protocol listener (localhost binds both 127.0.0.1 and ::1; port 0 picks a free port; none: off)",
		get: func(c *Server) string { return c.KafkaAddr },
		set: func(c *Server, v string) error {
			if v == "none" {
				c.KafkaAddr = v
				return nil
			}
			return setAddr(&c.KafkaAddr, v)
		},
	},
	{
		name: "kafka_advertised_addr", usage: "host:port Kafka clients are told to connect to, in Metadata (default: the listener's, e.g. localhost:9092)",
		get: func(c *Server) string { return c.KafkaAdvertisedAddr },
		set: func(c *Server, v string) error {
			if v == "" {
				c.KafkaAdvertisedAddr = ""
				return nil
			}
			return setAddr(&c.KafkaAdvertisedAddr, v)
		},
	},
	{
		name: "kafka_max_request_bytes", usage: "largest Kafka request accepted (Kafka's socket.request.max.bytes); a larger one closes the connection",
		typ: "size",
		get: func(c *Server) string { return bytesize.Format(c.KafkaMaxRequestBytes) },
		set: func(c *Server, v string) error { return setBytes(&c.KafkaMaxRequestBytes, v, 64<<10) },
	},
	{
		name: "auto_create_topics_enable", usage: "create a topic when a Kafka client asks for one that does not exist (Kafka's auto.create.topics.enable)",
		typ: "bool",
		get: func(c *Server) string { return strconv.FormatBool(c.AutoCreateTopics) },
		set: func(c *Server, v string) error {
			b, err := strconv.ParseBool(strings.TrimSpace(v))
			if err != nil {
				return fmt.Errorf("%q is not true or false", v)
			}
			c.AutoCreateTopics = b
			return nil
		},
	},
	{
		name: "num_partitions", usage: "partitions of a topic created automatically (Kafka's num.partitions)",
		typ: "int",
		get: func(c *Server) string { return strconv.Itoa(int(c.NumPartitions)) },
		set: func(c *Server, v string) error {
			var n int64
			if err := setInt(&n, v, 1); err != nil {
				return err
			}
			if n > 1<<20 {
				return fmt.Errorf("%q is more partitions than a topic may have", v)
			}
			c.NumPartitions = int32(n)
			return nil
		},
	},
	{
		name: "log_format", usage: "log format: text or json",
		get: func(c *Server) string { return c.LogFormat },
		set: func(c *Server, v string) error {
			if v != "text" && v != "json" {
				return fmt.Errorf("%q is not a log format (valid: text, json)", v)
			}
			c.LogFormat = v
			return nil
		},
	},
	{
		name: "log_level", usage: "log level: debug, info, warn or error",
		get: func(c *Server) string { return c.LogLevel },
		set: func(c *Server, v string) error {
			switch v {
			case "debug", "info", "warn", "error":
				c.LogLevel = v
				return nil
			}
			return fmt.Errorf("%q is not a log level (valid: debug, info, warn, error)", v)
		},
	},
	{
		name: "shutdown_timeout", usage: "how long in-flight RPCs may run after SIGINT/SIGTERM before they are cut off",
		typ: "duration",
		get: func(c *Server) string { return c.ShutdownTimeout.String() },
		set: func(c *Server, v string) error {
			return setDuration(&c.ShutdownTimeout, v)
		},
	},
	{
		name: "shutdown_upload_timeout", usage: "on SIGINT/SIGTERM, once RPCs have drained, roll and upload every tiered partition's active segment, waiting at most this long for the bucket (0: off; what is left stays local)",
		typ: "duration",
		get: func(c *Server) string { return c.ShutdownUploadTimeout.String() },
		set: func(c *Server, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				return fmt.Errorf("%q is not a duration >= 0 (e.g. 30s, 2m; 0 turns it off)", v)
			}
			c.ShutdownUploadTimeout = d
			return nil
		},
	},
	{
		name: "bucket", usage: "cold tier URL: file:///path, s3://bucket/prefix?region=…&endpoint=…&path_style=true, minio://host:port/bucket/prefix?secure=false, or none (default: file:// under the data directory)",
		get: func(c *Server) string { return c.Bucket },
		set: func(c *Server, v string) error { c.Bucket = v; return nil },
	},
	{
		name: "cache_bytes", usage: "bytes of decompressed remote chunks kept in memory for historical reads",
		typ: "size",
		get: func(c *Server) string { return bytesize.Format(c.CacheBytes) },
		set: func(c *Server, v string) error { return setBytes(&c.CacheBytes, v, 1<<20) },
	},
	{
		name: "upload_rate", usage: "cap on tiering upload bandwidth in bytes per second, e.g. 50MiB (0: unlimited)",
		typ: "size",
		get: func(c *Server) string { return bytesize.Format(c.UploadRate) },
		set: func(c *Server, v string) error { return setBytes(&c.UploadRate, v, 0) },
	},
	{
		name: "remote_read_rate", usage: "cap on bytes per second read from the bucket for historical fetches, e.g. 100MiB (0: unlimited)",
		typ: "size",
		get: func(c *Server) string { return bytesize.Format(c.RemoteReadRate) },
		set: func(c *Server, v string) error { return setBytes(&c.RemoteReadRate, v, 0) },
	},
	{
		name: "tiering_concurrency", usage: "partitions uploading segments at once",
		typ: "int",
		get: func(c *Server) string { return strconv.Itoa(c.TieringParallel) },
		set: func(c *Server, v string) error {
			var n int64
			if err := setInt(&n, v, 1); err != nil {
				return err
			}
			c.TieringParallel = int(n)
			return nil
		},
	},
	{
		name: "max_node_partitions", usage: "the most partitions all topics on this node may have together; a topic create past it is refused",
		typ: "int",
		get: func(c *Server) string { return strconv.Itoa(c.MaxNodePartitions) },
		set: func(c *Server, v string) error {
			var n int64
			if err := setInt(&n, v, 1); err != nil {
				return err
			}
			c.MaxNodePartitions = int(n)
			return nil
		},
	},
	{
		name: "max_connections", usage: "most gRPC and Kafka connections open at once, together; past it new connections are closed on accept (0: the file descriptor limit minus fd_reserve and http_max_connections)",
		typ: "int",
		get: func(c *Server) string { return strconv.FormatInt(c.MaxConnections, 10) },
		set: func(c *Server, v string) error { return setInt(&c.MaxConnections, v, 0) },
	},
	{
		name: "http_max_connections", usage: "most connections to the HTTP listener (/metrics, /healthz, /readyz) open at once",
		typ: "int",
		get: func(c *Server) string { return strconv.FormatInt(c.HTTPMaxConnections, 10) },
		set: func(c *Server, v string) error { return setInt(&c.HTTPMaxConnections, v, 1) },
	},
	{
		name: "fd_reserve", usage: "file descriptors kept for segment files, the bucket and the runtime, not given to connections (0: half the limit)",
		typ: "int",
		get: func(c *Server) string { return strconv.FormatInt(c.FDReserve, 10) },
		set: func(c *Server, v string) error { return setInt(&c.FDReserve, v, 0) },
	},
	{
		name: "conn_idle_timeout", usage: "close gRPC and HTTP connections idle this long",
		typ: "duration",
		get: func(c *Server) string { return c.ConnIdleTimeout.String() },
		set: func(c *Server, v string) error { return setDuration(&c.ConnIdleTimeout, v) },
	},
	{
		name: "fetch_budget_bytes", usage: "bytes of fetch and stream responses held in memory at once, server-wide; a fetch past it waits (part of the soft memory limit)",
		typ: "size",
		get: func(c *Server) string { return bytesize.Format(c.FetchBudgetBytes) },
		set: func(c *Server, v string) error { return setBytes(&c.FetchBudgetBytes, v, 1<<20) },
	},
	{
		name: "local_disk_max_bytes", usage: "ceiling on the bytes of local segments of all partitions; past it producers get a retriable error until uploads catch up and local retention frees space (0: 90% of the data directory's file system; -1: none)",
		typ: "size",
		get: func(c *Server) string { return bytesize.Format(c.LocalDiskMax) },
		set: func(c *Server, v string) error { return setBytes(&c.LocalDiskMax, v, -1) },
	},
	{
		name: "offsets_retention_minutes", usage: "minutes a consumer group without members keeps its committed offsets after it became empty (Kafka's offsets.retention.minutes)",
		typ: "int",
		get: func(c *Server) string { return strconv.FormatInt(c.OffsetsRetentionMinutes, 10) },
		set: func(c *Server, v string) error { return setInt(&c.OffsetsRetentionMinutes, v, 1) },
	},
	{
		name: "signing_key", usage: "file of the node's Ed25519 key that signs the partitions' Merkle tree checkpoints (created, mode 0600, if missing; default <data dir>/signing.key)",
		get: func(c *Server) string { return c.SigningKey },
		set: func(c *Server, v string) error { c.SigningKey = v; return nil },
	},
	{
		name: "ready_file", usage: "once serving, write the bound addresses as JSON to this file (for scripts and tests using port 0)",
		get: func(c *Server) string { return c.ReadyFile },
		set: func(c *Server, v string) error { c.ReadyFile = v; return nil },
	},
}

func setInt(dst *int64, v string, minimum int64) error {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < minimum {
		return fmt.Errorf("%q is not an integer >= %d", v, minimum)
	}
	*dst = n
	return nil
}

// setBytes reads a byte count with or without a unit (268435456, 256MiB,
// 1GiB, 10MB): flags, environment and YAML accept the same forms.
func setBytes(dst *int64, v string, minimum int64) error {
	n, err := bytesize.Parse(v)
	if err != nil {
		return err
	}
	if n < minimum {
		return fmt.Errorf("%q is less than %s", v, bytesize.Format(minimum))
	}
	*dst = n
	return nil
}

func setDuration(dst *time.Duration, v string) error {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return fmt.Errorf("%q is not a positive duration (e.g. 10s, 1m)", v)
	}
	*dst = d
	return nil
}

func setAddr(dst *string, v string) error {
	if _, _, err := net.SplitHostPort(v); err != nil {
		return fmt.Errorf("%q is not host:port: %w", v, err)
	}
	*dst = v
	return nil
}

// topicEnvKey maps a topic config key to its environment variable.
func topicEnvKey(key string) string {
	return envDefaultPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// topicKeyFromEnv is the inverse of topicEnvKey.
func topicKeyFromEnv(env string) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(env, envDefaultPrefix), "_", "."))
}
