package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/tierlog/tierlog/api/grpcapi"
	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/broker/groups"
	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/bucketurl"
	"github.com/tierlog/tierlog/internal/config"
	"github.com/tierlog/tierlog/internal/connlimit"
	"github.com/tierlog/tierlog/internal/fetchbudget"
	"github.com/tierlog/tierlog/internal/fileutil"
	"github.com/tierlog/tierlog/internal/httpserver"
	"github.com/tierlog/tierlog/tiering"
)

// maxGRPCMessageBytes bounds one request the server accepts. Fetches are
// capped at 64 MiB by the API; a produce is bounded by the topic's
// max.message.bytes (1 MiB by default), which an operator may raise.
const maxGRPCMessageBytes = 64<<20 + 1<<20

// handshakeTimeout bounds the HTTP/2 handshake of a new gRPC connection.
const handshakeTimeout = 10 * time.Second

// httpShutdownTimeout bounds the wait for in-flight scrapes and probes.
const httpShutdownTimeout = 5 * time.Second

func newServeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a tierlog node",
		Long: `Run a tierlog node: the broker on --data-dir, the gRPC API on --grpc-addr
and /metrics, /healthz and /readyz on --http-addr.

Every setting can also come from the environment (TIERLOG_DATA_DIR,
TIERLOG_GRPC_ADDR, ...) or a YAML file (--config FILE or TIERLOG_CONFIG)
with keys data_dir, grpc_addr, ... Precedence: flag > env > file > default.

Server-wide topic defaults (applied to topics that do not set their own):
  flag  --default segment.bytes=1048576 --default flush.policy=always
  env   TIERLOG_DEFAULT_SEGMENT_BYTES=1048576
  YAML  topic_defaults: {segment.bytes: 1048576, flush.policy: always}

SIGINT or SIGTERM shuts down gracefully: readiness turns off, open streams
end, in-flight unary RPCs get --shutdown-timeout to finish, every stream is
cut (a client that stopped reading cannot hold the exit); at the same time
Kafka connections stop reading requests, long polls are answered at once
and every request already read is answered (a produce once stored and
fsynced) within --shutdown-timeout before its connection closes; then the active
segment of every tiered partition is rolled and uploaded, waiting at most
--shutdown-upload-timeout for the bucket (so a node restored from the
bucket loses nothing), then the broker is closed (flushing and fsyncing
every partition). A second signal kills the process at once.`,
		Args: cobra.NoArgs,
	}
	config.BindFlags(cmd.Flags())
	printConfig := cmd.Flags().Bool("print-config", false, "print the effective configuration as YAML and exit")
	// A flag only, not a setting: a takeover written into a config file
	// or the environment would repeat at every restart.
	takeover := cmd.Flags().Bool("takeover", false, "claim the bucket prefix even if another node owns it (restoring its data here): the old owner is fenced off and stops writing to the bucket")
	// The root's --server is for client commands; a hidden local flag of
	// the same name keeps it out of serve's help and lets a mistaken
	// `serve --server` say where the listen address goes.
	cmd.Flags().String(serverFlag, "", "")
	_ = cmd.Flags().MarkHidden(serverFlag)
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		if cmd.Flags().Changed(serverFlag) {
			return usageErrorf("--server is for client commands; serve listens on --grpc-addr (default %s)", config.Default().GRPCAddr)
		}
		cfg, err := config.Load(config.Sources{Flags: cmd.Flags(), Environ: os.Environ()})
		if err != nil {
			return usageErrorf("%v", err)
		}
		defaults, err := broker.ParseTopicConfig(broker.DefaultTopicConfig(), cfg.TopicDefaults)
		if err != nil {
			return usageErrorf("topic defaults: %v", err)
		}
		if *printConfig {
			cfg.TopicDefaults = defaults.Map()
			// Show the bucket a start would open, not "" for the default.
			if cfg.Bucket, err = bucketURL(cfg); err != nil {
				return err
			}
			out, err := cfg.YAML()
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		}
		logger := newLogger(cfg, cmd.ErrOrStderr())
		if err := serve(cmd.Context(), cfg, defaults, *takeover, logger); err != nil {
			logger.Error("tierlog serve failed", "err", err)
			return err
		}
		logger.Info("shutdown complete")
		return nil
	})
	return cmd
}

func newLogger(cfg config.Server, w io.Writer) *slog.Logger {
	var level slog.Level
	// config.Load accepted only debug, info, warn and error.
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// readiness is what /readyz reports.
type readiness struct {
	brokerOpen  atomic.Bool
	grpcServing atomic.Bool
	draining    atomic.Bool
	// registered (cluster mode) says whether the node is in the cluster
	// state yet; nil on a single node.
	registered atomic.Pointer[func() error]
}

func (r *readiness) check() error {
	switch {
	case r.draining.Load():
		return errors.New("shutting down")
	case !r.brokerOpen.Load():
		return errors.New("broker not open yet (recovering logs)")
	case !r.grpcServing.Load():
		return errors.New("gRPC not serving yet")
	}
	if reg := r.registered.Load(); reg != nil {
		return (*reg)()
	}
	return nil
}

// serve runs the node until SIGINT/SIGTERM or a listener fails.
func serve(ctx context.Context, cfg config.Server, defaults broker.TopicConfig, takeover bool, logger *slog.Logger) (err error) {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger.Info("tierlog starting", "pid", os.Getpid(), "config", cfg)

	if cfg.ReadyFile != "" {
		// A file left by a killed process would name dead addresses.
		if err := os.Remove(cfg.ReadyFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove stale ready file: %w", err)
		}
	}

	setMemoryLimit(cfg, logger)
	// One cap for the gRPC and Kafka listeners together: each connection
	// is a descriptor out of the same limit, beside the reserve.
	connPool := connlimit.NewPool(connectionLimit(cfg, raiseFileLimit(logger), logger))

	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register metrics collector: %w", err)
		}
	}

	// HTTP first, so /healthz answers while the broker recovers its logs.
	var ready readiness
	conns := connlimit.NewMetrics(reg)
	httpSrv, err := httpserver.Listen(cfg.HTTPAddr, httpserver.Options{Gatherer: reg, Ready: ready.check, Logger: logger,
		MaxConns: int(cfg.HTTPMaxConnections), Conns: conns, IdleTimeout: cfg.ConnIdleTimeout})
	if err != nil {
		return err
	}
	failed := make(chan error, 3) // one per server goroutine
	go func() {
		if err := httpSrv.Serve(); err != nil {
			failed <- err
		}
	}()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
		defer cancel()
		err = errors.Join(err, httpSrv.Shutdown(sctx))
	}()

	// A cluster node binds its listeners and joins the Raft group first:
	// the broker follows the cluster's metadata from its first moment.
	var cn *clusterNode
	var b *broker.Broker
	bopts := broker.Options{Dir: cfg.DataDir, Defaults: defaults, Logger: logger, Registerer: reg,
		Takeover: takeover, SigningKey: cfg.SigningKey, CacheBytes: cfg.CacheBytes, MaxNodePartitions: cfg.MaxNodePartitions, Cache: cold.ReaderOptions{ReadRateLimit: cfg.RemoteReadRate},
		Tiering: tiering.DaemonOptions{Concurrency: cfg.TieringParallel, UploadBytesPerSec: cfg.UploadRate, LocalDiskMaxBytes: cfg.LocalDiskMax},
		Groups:  groups.Options{OffsetsRetention: time.Duration(cfg.OffsetsRetentionMinutes) * time.Minute}}
	if cfg.Cluster.Enabled() && cfg.Bucket == "" {
		return usageErrorf("a cluster's nodes share one bucket, and the default one is in each node's data directory: set bucket (--bucket file:///a/shared/dir for nodes on one machine, s3://… or minio://… otherwise; none: no tiering)")
	}
	if bopts.Bucket, err = openBucket(ctx, cfg); err != nil {
		return err
	}
	if cfg.Cluster.Enabled() {
		if cn, err = openCluster(ctx, cfg, defaults, bopts.Bucket, takeover, reg, logger); err != nil {
			if bopts.Bucket != nil {
				bopts.Bucket.Close()
			}
			if ctx.Err() != nil {
				// A signal while it waited to join (or to be re-admitted).
				logger.Info("stopped before joining the cluster", "err", err)
				return nil
			}
			return err
		}
		defer cn.close() // after the broker's Close (deferred below)
		// Ready (readyz, the ready file) only once registered: a client
		// that waited for every node's readiness then finds them all in
		// the cluster (a topic created then gets all its replicas).
		registered := cn.registered
		ready.registered.Store(&registered)
		bopts.Cluster = cn.brokerOptions(cfg)
	}

	// The broker logs its own "broker open" and "broker closed" lines.
	logger.Info("opening broker", "data_dir", cfg.DataDir)
	if b, err = broker.Open(ctx, bopts); err != nil {
		if bopts.Bucket != nil {
			bopts.Bucket.Close()
		}
		return fmt.Errorf("open broker in %s: %w", cfg.DataDir, err)
	}
	ready.brokerOpen.Store(true)
	defer func() {
		// Close flushes and fsyncs every partition, whatever its flush policy.
		if cerr := b.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close broker: %w", cerr))
		}
	}()

	var lis net.Listener
	if cn != nil {
		lis = cn.grpcLis
	} else if lis, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		return fmt.Errorf("listen for gRPC on %s: %w", cfg.GRPCAddr, err)
	}
	lis = connlimit.Wrap(lis, connlimit.Options{Name: "grpc", Pool: connPool, Metrics: conns, Logger: logger})
	// One fetch budget for both front ends: together they hold at most
	// cfg.FetchBudgetBytes of responses (see the memory limit below).
	budget := fetchbudget.New(cfg.FetchBudgetBytes, 0, reg)
	api := grpcapi.NewServer(b, grpcapi.Options{Logger: logger, Registerer: reg, Budget: budget})
	gs := grpc.NewServer(append(api.ServerOptions(),
		grpc.MaxRecvMsgSize(maxGRPCMessageBytes),
		// A connection that never completes the HTTP/2 handshake holds a
		// descriptor for this long (gRPC's default is 120 s).
		grpc.ConnectionTimeout(handshakeTimeout),
		// A connection without an RPC for this long is closed (GOAWAY).
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: cfg.ConnIdleTimeout}),
	)...)
	api.Register(gs)
	if cn != nil {
		cn.serve(gs, b)
	}
	health := grpcapi.RegisterHealth(gs)
	go func() {
		if err := gs.Serve(lis); err != nil {
			failed <- fmt.Errorf("serve gRPC on %s: %w", lis.Addr(), err)
		}
	}()
	ready.grpcServing.Store(true)

	kafkaSrv, kafkaAddr, err := serveKafka(cfg, b, cn, budget, connPool, conns, reg, logger, failed)
	if err != nil {
		gs.Stop()
		return err
	}
	defer kafkaSrv.Close()

	if cn != nil {
		// The ready file, like readyz, waits for the registration.
		if err := cn.waitRegistered(ctx); err != nil {
			logger.Info("stopped before the node was registered in the cluster", "err", err)
		}
	}
	logger.Info("tierlog serving", "grpc_addr", lis.Addr().String(), "kafka_addr", kafkaAddr, "http_addr", httpSrv.Addr().String(), "data_dir", cfg.DataDir)
	if cfg.ReadyFile != "" && ctx.Err() == nil {
		if err := writeReadyFile(cfg.ReadyFile, lis.Addr(), httpSrv.Addr(), kafkaAddr); err != nil {
			gs.Stop()
			return err
		}
		defer os.Remove(cfg.ReadyFile)
	}

	var runErr error
	select {
	case <-ctx.Done():
		logger.Info("shutting down", "cause", context.Cause(ctx).Error(), "shutdown_timeout", cfg.ShutdownTimeout)
	case runErr = <-failed:
		logger.Error("listener failed, shutting down", "err", runErr)
	}
	stop() // from here a second signal kills the process
	if cn != nil {
		cn.retire(cfg.ShutdownTimeout)
	}

	ready.draining.Store(true)
	health.Shutdown()
	// Both front ends drain at once, each for up to the timeout (and a
	// second for the writes): Kafka connections stop reading, long polls
	// answer now, every request already read is answered (a produce after
	// its fsync) before its connection closes; unary RPCs get up to the
	// timeout and streams end at once (a stream blocked sending to a client
	// that stopped reading would otherwise hold the exit for the whole
	// timeout). Clients then reconnect to the next node without having a
	// stored produce answered as failed (stored twice on retry).
	kafkaDrained := make(chan struct{})
	go func() {
		defer close(kafkaDrained)
		if err := kafkaSrv.Shutdown(cfg.ShutdownTimeout); err != nil {
			logger.Warn("Kafka listener shutdown", "err", err)
		}
	}()
	api.Stop(gs, cfg.ShutdownTimeout)
	<-kafkaDrained
	if cn == nil {
		// A cluster node's records are on its partitions' other replicas
		// (it handed its leaderships over above): nothing to rush into the
		// bucket.
		uploadAtShutdown(b, cfg.ShutdownUploadTimeout, logger)
	}
	return runErr
}

// uploadAtShutdown copies the groups' committed offsets to the bucket, rolls
// every tiered partition's active segment and waits, at most timeout, until
// the bucket's manifest names every record: then a node that loses this
// data directory restores them all, offsets included (serve --takeover).
// It runs after the RPCs drained (no record arrives after the roll) and
// before the broker closes, which cancels uploads still in flight; a bucket
// that is down cannot hold the exit past timeout, and what is left (it
// stays local, uploaded after the next start) is logged.
func uploadAtShutdown(b *broker.Broker, timeout time.Duration, logger *slog.Logger) {
	if timeout <= 0 {
		return
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// The groups' committed offsets first: one small object, which a
	// bucket slow to take the segments must not hold back. No commit
	// arrives any more (the Kafka listener drained), so the bucket then
	// holds every acknowledged commit. The periodic copies stop first: one
	// hung on the bucket would otherwise hold this one past its deadline.
	b.StopGroupOffsetsCopies()
	if err := b.CopyGroupOffsets(ctx); err != nil {
		logger.Warn("shutdown: committed group offsets not copied to the bucket; a restore from it gets the last periodic copy", "err", err)
	}
	ups := b.UploadAll(ctx)
	left := 0
	for _, u := range ups {
		if u.Err != nil {
			left++
			logger.Warn("shutdown: records left local, not in the bucket", "topic", u.Topic, "partition", u.Partition,
				"bucket_holds_below", u.After, "log_end", u.Target, "err", u.Err)
		}
	}
	logger.Info("shutdown: uploaded active segments", "partitions", len(ups), "left_local", left,
		"took", time.Since(start).Round(time.Millisecond), "shutdown_upload_timeout", timeout)
}

// readyFile is what --ready-file holds once the node serves.
type readyFile struct {
	GRPCAddr  string `json:"grpc_addr"`
	HTTPAddr  string `json:"http_addr"`
	KafkaAddr string `json:"kafka_addr,omitempty"`
	PID       int    `json:"pid"`
}

func writeReadyFile(path string, grpcAddr, httpAddr net.Addr, kafkaAddr string) error {
	data, err := json.Marshal(readyFile{GRPCAddr: grpcAddr.String(), HTTPAddr: httpAddr.String(), KafkaAddr: kafkaAddr, PID: os.Getpid()})
	if err != nil {
		return fmt.Errorf("encode ready file: %w", err)
	}
	// Atomic, so a reader polling for the file never sees half of it.
	if err := fileutil.WriteFileAtomic(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write ready file %s: %w", path, err)
	}
	return nil
}

// openBucket opens the cold tier the configuration names: by default a
// filesystem bucket under the data directory; "none" turns tiering off.
func openBucket(ctx context.Context, cfg config.Server) (cold.Bucket, error) {
	raw, err := bucketURL(cfg)
	if err != nil || raw == "none" {
		return nil, err
	}
	if cfg.Bucket == "" {
		if err := os.MkdirAll(strings.TrimPrefix(raw, "file://"), 0o755); err != nil {
			return nil, fmt.Errorf("create the default bucket directory: %w", err)
		}
	}
	b, err := bucketurl.Open(ctx, raw, cold.Options{})
	if err != nil {
		return nil, fmt.Errorf("open bucket: %w", err)
	}
	return b, nil
}

// bucketURL is the bucket the configuration names, with the default (a
// file:// bucket in the data directory's "bucket" folder) made explicit.
func bucketURL(cfg config.Server) (string, error) {
	if cfg.Bucket != "" {
		return cfg.Bucket, nil
	}
	dir, err := filepath.Abs(filepath.Join(cfg.DataDir, "bucket"))
	if err != nil {
		return "", fmt.Errorf("default bucket: %w", err)
	}
	return "file://" + dir, nil
}

// memoryHeadroom is what the process needs beside the chunk cache and the
// fetch budget: produce requests, gRPC, indexes, the Go runtime.
const memoryHeadroom = 256 << 20

// setMemoryLimit gives the Go runtime a soft memory limit of the chunk
// cache's budget, the fetch budget and headroom, unless GOMEMLIMIT says
// otherwise. Without
// one the garbage collector lets the heap grow to about twice the live
// cache before collecting (measured: peak RSS ~2x --cache-bytes during a
// cold replay); with it, RSS stays near budget + a fixed overhead.
func setMemoryLimit(cfg config.Server, logger *slog.Logger) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	limit := cfg.CacheBytes + cfg.FetchBudgetBytes + memoryHeadroom
	debug.SetMemoryLimit(limit)
	logger.Info("soft memory limit", "bytes", limit, "cache_bytes", cfg.CacheBytes, "fetch_budget_bytes", cfg.FetchBudgetBytes, "override", "GOMEMLIMIT")
}

// raiseFileLimit raises the soft RLIMIT_NOFILE to the hard limit (the Go
// runtime does so too on Linux, but only since Go 1.19 and silently) and
// returns the soft limit in effect, 0 if it cannot be read.
func raiseFileLimit(logger *slog.Logger) int64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		logger.Warn("cannot read the file descriptor limit", "err", err)
		return 0
	}
	if rl.Cur < rl.Max {
		raised := syscall.Rlimit{Cur: rl.Max, Max: rl.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			logger.Warn("cannot raise the file descriptor limit", "soft", rl.Cur, "hard", rl.Max, "err", err)
		} else {
			rl = raised
		}
	}
	return int64(min(rl.Cur, math.MaxInt32))
}

// minConnections is the least connection cap derived from a small
// descriptor limit.
const minConnections = 16

// connectionLimit returns the cap on gRPC and Kafka connections together:
// --max-connections, or the descriptor limit less the reserve for segment
// files (--fd-reserve, default half the limit) and the HTTP listener's
// connections.
func connectionLimit(cfg config.Server, nofile int64, logger *slog.Logger) int {
	reserve := cfg.FDReserve
	if reserve == 0 {
		reserve = nofile / 2
	}
	limit, from := cfg.MaxConnections, "max_connections"
	if limit == 0 {
		limit, from = max(minConnections, nofile-reserve-cfg.HTTPMaxConnections), "descriptor limit - fd_reserve - http_max_connections"
		if nofile == 0 {
			limit, from = 1024, "default (descriptor limit unknown)"
		}
	}
	logger.Info("connection limit", "max_connections", limit, "listeners", "grpc and kafka together", "from", from, "nofile", nofile,
		"fd_reserve", reserve, "http_max_connections", cfg.HTTPMaxConnections, "idle_timeout", cfg.ConnIdleTimeout)
	return int(min(limit, math.MaxInt32))
}
