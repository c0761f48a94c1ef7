package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"time"

	"github.com/spf13/cobra"

	"github.com/tierlog/tierlog/api/grpcapi"
	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/bucketurl"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/tiering"
)

func newBucketCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bucket",
		Short: "Read a bucket's history with no server",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	cmd.AddCommand(newBucketConsumeCmd())
	return cmd
}

type bucketConsumeFlags struct {
	bucket           string
	partition        int32
	from, to         int64
	fromTime, toTime string
	max              int64
	format           string
}

func newBucketConsumeCmd() *cobra.Command {
	var fl bucketConsumeFlags
	cmd := &cobra.Command{
		Use:   "consume --bucket URL TOPIC",
		Short: "Print a topic's records straight from the bucket, with no server",
		Long: `Print the records of TOPIC that the bucket holds, read with no server: for an
auditor, or a new system replaying the history a node or cluster kept. It
reads each partition's newest manifest (a cluster's shared prefix or a single
node's) and the segments it commits, through the same cold reader (cache,
prefetch, checksums) tierlog serve uses. Records not yet tiered are not in
the bucket and not printed. Nothing is ever written to the bucket.

Partitions print one after another in partition order, each in offset order;
without --partition every partition is read. --from/--to and the times apply
to each partition:
  --from N        start at offset N (default: where the archive starts)
  --from-time T   start at the first batch with a record at or after T
  --to N          stop after offset N (inclusive)
  --to-time T     stop before the first batch with a record after T
A time is an RFC 3339 time (2026-11-30T12:00:00Z), a date (2026-11-30,
local midnight) or a duration back from now (30m, 7d).

The URL is a bucket as 'tierlog serve --bucket' takes it (file://, s3://,
minio://), credentials from the same environment variables. Formats are
those of 'tierlog consume'.

Exit codes: 0 success, 1 the bucket cannot be read, the topic is not in it,
or --from lies below the start of the archive; 2 usage error.`,
		Args: exactArgs("TOPIC"),
	}
	f := cmd.Flags()
	f.StringVar(&fl.bucket, "bucket", "", "the bucket URL (file:///PATH, s3://BUCKET/PREFIX?..., minio://HOST:PORT/BUCKET/PREFIX)")
	f.Int32Var(&fl.partition, "partition", -1, "read only this partition (default: all)")
	f.Int64Var(&fl.from, "from", -1, "start at this offset in each partition (default: the start of the archive)")
	f.StringVar(&fl.fromTime, "from-time", "", "start at the first batch with a record at or after this time")
	f.Int64Var(&fl.to, "to", -1, "stop after this offset in each partition, inclusive (default: the end of the archive)")
	f.StringVar(&fl.toTime, "to-time", "", "stop before the first batch with a record after this time")
	f.Int64Var(&fl.max, "max", 0, "stop after this many records in total (0: no limit)")
	f.StringVar(&fl.format, "format", "text", "output format: text or json")
	cmd.MarkFlagsMutuallyExclusive("from", "from-time")
	cmd.MarkFlagsMutuallyExclusive("to", "to-time")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		return bucketConsume(cmd, &fl, args[0])
	})
	return cmd
}

// replayRange is what to print of each partition: offsets [from, to), or
// the times to turn into offsets per partition.
type replayRange struct {
	from, to         int64 // -1: not given
	fromTime, toTime int64 // Unix ms; -1: not given
}

func (fl *bucketConsumeFlags) check(cmd *cobra.Command) (replayRange, error) {
	rr := replayRange{from: -1, to: -1, fromTime: -1, toTime: -1}
	switch {
	case fl.bucket == "":
		return rr, usageErrorf("--bucket is required: the bucket URL, as 'tierlog serve --bucket' takes it")
	case fl.format != "text" && fl.format != "json":
		return rr, usageErrorf("--format %q: valid: text, json", fl.format)
	case fl.max < 0:
		return rr, usageErrorf("--max %d: want 0 (no limit) or more", fl.max)
	case cmd.Flags().Changed("partition") && fl.partition < 0:
		return rr, usageErrorf("--partition %d: want 0 or more", fl.partition)
	case cmd.Flags().Changed("from") && fl.from < 0:
		return rr, usageErrorf("--from %d: want an offset, 0 or more", fl.from)
	case cmd.Flags().Changed("to") && fl.to < 0:
		return rr, usageErrorf("--to %d: want an offset, 0 or more", fl.to)
	case fl.to >= 0 && fl.from > fl.to:
		return rr, usageErrorf("--from %d is after --to %d", fl.from, fl.to)
	}
	rr.from = fl.from
	if fl.to >= 0 {
		rr.to = min(fl.to, math.MaxInt64-1) + 1
	}
	now := time.Now()
	for _, t := range []struct {
		flag, v string
		ms      *int64
	}{{"from-time", fl.fromTime, &rr.fromTime}, {"to-time", fl.toTime, &rr.toTime}} {
		if !cmd.Flags().Changed(t.flag) {
			continue
		}
		at, err := parseSince(t.v, now, time.Local)
		if err != nil {
			return rr, usageErrorf("--%s %q: want %s", t.flag, t.v, sinceValid)
		}
		*t.ms = max(at.UnixMilli(), 0)
	}
	if rr.fromTime >= 0 && rr.toTime >= 0 && rr.fromTime > rr.toTime {
		return rr, usageErrorf("--from-time %s is after --to-time %s", fl.fromTime, fl.toTime)
	}
	return rr, nil
}

func bucketConsume(cmd *cobra.Command, fl *bucketConsumeFlags, topic string) error {
	rr, err := fl.check(cmd)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	archive, b, closeArchive, err := openArchive(cmd, fl.bucket)
	if err != nil {
		return err
	}
	defer closeArchive()

	partitions, err := archivePartitions(ctx, archive, b, topic, fl.partition)
	if err != nil {
		return err
	}
	// Every partition's manifest and range is checked before the first
	// record prints: a bad --from fails the command, not its last part.
	type plan struct {
		ap       *tiering.ArchivedPartition
		from, to int64
	}
	plans := make([]plan, 0, len(partitions))
	for _, p := range partitions {
		ap, err := archive.Partition(ctx, topic, p)
		if err != nil {
			return err
		}
		from, to, err := rr.offsets(ctx, ap)
		if err != nil {
			return err
		}
		plans = append(plans, plan{ap, from, to})
	}
	out := newPrinter(cmd.OutOrStdout(), fl.format == "json", fl.max)
	for _, pl := range plans {
		if err := replay(ctx, pl.ap, pl.from, pl.to, out); err != nil {
			return errors.Join(err, out.flush())
		}
		if out.full() {
			break
		}
	}
	return out.flush()
}

// openArchive opens the bucket at url read-only and the history in it,
// read through the cold reader serve uses; closeArchive releases both.
// The reader's own log lines (retries, corrupt chunks) go to stderr.
func openArchive(cmd *cobra.Command, url string) (a *tiering.Archive, b cold.Bucket, closeArchive func(), err error) {
	b, err = bucketurl.OpenReadOnly(cmd.Context(), url, cold.Options{})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("open bucket: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	cache, err := cold.NewChunkCache(cold.ChunkCacheOptions{MaxBytes: 256 << 20})
	if err != nil {
		b.Close()
		return nil, nil, nil, err
	}
	reader, err := cold.NewReader(b, cache, cold.ReaderOptions{Logger: logger})
	if err != nil {
		cache.Close()
		b.Close()
		return nil, nil, nil, err
	}
	return tiering.NewArchive(b, reader), b, func() {
		reader.Close()
		cache.Close()
		b.Close()
	}, nil
}

// archivePartitions returns the partitions of topic that the bucket's topic
// record names: every one, or only partition (>= 0) once it is one of them.
func archivePartitions(ctx context.Context, a *tiering.Archive, b cold.Bucket, topic string, partition int32) ([]int32, error) {
	meta, err := a.Topic(ctx, topic)
	if err != nil {
		return nil, err
	}
	if partition >= 0 {
		if partition >= meta.Partitions {
			return nil, fmt.Errorf("topic %s has %d partitions (0 to %d) in %s, not %d", topic, meta.Partitions, meta.Partitions-1, b.Name(), partition)
		}
		return []int32{partition}, nil
	}
	all := make([]int32, 0, meta.Partitions)
	for p := range meta.Partitions {
		all = append(all, p)
	}
	return all, nil
}

// offsets turns the range into offsets [from, to) of ap, failing for a
// start below the archive's: those records are not in the bucket.
func (rr replayRange) offsets(ctx context.Context, ap *tiering.ArchivedPartition) (from, to int64, err error) {
	from, to = ap.Start, ap.End
	if rr.from >= 0 {
		if rr.from < ap.Start {
			return 0, 0, fmt.Errorf("%s/%d: offset %d is below the start of the archive, which holds offsets %d to %d: earlier records were deleted by retention or never tiered",
				ap.Topic, ap.Partition, rr.from, ap.Start, ap.End-1)
		}
		from = rr.from
	}
	if rr.to >= 0 {
		to = min(to, rr.to)
	}
	if rr.fromTime >= 0 {
		if from, err = ap.OffsetForTime(ctx, rr.fromTime); err != nil {
			return 0, 0, err
		}
	}
	if rr.toTime >= 0 && rr.toTime < math.MaxInt64 {
		if to, err = ap.OffsetForTime(ctx, rr.toTime+1); err != nil {
			return 0, 0, err
		}
	}
	return from, to, nil
}

// replayBytes is how much one read asks of the cold reader: whole batches
// of one segment up to about this size.
const replayBytes = 1 << 20

// replay prints the records of ap at offsets [from, to) in offset order.
// Transaction markers (control batches) are not records and are skipped,
// as the server's fetch does.
func replay(ctx context.Context, ap *tiering.ArchivedPartition, from, to int64, out *printer) error {
	for off := from; off < to && !out.full(); {
		data, err := ap.Read(ctx, off, replayBytes)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		for buf := data; len(buf) > 0 && off < to && !out.full(); {
			bh, err := batch.Peek(buf)
			if err == nil && bh.Size() > len(buf) {
				err = batch.ErrShortBatch
			}
			if err != nil {
				return fmt.Errorf("%s/%d: batch at offset %d: %w", ap.Topic, ap.Partition, off, err)
			}
			whole := buf[:bh.Size()]
			buf = buf[bh.Size():]
			if bh.NextOffset() <= off {
				continue // wholly below the offset asked for
			}
			if !bh.Control() {
				var werr error
				_, err = batch.DecodeOptions{}.Each(whole, func(r batch.Record) bool {
					if r.Offset < off {
						return true
					}
					if r.Offset >= to || out.full() {
						return false
					}
					// Records of a compressed batch alias the decoder's
					// buffer: add copies them into the output at once.
					werr = out.add(ap.Partition, grpcapi.RecordProto(r))
					return werr == nil
				})
				if werr != nil {
					return werr
				}
				if err != nil {
					return fmt.Errorf("%s/%d: decode batch at offset %d: %w", ap.Topic, ap.Partition, bh.BaseOffset, err)
				}
			}
			off = bh.NextOffset()
		}
	}
	return nil
}
