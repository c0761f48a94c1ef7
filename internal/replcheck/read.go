package replcheck

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/batch"
)

// Record is one record of a replica's local log.
type Record struct {
	Offset     int64
	Key, Value []byte
	// Epoch is the partition leader epoch of the batch holding the record.
	Epoch int32
}

// storedBatch is one batch as the replica stores it, bytes included, so
// replicas can be compared byte for byte.
type storedBatch struct {
	base, next int64 // next: the offset after the batch's last offset
	epoch      int32
	bytes      []byte
}

// replica is one node's copy of one partition, read whole.
type replica struct {
	node       int32
	start, end int64 // the local log's [start, end)
	batches    []storedBatch
	records    []Record
	gaps       []Gap
}

// PartitionDir is where a node with data directory dataDir keeps a
// partition's log: DATA/topics/TOPIC/PARTITION (the broker's layout).
func PartitionDir(dataDir, topic string, partition int32) string {
	return filepath.Join(dataDir, "topics", topic, strconv.Itoa(int(partition)))
}

// Records reads every record of one replica's local log (from its local
// log start to its end), in offset order. The log is read from a copy (see
// the package doc); dir is not modified. A missing partition directory is
// an error wrapping fs.ErrNotExist.
func Records(dir string, topic string, partition int32) ([]Record, error) {
	r, err := readReplica(-1, dir, topic, partition)
	if err != nil {
		return nil, err
	}
	return r.records, nil
}

// readReplica copies the partition's log directory to a temporary one,
// opens the copy with hot.Open (which recovers a torn tail as a restart of
// the node would, and writes a recovery point, index files and an epoch
// checkpoint: hot has no read-only open, so the copy takes those writes)
// and reads it whole.
//
// node (-1: unknown) labels the replica and its errors.
func readReplica(node int32, dataDir, topic string, partition int32) (*replica, error) {
	src := PartitionDir(dataDir, topic, partition)
	who := "replcheck: "
	if node >= 0 {
		who = fmt.Sprintf("replcheck: node %d: ", node)
	}
	if _, err := os.Stat(src); err != nil {
		return nil, fmt.Errorf("%s%w", who, err)
	}
	tmp, err := os.MkdirTemp("", "replcheck-*")
	if err != nil {
		return nil, fmt.Errorf("replcheck: %w", err)
	}
	defer os.RemoveAll(tmp)
	dst := filepath.Join(tmp, "log")
	if err := copyDir(src, dst); err != nil {
		return nil, fmt.Errorf("%scopy %s: %w", who, src, err)
	}
	l, err := hot.Open(dst, hot.DefaultConfig(), hot.Options{Topic: topic, Partition: partition})
	if err != nil {
		return nil, fmt.Errorf("%sopen a copy of %s: %w", who, src, err)
	}
	r, err := readLog(node, l)
	if cerr := l.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("%sclose the copy of %s: %w", who, src, cerr)
	}
	if err != nil {
		return nil, fmt.Errorf("%s%s: %w", who, src, err)
	}
	return r, nil
}

// readLog reads every batch of l, checking that offsets run without a hole
// from the log start to its end; a hole becomes a Gap.
func readLog(node int32, l *hot.Log) (*replica, error) {
	r := &replica{node: node, start: l.StartOffset(), end: l.EndOffset()}
	next := r.start // the offset the next record must have
	gap := func(from, to int64) { r.gaps = append(r.gaps, Gap{Node: node, From: from, To: to}) }
	for next < r.end {
		res, err := l.Read(next, 1<<20)
		if err != nil {
			return nil, fmt.Errorf("read at offset %d: %w", next, err)
		}
		if len(res.Records) == 0 {
			gap(next, r.end) // nothing readable below the end
			break
		}
		before := next
		for b := res.Records; len(b) > 0; {
			h, err := batch.Peek(b)
			if err != nil {
				return nil, fmt.Errorf("batch read at offset %d: %w", next, err)
			}
			raw := b[:h.Size()]
			b = b[h.Size():]
			if h.NextOffset() <= next {
				continue // before where this read asked to start
			}
			if h.BaseOffset < next {
				return nil, fmt.Errorf("batch at offset %d overlaps the one before it, which ends at %d", h.BaseOffset, next-1)
			}
			_, recs, err := batch.Decode(raw)
			if err != nil {
				return nil, fmt.Errorf("decode the batch at offset %d: %w", h.BaseOffset, err)
			}
			r.batches = append(r.batches, storedBatch{base: h.BaseOffset, next: h.NextOffset(), epoch: h.PartitionLeaderEpoch, bytes: raw})
			for _, rec := range recs {
				if rec.Offset < next {
					return nil, fmt.Errorf("batch at offset %d holds offset %d twice or out of order", h.BaseOffset, rec.Offset)
				}
				if rec.Offset > next {
					gap(next, rec.Offset)
				}
				r.records = append(r.records, Record{Offset: rec.Offset, Key: rec.Key, Value: rec.Value, Epoch: h.PartitionLeaderEpoch})
				next = rec.Offset + 1
			}
			if next < h.NextOffset() { // the last offset delta names offsets no record has
				gap(next, h.NextOffset())
				next = h.NextOffset()
			}
		}
		if next == before { // only batches below next: the log skips a range
			gap(next, r.end)
			break
		}
	}
	return r, nil
}

// copyDir copies the regular files of src (and its subdirectories) to dst.
func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		return copyFile(path, to)
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	return errors.Join(err, out.Close())
}
