package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	tierlogv1 "github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/internal/bytesize"
)

// The bench commands measure a running server end to end, through the same
// gRPC API and client the other commands use: what a user on this machine
// gets, loopback network and protobuf included.

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure produce and consume throughput and latency against a running server",
	}
	cmd.AddCommand(newBenchProduceCmd(), newBenchConsumeCmd())
	return cmd
}

// defaultBenchTopic is the topic the bench commands use without one.
const defaultBenchTopic = "tierlog-bench"

// addBenchTopicFlag keeps the old --topic flag working, deprecated: the
// topic is a positional argument, as for produce and consume.
func addBenchTopicFlag(cmd *cobra.Command, topic *string) {
	cmd.Flags().StringVar(topic, "topic", defaultBenchTopic, "deprecated: give the topic as an argument")
	_ = cmd.Flags().MarkHidden("topic")
}

// benchTopic is the topic argument, else the deprecated --topic, else the
// default.
func benchTopic(cmd *cobra.Command, args []string) (string, error) {
	topic, _ := cmd.Flags().GetString("topic")
	if cmd.Flags().Changed("topic") {
		// On stderr: stdout carries the results.
		fmt.Fprintf(cmd.ErrOrStderr(), "tierlog: --topic is deprecated: give the topic as an argument: %s TOPIC\n", cmd.CommandPath())
	}
	if len(args) == 1 {
		if cmd.Flags().Changed("topic") && topic != args[0] {
			return "", usageErrorf("topic %q and --topic %q disagree: give the topic once, as an argument", args[0], topic)
		}
		topic = args[0]
	}
	return topic, nil
}

type benchProduceFlags struct {
	topic      string
	partitions int32
	configs    []string
	records    int
	size       int
	batch      int
	producers  int
	codec      string
}

func newBenchProduceCmd() *cobra.Command {
	var bf benchProduceFlags
	cmd := &cobra.Command{
		Use:   "produce [TOPIC]",
		Short: "Produce generated records and report records/s, MB/s and produce-call latency",
		Long: `Produce --records records of --record-size bytes to TOPIC (default
` + defaultBenchTopic + `), --batch records per Produce call, from --producers
concurrent producers, and report throughput and the latency of Produce calls
(p50, p99, p99.9, max). The topic is created with --partitions and --config
if it does not exist; each producer writes to its own partition (producer i
to partition i mod partitions).`,
		Args: maxArgs("TOPIC"),
	}
	cf := addClientFlags(cmd)
	f := cmd.Flags()
	addBenchTopicFlag(cmd, &bf.topic)
	f.Int32Var(&bf.partitions, "partitions", 1, "partitions when the topic is created")
	f.StringArrayVar(&bf.configs, "config", nil, "topic config key=value when the topic is created (e.g. flush.policy=always)")
	f.IntVar(&bf.records, "records", 200_000, "records to produce in total")
	f.Var(bytesize.NewValue(&bf.size, 1024), "record-size", "value bytes per record, e.g. 1KiB")
	f.IntVar(&bf.batch, "batch", 16, "records per Produce call (one batch)")
	f.IntVar(&bf.producers, "producers", 1, "concurrent producers")
	f.StringVar(&bf.codec, "compression", "none", "none, gzip, snappy, lz4 or zstd")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		var err error
		if bf.topic, err = benchTopic(cmd, args); err != nil {
			return err
		}
		return benchProduce(cmd, cf, &bf)
	})
	return cmd
}

func benchProduce(cmd *cobra.Command, cf *clientFlags, bf *benchProduceFlags) error {
	if bf.records <= 0 || bf.size < 0 || bf.batch <= 0 || bf.producers <= 0 {
		return usageErrorf("--records, --batch and --producers must be positive, --record-size not negative")
	}
	client, closeConn, err := cf.dial()
	if err != nil {
		return err
	}
	defer closeConn()
	ctx := cmd.Context()
	kv, err := parseKeyValues("--config", bf.configs)
	if err != nil {
		return err
	}
	_, err = client.CreateTopic(ctx, &tierlogv1.CreateTopicRequest{Name: bf.topic, Partitions: bf.partitions, Config: kv})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return cf.rpcError("create topic "+bf.topic, err)
	}
	desc, err := client.DescribeTopic(ctx, &tierlogv1.DescribeTopicRequest{Name: bf.topic})
	if err != nil {
		return cf.rpcError("describe topic "+bf.topic, err)
	}
	parts := int32(len(desc.GetTopic().GetPartitions()))

	value := make([]byte, bf.size)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	calls := (bf.records + bf.batch - 1) / bf.batch
	var next atomic.Int64
	lat := make([][]time.Duration, bf.producers)
	durability := map[tierlogv1.Durability]int{}
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for p := range bf.producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs := make([]*tierlogv1.Record, bf.batch)
			for i := range recs {
				recs[i] = &tierlogv1.Record{Value: value}
			}
			req := &tierlogv1.ProduceRequest{Topic: bf.topic, Partition: proto.Int32(int32(p) % parts), Records: recs, Compression: bf.codec}
			for next.Add(1) <= int64(calls) {
				t0 := time.Now()
				resp, err := client.Produce(ctx, req)
				lat[p] = append(lat[p], time.Since(t0))
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = cf.rpcError("produce", err)
				}
				if err == nil {
					durability[resp.GetDurability()]++
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return firstErr
	}
	all := slices.Concat(lat...)
	n := calls * bf.batch
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "produced %d records of %d B in %d calls of %d from %d producers to %s (%d partitions) in %v\n",
		n, bf.size, calls, bf.batch, bf.producers, bf.topic, parts, elapsed.Round(time.Millisecond))
	fmt.Fprintf(out, "throughput: %.0f records/s, %.1f MB/s of values\n", float64(n)/elapsed.Seconds(), float64(n*bf.size)/elapsed.Seconds()/1e6)
	printLatency(out, "produce call latency", all)
	for d, c := range durability {
		fmt.Fprintf(out, "durability: %s x %d\n", d, c)
	}
	return nil
}

// printLatency prints percentiles of ds.
func printLatency(out io.Writer, what string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	q := func(p float64) time.Duration { return ds[min(len(ds)-1, int(p*float64(len(ds))))] }
	fmt.Fprintf(out, "%s: p50 %v  p99 %v  p99.9 %v  max %v\n", what,
		q(0.50).Round(time.Microsecond), q(0.99).Round(time.Microsecond), q(0.999).Round(time.Microsecond), ds[len(ds)-1].Round(time.Microsecond))
}

func newBenchConsumeCmd() *cobra.Command {
	var topic string
	var maxBytes int32
	cmd := &cobra.Command{
		Use:   "consume [TOPIC]",
		Short: "Read a whole topic from the beginning and report records/s and MB/s",
		Long: `Stream every partition of TOPIC (default ` + defaultBenchTopic + `) from the beginning to the current end
(one FetchStream per partition, all at once) and report throughput.`,
		Args: maxArgs("TOPIC"),
	}
	cf := addClientFlags(cmd)
	addBenchTopicFlag(cmd, &topic)
	cmd.Flags().Var(bytesize.NewValue(&maxBytes, 1<<20), "max-bytes", "bytes per streamed response, e.g. 1MiB")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		var err error
		if topic, err = benchTopic(cmd, args); err != nil {
			return err
		}
		client, closeConn, err := cf.dial()
		if err != nil {
			return err
		}
		defer closeConn()
		ctx, cancel := context.WithCancel(cmd.Context())
		defer cancel()
		desc, err := client.DescribeTopic(ctx, &tierlogv1.DescribeTopicRequest{Name: topic})
		if err != nil {
			return cf.rpcError("describe topic "+topic, err)
		}
		var records, bytes atomic.Int64
		errs := make(chan error, len(desc.GetTopic().GetPartitions()))
		start := time.Now()
		for _, p := range desc.GetTopic().GetPartitions() {
			go func() {
				st, err := client.FetchStream(ctx, &tierlogv1.FetchStreamRequest{Fetch: &tierlogv1.FetchRequest{
					Topic: topic, Partition: p.GetPartition(), Start: &tierlogv1.FetchRequest_Earliest{Earliest: true}, MaxBytes: maxBytes,
				}})
				for err == nil {
					var resp *tierlogv1.FetchResponse
					if resp, err = st.Recv(); err == nil {
						for _, r := range resp.GetRecords() {
							bytes.Add(int64(len(r.GetValue()) + len(r.GetKey())))
						}
						records.Add(int64(len(resp.GetRecords())))
					}
				}
				if err == io.EOF {
					err = nil
				}
				errs <- err
			}()
		}
		for range desc.GetTopic().GetPartitions() {
			if err := <-errs; err != nil {
				return cf.rpcError("fetch stream", err)
			}
		}
		elapsed := time.Since(start)
		fmt.Fprintf(cmd.OutOrStdout(), "consumed %d records (%.1f MB of keys and values) from %d partitions in %v: %.0f records/s, %.1f MB/s\n",
			records.Load(), float64(bytes.Load())/1e6, len(desc.GetTopic().GetPartitions()), elapsed.Round(time.Millisecond),
			float64(records.Load())/elapsed.Seconds(), float64(bytes.Load())/elapsed.Seconds()/1e6)
		return nil
	})
	return cmd
}
