package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tierlog/tierlog/tiering"
)

// ErrNotTiered: the topic does not tier (remote.storage.enable=false) or the
// node runs without a bucket, so nothing can be uploaded.
var ErrNotTiered = tiering.ErrNotTiered

// PartitionUpload is the outcome of an upload-now of one partition.
type PartitionUpload struct {
	Topic     string
	Partition int32
	// Target is the log end offset when the upload was asked for: every
	// offset below it is to be in the bucket.
	Target int64
	// Before and After are the offset after the last segment the bucket's
	// manifest named as committed, before the roll and at the end.
	Before, After int64
	// Err is nil when the bucket holds every offset below Target; else it
	// says why not (the wait ended first: the bucket is slow or down).
	Err error
}

// UploadNow rolls the active segment of one partition of a topic (or of
// every partition, with partition < 0) and uploads every sealed segment not
// yet in the bucket, returning once the bucket's manifest names them all or
// ctx ends; a partition cut short by ctx reports it in its Err. Local
// retention then runs on the partitions, so local copies it no longer
// keeps go at once rather than at the next background pass.
func (b *Broker) UploadNow(ctx context.Context, name string, partition int32) ([]PartitionUpload, error) {
	if b.daemon == nil {
		return nil, fmt.Errorf("broker: upload %s: %w: the node runs without a bucket (--bucket none)", name, ErrNotTiered)
	}
	t, err := b.topic(name)
	if err != nil {
		return nil, err
	}
	var parts []uploading
	all := t.partitions()
	for n, p := range all {
		if partition < 0 || int32(n) == partition {
			parts = append(parts, uploading{p: p, up: PartitionUpload{Topic: name, Partition: int32(n)}})
		}
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("%w: topic %s has partitions 0 to %d, not %d", ErrInvalidPartition, name, len(all)-1, partition)
	}
	for i := range parts {
		if err := parts[i].start(); err != nil {
			return nil, err
		}
	}
	ups := waitUploads(ctx, parts)
	b.daemon.CheckDisk()
	return ups, nil
}

// UploadAll is UploadNow for every tiered partition of every topic: what a
// graceful shutdown runs, after the RPCs have drained and before Close, so
// a node that then loses its data directory restores every record from
// the bucket. A bucket that is down cannot hold it past ctx: the
// partitions left report it in their Err.
func (b *Broker) UploadAll(ctx context.Context) []PartitionUpload {
	if b.daemon == nil {
		return nil
	}
	b.mu.RLock()
	var parts []uploading
	for _, t := range b.topics {
		for n, p := range t.partitions() {
			parts = append(parts, uploading{p: p, up: PartitionUpload{Topic: t.name, Partition: int32(n)}})
		}
	}
	b.mu.RUnlock()
	tiered := parts[:0]
	for _, u := range parts {
		if err := u.start(); !errors.Is(err, ErrNotTiered) {
			tiered = append(tiered, u)
		}
	}
	return waitUploads(ctx, tiered)
}

// uploading is one partition's upload-now in progress.
type uploading struct {
	p  *tiering.Partition
	up PartitionUpload
}

// start rolls the partition and asks for its upload. ErrNotTiered is
// returned; any other failure (a failed log) is kept in up.Err.
func (u *uploading) start() error {
	u.up.Before = u.p.UploadedEnd()
	u.up.Target, u.up.Err = u.p.UploadNow()
	if errors.Is(u.up.Err, ErrNotTiered) {
		return u.up.Err
	}
	return nil
}

// waitUploads waits for every started upload in turn (they run together in
// the daemon), filling in After and Err, and applies local retention to
// the partitions that are done.
func waitUploads(ctx context.Context, parts []uploading) []PartitionUpload {
	out := make([]PartitionUpload, len(parts))
	for i, u := range parts {
		if u.up.Err == nil {
			if u.up.Err = u.p.WaitUploaded(ctx, u.up.Target); u.up.Err == nil {
				u.p.Log().ApplyRetention(time.Now())
			}
		}
		u.up.After = u.p.UploadedEnd()
		out[i] = u.up
	}
	return out
}
