package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	tierlogv1 "github.com/tierlog/tierlog/api/tierlogv1"
)

type consumeFlags struct {
	partition     int32
	fromBeginning bool
	offset        string
	since         string
	max           int64
	follow        bool
	format        string
}

func newConsumeCmd() *cobra.Command {
	var cfl consumeFlags
	cmd := &cobra.Command{
		Use:   "consume TOPIC",
		Short: "Print records of a topic",
		Long: `Print the records of TOPIC, partition by partition in partition order, each
partition in offset order. Without --partition every partition is read.

Where to start (at most one; default --from-beginning, or --offset end
with --follow, like tail -f):
  --from-beginning   the first record still held by each partition
  --offset N         offset N in each partition
  --offset end       the end of each partition: only records appended later
  --offset -N        the last N records of each partition (kcat's -o -N)
  --since TIME       the first record at or after TIME: a duration back from
                     now (30m, 1h, 7d), a date (2026-11-30, midnight local
                     time) or an RFC 3339 time (2026-11-30T12:00:00Z)

Without --follow the command stops at the end of the log as it was when each
partition was reached, so the same data prints the same bytes every time.
With --follow it keeps printing new records (from all partitions at once,
interleaved) until interrupted or --max records were printed.

Formats:
  text  the value of each record followed by a newline
  json  one object per line: {"partition","offset","timestamp" (RFC 3339,
        UTC, milliseconds),"key","value","headers":[{"key","value"}]};
        a null key or value is null, valid UTF-8 is a string, anything else
        (header keys included) appears base64-encoded as "key_base64" /
        "value_base64" instead.`,
		Args: exactArgs("TOPIC"),
	}
	cf := addClientFlags(cmd)
	f := cmd.Flags()
	f.Int32Var(&cfl.partition, "partition", -1, "read only this partition (default: all)")
	f.BoolVar(&cfl.fromBeginning, "from-beginning", false, "start at the first record of each partition (the default without --follow)")
	f.StringVar(&cfl.offset, "offset", "", "where to start in each partition: "+offsetValid)
	f.StringVar(&cfl.since, "since", "", "start at the first record at or after this time: 1h, 7d, 2026-11-30 or an RFC 3339 time")
	f.Int64Var(&cfl.max, "max", 0, "stop after this many records in total (0: no limit)")
	f.BoolVarP(&cfl.follow, "follow", "f", false, "keep printing new records until interrupted")
	f.StringVar(&cfl.format, "format", "text", "output format: text or json")
	cmd.MarkFlagsMutuallyExclusive("from-beginning", "offset", "since")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		return consume(cmd, cf, &cfl, args[0])
	})
	return cmd
}

func consume(cmd *cobra.Command, cf *clientFlags, cfl *consumeFlags, topic string) error {
	if cfl.format != "text" && cfl.format != "json" {
		return usageErrorf("--format %q: valid: text, json", cfl.format)
	}
	if cfl.max < 0 {
		return usageErrorf("--max %d: want 0 (no limit) or more", cfl.max)
	}
	fetch := &tierlogv1.FetchRequest{Topic: topic, Start: &tierlogv1.FetchRequest_Earliest{Earliest: true}}
	if cfl.follow {
		// Following with no start given is tail -f: new records only.
		fetch.Start = &tierlogv1.FetchRequest_Latest{Latest: true}
	}
	var lastN int64 = -1 // the last N records of each partition; -1: not asked
	switch {
	case cmd.Flags().Changed("from-beginning"):
		fetch.Start = &tierlogv1.FetchRequest_Earliest{Earliest: true}
	case cmd.Flags().Changed("offset"):
		pos, err := parseOffset(cfl.offset)
		if err != nil {
			return usageErrorf("%v", err)
		}
		switch pos.kind {
		case startEarliest:
			fetch.Start = &tierlogv1.FetchRequest_Earliest{Earliest: true}
		case startLatest:
			fetch.Start = &tierlogv1.FetchRequest_Latest{Latest: true}
		case startOffset:
			fetch.Start = &tierlogv1.FetchRequest_Offset{Offset: pos.n}
		case startLastN:
			lastN = pos.n
		}
	case cmd.Flags().Changed("since"):
		t, err := parseSince(cfl.since, time.Now(), time.Local)
		if err != nil {
			return usageErrorf("%v", err)
		}
		fetch.Start = &tierlogv1.FetchRequest_TimestampMs{TimestampMs: max(t.UnixMilli(), 0)}
	}
	partitionSet := cmd.Flags().Changed("partition")
	if partitionSet && cfl.partition < 0 {
		return usageErrorf("--partition %d: want 0 or more", cfl.partition)
	}

	ctx := cmd.Context()
	if cfl.follow {
		// Interrupting a follow is its normal end: stop cleanly, exit 0.
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
	}
	client, done, err := cf.dial()
	if err != nil {
		return err
	}
	defer done()

	partitions := []int32{cfl.partition}
	if !partitionSet {
		desc, err := client.DescribeTopic(ctx, &tierlogv1.DescribeTopicRequest{Name: topic})
		if err != nil {
			return cf.rpcError("consume "+topic, err)
		}
		partitions = partitions[:0]
		for _, p := range desc.GetTopic().GetPartitions() {
			partitions = append(partitions, p.GetPartition())
		}
		slices.Sort(partitions)
	}

	c := &consumer{client: client, fetch: fetch, follow: cfl.follow,
		out: newPrinter(cmd.OutOrStdout(), cfl.format == "json", cfl.max)}
	if lastN >= 0 {
		if c.offsets, err = lastOffsets(ctx, client, topic, lastN); err != nil {
			return cf.rpcError("consume "+topic, err)
		}
	}
	if cfl.follow && len(partitions) > 1 {
		err = c.followAll(ctx, partitions)
	} else {
		err = c.readInOrder(ctx, partitions)
	}
	if cfl.follow && ctx.Err() != nil && isCanceled(err) {
		err = nil
	}
	if err != nil {
		err = cf.rpcError("consume "+topic, err)
	}
	return errors.Join(err, c.out.flush())
}

type consumer struct {
	client tierlogv1.TierLogClient
	fetch  *tierlogv1.FetchRequest // topic and start; partition set per stream
	// offsets, when set, is the start offset of each partition (--offset -N),
	// in place of fetch's start.
	offsets map[int32]int64
	follow  bool
	out     *printer
	mu      sync.Mutex // serializes out between followAll's streams
}

// readInOrder reads the partitions one after another.
func (c *consumer) readInOrder(ctx context.Context, partitions []int32) error {
	for _, p := range partitions {
		full, err := c.stream(ctx, p, c.write)
		if err != nil || full {
			return err
		}
	}
	return nil
}

// followAll follows every partition at once, printing responses as they
// arrive, until ctx is done, a stream fails or --max is reached.
func (c *consumer) followAll(ctx context.Context, partitions []int32) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for _, p := range partitions {
		wg.Go(func() {
			full, err := c.stream(ctx, p, func(resp *tierlogv1.FetchResponse) (bool, error) {
				c.mu.Lock()
				defer c.mu.Unlock()
				return c.write(resp)
			})
			if full || (err != nil && ctx.Err() == nil) {
				errOnce.Do(func() { firstErr = err })
				cancel()
			}
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		// Stopped by the caller's context (interrupt) or by --max.
		if parent := context.Cause(ctx); !errors.Is(parent, context.Canceled) {
			return parent
		}
	}
	return firstErr
}

func (c *consumer) write(resp *tierlogv1.FetchResponse) (bool, error) {
	return c.out.write(resp.GetPartition(), resp.GetRecords())
}

// stream reads one partition, passing each response to emit until the
// stream ends (at the log end without follow), emit reports the limit
// reached (full), or an error.
func (c *consumer) stream(ctx context.Context, partition int32, emit func(*tierlogv1.FetchResponse) (bool, error)) (full bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fetch := cloneFetch(c.fetch, partition)
	if off, ok := c.offsets[partition]; ok {
		fetch.Start = &tierlogv1.FetchRequest_Offset{Offset: off}
	}
	req := &tierlogv1.FetchStreamRequest{Fetch: fetch, Follow: c.follow, Limit: c.out.remaining()}
	s, err := c.client.FetchStream(ctx, req)
	if err != nil {
		return false, err
	}
	for {
		resp, err := s.Recv()
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		full, err := emit(resp)
		if err != nil || full {
			return full, err
		}
	}
}

// lastOffsets is, for each partition, the offset n records before its end,
// or its start offset if it holds fewer. Offsets are dense, so the records
// from there to the end are the last n.
func lastOffsets(ctx context.Context, client tierlogv1.TierLogClient, topic string, n int64) (map[int32]int64, error) {
	resp, err := client.ListOffsets(ctx, &tierlogv1.ListOffsetsRequest{Topic: topic,
		Spec: &tierlogv1.ListOffsetsRequest_Latest{Latest: true}})
	if err != nil {
		return nil, err
	}
	offs := make(map[int32]int64, len(resp.GetPartitions()))
	for _, po := range resp.GetPartitions() {
		offs[po.GetPartition()] = max(po.GetLogEndOffset()-n, po.GetLogStartOffset())
	}
	return offs, nil
}

func cloneFetch(f *tierlogv1.FetchRequest, partition int32) *tierlogv1.FetchRequest {
	return &tierlogv1.FetchRequest{Topic: f.GetTopic(), Partition: partition, Start: f.GetStart(),
		MaxBytes: f.GetMaxBytes(), MaxRecords: f.GetMaxRecords()}
}

// printer writes records in the chosen format and counts them against --max.
type printer struct {
	w     *bufio.Writer
	json  bool
	max   int64
	count int64
	buf   []byte
}

func newPrinter(w io.Writer, json bool, max int64) *printer {
	return &printer{w: bufio.NewWriterSize(w, 256<<10), json: json, max: max}
}

// remaining is the stream limit for the next partition: 0 means no limit.
func (p *printer) remaining() int64 {
	if p.max == 0 {
		return 0
	}
	return p.max - p.count
}

// write prints records and flushes, so a follower sees each response as it
// arrives. It reports whether --max was reached.
func (p *printer) write(partition int32, recs []*tierlogv1.Record) (bool, error) {
	for _, r := range recs {
		if p.full() {
			break
		}
		if err := p.add(partition, r); err != nil {
			return false, err
		}
	}
	if err := p.flush(); err != nil {
		return false, err
	}
	return p.full(), nil
}

// add writes one record to the buffer, without flushing it. Callers check
// full first.
func (p *printer) add(partition int32, r *tierlogv1.Record) error {
	if p.json {
		p.buf = appendJSONRecord(p.buf[:0], partition, r)
	} else {
		p.buf = append(append(p.buf[:0], r.GetValue()...), '\n')
	}
	if _, err := p.w.Write(p.buf); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	p.count++
	return nil
}

// full reports whether --max records were printed.
func (p *printer) full() bool { return p.max > 0 && p.count >= p.max }

func (p *printer) flush() error {
	if err := p.w.Flush(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}
