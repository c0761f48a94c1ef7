package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	tierlogv1 "github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/bytesize"
	"github.com/tierlog/tierlog/internal/partitioner"
)

// Batching defaults. 512 KiB of records stays well under Kafka's default
// max.message.bytes (1 MiB), which bounds the batch one Produce call builds.
const (
	defaultBatchRecords = 1000
	defaultBatchBytes   = 512 << 10
	// batchOverhead is the RecordBatch v2 header plus slack for compression
	// framing that can make incompressible data slightly larger.
	batchOverhead = 1024
	// recordOverhead bounds the varints and attributes around one record's
	// key, value and headers in a RecordBatch v2.
	recordOverhead = 40
)

type produceFlags struct {
	key         string
	keySep      string
	partition   int32
	value       string
	compression string
	batch       int
	batchBytes  int
	headers     []string
	quiet       bool
}

func newProduceCmd() *cobra.Command {
	var pf produceFlags
	cmd := &cobra.Command{
		Use:   "produce TOPIC",
		Short: "Produce records: one per line of stdin, or --value",
		Long: `Produce records to TOPIC: one record per line of standard input (the line
without its trailing newline; empty lines are empty records), or one record
with --value. Prints "partition offset" for each record, in input order
(nothing with --quiet).

Lines that are available together are sent in one Produce call (one record
batch) of up to --batch records and --batch-bytes bytes, so piping a large
file is fast while typed lines are sent as soon as they are entered.

With --key-separator SEP (kcat's -K) each line is split at its first SEP:
the part before is the record's key, the part after its value. A line
without SEP is produced as kcat does: a null key and the whole line as the
value.

Without --partition the partition follows the key: murmur2 of the key
modulo the partition count, as Kafka's clients compute it (records of one
batch with different keys are sent to their own partitions); records with
a null key go round-robin per batch.`,
		Args: exactArgs("TOPIC"),
	}
	cf := addClientFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&pf.key, "key", "", "key of every record (default: null key)")
	f.StringVar(&pf.keySep, "key-separator", "", "split each input line at its first SEP into key and value (kcat's -K); a line without it gets a null key")
	f.Int32Var(&pf.partition, "partition", -1, "partition to produce to (default: chosen by the server)")
	f.StringVar(&pf.value, "value", "", "produce this one record instead of reading stdin")
	f.StringVar(&pf.compression, "compression", "none", "batch compression: none, gzip, snappy, lz4 or zstd")
	f.IntVar(&pf.batch, "batch", defaultBatchRecords, "at most this many records per Produce call")
	f.Var(bytesize.NewValue(&pf.batchBytes, defaultBatchBytes), "batch-bytes", "at most about this many bytes of records per Produce call (also capped by the topic's max.message.bytes)")
	f.StringArrayVar(&pf.headers, "header", nil, "record header as key=value added to every record; repeatable")
	f.BoolVarP(&pf.quiet, "quiet", "q", false, "print nothing on success (errors still go to stderr)")
	cmd.MarkFlagsMutuallyExclusive("key", "key-separator")
	cmd.MarkFlagsMutuallyExclusive("value", "key-separator")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		return produce(cmd, cf, &pf, args[0])
	})
	return cmd
}

func produce(cmd *cobra.Command, cf *clientFlags, pf *produceFlags, topic string) error {
	if _, err := batch.ParseCodec(pf.compression); err != nil {
		return usageErrorf("--compression %q: valid: none, gzip, snappy, lz4, zstd", pf.compression)
	}
	if pf.batch < 1 {
		return usageErrorf("--batch %d: want at least 1", pf.batch)
	}
	if pf.batchBytes < 1 {
		return usageErrorf("--batch-bytes %d: want at least 1", pf.batchBytes)
	}
	partitionSet := cmd.Flags().Changed("partition")
	if partitionSet && pf.partition < 0 {
		return usageErrorf("--partition %d: want 0 or more", pf.partition)
	}
	hdrs, err := parseHeaders(pf.headers)
	if err != nil {
		return err
	}
	var key []byte
	if cmd.Flags().Changed("key") {
		key = []byte(pf.key)
	}
	if cmd.Flags().Changed("key-separator") && pf.keySep == "" {
		return usageErrorf("--key-separator \"\": want at least one character, e.g. --key-separator :")
	}

	client, done, err := cf.dial()
	if err != nil {
		return err
	}
	defer done()
	ctx := cmd.Context()

	// Asking for the topic first fails fast on an unknown topic and learns
	// max.message.bytes, which bounds what one batch may hold.
	desc, err := client.DescribeTopic(ctx, &tierlogv1.DescribeTopicRequest{Name: topic})
	if err != nil {
		return cf.rpcError("produce to "+topic, err)
	}
	budget := pf.batchBytes
	if m, err := strconv.Atoi(desc.GetTopic().GetConfig()["max.message.bytes"]); err == nil && m-batchOverhead > 0 && m-batchOverhead < budget {
		budget = m - batchOverhead
	}

	p := &producer{
		client: client, topic: topic, compression: pf.compression,
		key: key, headers: hdrs, maxRecords: pf.batch, maxBytes: budget,
		out: bufio.NewWriterSize(cmd.OutOrStdout(), 64<<10), quiet: pf.quiet, cf: cf,
		partitions: int32(len(desc.GetTopic().GetPartitions())),
	}
	if pf.keySep != "" {
		p.keySep = []byte(pf.keySep)
	}
	if partitionSet {
		p.partition = &pf.partition
	}
	var runErr error
	if cmd.Flags().Changed("value") {
		runErr = p.send(ctx, [][]byte{[]byte(pf.value)})
	} else {
		runErr = p.sendLines(ctx, cmd.InOrStdin())
	}
	if runErr != nil {
		runErr = fmt.Errorf("produce to %s after %d records: %w", topic, p.produced, runErr)
	}
	return errors.Join(runErr, p.out.Flush())
}

type producer struct {
	client      tierlogv1.TierLogClient
	topic       string
	partition   *int32
	compression string
	key         []byte
	keySep      []byte // split each line into key and value; nil: no
	partitions  int32  // the topic's partition count, to place keyed records
	headers     []*tierlogv1.Header
	maxRecords  int
	maxBytes    int
	out         *bufio.Writer
	quiet       bool
	produced    int64
	cf          *clientFlags
}

func (p *producer) recordSize(value []byte) int {
	n := recordOverhead + len(p.key) + len(value)
	for _, h := range p.headers {
		n += len(h.Key) + len(h.Value) + 10
	}
	return n
}

// sendLines reads lines in a goroutine so that the next batch fills while a
// Produce call is in flight; a batch is sent as soon as no more lines are
// ready, so interactive input is not held back.
func (p *producer) sendLines(ctx context.Context, r io.Reader) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lines := make(chan []byte, 2*p.maxRecords)
	readErr := make(chan error, 1)
	go func() {
		defer close(lines)
		readErr <- readLines(ctx, r, lines)
	}()

	var pending []byte // a line that did not fit into the previous batch
	havePending := false
	for {
		var values [][]byte
		size := 0
		if havePending {
			values, size, havePending = append(values, pending), p.recordSize(pending), false
		} else {
			line, ok := <-lines
			if !ok {
				break
			}
			values, size = append(values, line), p.recordSize(line)
		}
	fill:
		for len(values) < p.maxRecords {
			select {
			case line, ok := <-lines:
				if !ok {
					break fill
				}
				s := p.recordSize(line)
				if size+s > p.maxBytes {
					pending, havePending = line, true
					break fill
				}
				values, size = append(values, line), size+s
			default:
				break fill
			}
		}
		if err := p.send(ctx, values); err != nil {
			return err
		}
	}
	if err := <-readErr; err != nil {
		return fmt.Errorf("read stdin: %w", err)
	}
	return nil
}

// readLines sends each line of r, without its "\n", to lines.
func readLines(ctx context.Context, r io.Reader, lines chan<- []byte) error {
	br := bufio.NewReaderSize(r, 256<<10)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			line = bytes.TrimSuffix(line, []byte{'\n'})
			select {
			case lines <- line:
			case <-ctx.Done():
				return nil
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// send produces values as records, in one Produce call per partition they
// go to, and prints where each landed, in input order.
func (p *producer) send(ctx context.Context, values [][]byte) error {
	recs := make([]*tierlogv1.Record, len(values))
	for i, v := range values {
		key := p.key
		if p.keySep != nil {
			key, v = splitKey(v, p.keySep)
		}
		if v == nil {
			v = []byte{} // an empty line is an empty value, not a null one
		}
		recs[i] = &tierlogv1.Record{Key: key, Value: v, Headers: p.headers}
	}
	type landed struct {
		partition int32
		offset    int64
		ok        bool
	}
	where := make([]landed, len(recs))
	var sendErr error
	for _, g := range p.group(recs) {
		batch := make([]*tierlogv1.Record, len(g.idx))
		for j, i := range g.idx {
			batch[j] = recs[i]
		}
		resp, err := p.client.Produce(ctx, &tierlogv1.ProduceRequest{
			Topic: p.topic, Partition: g.partition, Records: batch, Compression: p.compression,
		})
		if err != nil {
			sendErr = p.cf.statusError(err)
			break
		}
		p.produced += int64(len(batch))
		for j, i := range g.idx {
			where[i] = landed{resp.GetPartition(), resp.GetBaseOffset() + int64(j), true}
		}
	}
	if p.quiet {
		return sendErr
	}
	// What was stored is printed even when a later group failed.
	var buf []byte
	for _, w := range where {
		if !w.ok {
			continue
		}
		buf = strconv.AppendInt(buf[:0], int64(w.partition), 10)
		buf = append(buf, ' ')
		buf = strconv.AppendInt(buf, w.offset, 10)
		buf = append(buf, '\n')
		if _, err := p.out.Write(buf); err != nil {
			return errors.Join(sendErr, fmt.Errorf("write output: %w", err))
		}
	}
	if err := p.out.Flush(); err != nil {
		return errors.Join(sendErr, fmt.Errorf("write output: %w", err))
	}
	return sendErr
}

// sendGroup is the records of one Produce call: indexes into the batch,
// and the partition (nil: the server picks).
type sendGroup struct {
	partition *int32
	idx       []int
}

// group splits records by the partition they must go to. One Produce call
// goes to one partition, which the server picks from the first record's
// key; records with per-line keys are therefore placed here, with the
// same murmur2 rule, so every record of a key lands in the key's
// partition. Input order is kept within each group.
func (p *producer) group(recs []*tierlogv1.Record) []sendGroup {
	all := make([]int, len(recs))
	for i := range all {
		all[i] = i
	}
	if p.keySep == nil || p.partition != nil || p.partitions < 1 {
		return []sendGroup{{partition: p.partition, idx: all}}
	}
	const serverPicks = -1 // null keys: round-robin on the server
	var order []int32
	byPart := map[int32][]int{}
	for i, r := range recs {
		part := int32(serverPicks)
		if r.Key != nil {
			part = partitioner.ForKey(r.Key, p.partitions)
		}
		if _, seen := byPart[part]; !seen {
			order = append(order, part)
		}
		byPart[part] = append(byPart[part], i)
	}
	groups := make([]sendGroup, 0, len(order))
	for _, part := range order {
		g := sendGroup{idx: byPart[part]}
		if part != serverPicks {
			g.partition = &part
		}
		groups = append(groups, g)
	}
	return groups
}

// splitKey splits line at its first sep into key and value; without sep
// the key is null and the value is the whole line (kcat's -K).
func splitKey(line, sep []byte) (key, value []byte) {
	k, v, ok := bytes.Cut(line, sep)
	if !ok {
		return nil, line
	}
	if k == nil {
		k = []byte{}
	}
	return k, v
}

func parseHeaders(kvs []string) ([]*tierlogv1.Header, error) {
	var hs []*tierlogv1.Header
	for _, kv := range kvs {
		k, v, ok := bytes.Cut([]byte(kv), []byte{'='})
		if !ok || len(k) == 0 {
			return nil, usageErrorf("--header %q: want key=value", kv)
		}
		hs = append(hs, &tierlogv1.Header{Key: string(k), Value: v})
	}
	return hs, nil
}
