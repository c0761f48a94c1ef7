package tiering

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// ErrLocalDiskFull is wrapped by *LocalDiskFullError: a produce was refused
// because local segments reached the local-disk ceiling. It is retriable:
// nothing is wrong with the request or the log, and producing resumes by
// itself once uploads catch up and local retention frees space.
var ErrLocalDiskFull = errors.New("local disk ceiling reached")

// LocalDiskFullError says which ceiling refused a produce, how full it is
// and how much of that waits for the bucket.
type LocalDiskFullError struct {
	Topic     string
	Partition int32
	// Setting names the ceiling: the server's local_disk_max_bytes (all
	// partitions of the node) or the topic's local.disk.max.bytes (this
	// partition).
	Setting string
	Used    int64 // bytes of local segments under that ceiling
	Limit   int64
	// Pending of Used are not yet uploaded: they stay on local disk until
	// the bucket has them, however long it is down.
	Pending int64
}

func (e *LocalDiskFullError) Error() string {
	return fmt.Sprintf("tiering: %s/%d: produce refused, retry later: local segments hold %d bytes, at the %s ceiling of %d; %d of them are not yet uploaded to the bucket; producing resumes by itself once uploads catch up and local retention frees space",
		e.Topic, e.Partition, e.Used, e.Setting, e.Limit, e.Pending)
}

func (e *LocalDiskFullError) Unwrap() error { return ErrLocalDiskFull }

// Settings that name the ceilings in LocalDiskFullError.
const (
	NodeDiskSetting      = "local_disk_max_bytes"
	PartitionDiskSetting = "local.disk.max.bytes"
)

// DiskStatus is the node's use of local disk against its ceiling.
type DiskStatus struct {
	Used    int64 // bytes of local segments, all partitions
	Pending int64 // of them, not yet uploaded
	Limit   int64 // local_disk_max_bytes; <= 0: none
	// Refusing counts partitions whose producers are refused now.
	Refusing int
}

// nodeDisk is the node's local segment bytes: measured by checkDisk every
// interval, and between measurements raised by every append, so the
// ceiling holds to within one batch per partition rather than one interval
// of producing.
type nodeDisk struct {
	limit         int64
	used, pending atomic.Int64
}

// DiskStatus reports the node's local disk use.
func (d *Daemon) DiskStatus() DiskStatus {
	d.mu.Lock()
	refusing := d.refusing
	d.mu.Unlock()
	return DiskStatus{Used: d.disk.used.Load(), Pending: d.disk.pending.Load(), Limit: d.disk.limit, Refusing: refusing}
}

// ceiling returns the error an append gets now, or nil. Only partitions in
// a daemon's care have ceilings: without a bucket nothing waits for an
// upload, and nothing measures the bytes.
func (p *Partition) ceiling() *LocalDiskFullError {
	nd := p.node.Load()
	if nd == nil {
		return nil
	}
	if u := nd.used.Load(); nd.limit > 0 && u >= nd.limit {
		return &LocalDiskFullError{Topic: p.topic, Partition: p.partition, Setting: NodeDiskSetting, Used: u, Limit: nd.limit, Pending: nd.pending.Load()}
	}
	if u, limit := p.localUsed.Load(), p.localMax.Load(); limit > 0 && u >= limit {
		return &LocalDiskFullError{Topic: p.topic, Partition: p.partition, Setting: PartitionDiskSetting, Used: u, Limit: limit, Pending: p.localPending.Load()}
	}
	return nil
}

// appended counts an appended batch against the ceilings until the next
// measurement.
func (p *Partition) appended(n int64) {
	nd := p.node.Load()
	if nd == nil {
		return
	}
	p.localUsed.Add(n)
	nd.used.Add(n)
	if p.remoteOn.Load() {
		p.localPending.Add(n)
		nd.pending.Add(n)
	}
}

// checkDisk measures local segment bytes of every partition and of the
// node (the appends' running counts then start again from the truth:
// retention and uploads only ever lower them), and logs partitions that
// start or stop refusing produce.
func (d *Daemon) checkDisk() {
	d.checkMu.Lock() // the watcher's and CheckDisk's measurements, one at a time
	defer d.checkMu.Unlock()
	var used, pending int64
	parts := d.partitions()
	for _, p := range parts {
		u, pend := p.log.LocalBytes(p.uploaded.Load())
		if !p.remoteOn.Load() {
			pend = 0
		}
		p.localUsed.Store(u)
		p.localPending.Store(pend)
		used += u
		pending += pend
	}
	d.disk.used.Store(used)
	d.disk.pending.Store(pending)
	if freed := d.freeUploaded(parts); freed > 0 {
		d.disk.used.Add(-freed)
	}
	refusing := 0
	for _, p := range parts {
		e := p.ceiling()
		was := p.refusing.Swap(e != nil)
		switch {
		case e != nil && !was:
			d.opts.Logger.Warn("local disk ceiling reached; refusing produce", "topic", p.topic, "partition", p.partition,
				"setting", e.Setting, "used_bytes", e.Used, "limit_bytes", e.Limit, "pending_upload_bytes", e.Pending)
		case e == nil && was:
			d.opts.Logger.Info("below the local disk ceiling again; accepting produce", "topic", p.topic, "partition", p.partition)
		}
		if e != nil {
			refusing++
		}
		d.m.produceRefused.Add(float64(p.refusals.Swap(0)))
	}
	d.mu.Lock()
	d.refusing = refusing
	d.mu.Unlock()
	d.m.localBytes.Set(float64(used))
	d.m.localPendingBytes.Set(float64(pending))
	d.m.localMaxBytes.Set(float64(max(d.disk.limit, 0)))
	d.m.refusing.Set(float64(refusing))
}

// CheckDisk measures the local disk now rather than at the next interval
// (after an upload-now, so the status that follows shows its effect).
func (d *Daemon) CheckDisk() { d.checkDisk() }

// freeUploaded deletes, at a ceiling, the local copies of segments the
// bucket already holds, whatever local retention would keep: they are the
// one thing that frees space without losing a record (reads of them go to
// the bucket), and keeping them would refuse producers until local
// retention lets them go - a day by default - although nothing waits for
// an upload. Only tiered partitions: for the others the deletion guard
// allows anything. It returns the bytes freed and lowers the partitions'
// counts.
func (d *Daemon) freeUploaded(parts []*Partition) int64 {
	nodeFull := d.disk.limit > 0 && d.disk.used.Load() >= d.disk.limit
	var freed int64
	for _, p := range parts {
		localMax := p.localMax.Load()
		partFull := localMax > 0 && p.localUsed.Load() >= localMax
		if (!nodeFull && !partFull) || !p.remoteOn.Load() || p.store == nil {
			continue
		}
		target := int64(0) // at the node's ceiling: every uploaded copy
		if !nodeFull {
			target = localMax - 1
		}
		if p.log.ShrinkTo(target) == 0 {
			continue
		}
		u, _ := p.log.LocalBytes(0)
		freed += p.localUsed.Load() - u
		p.localUsed.Store(u)
	}
	return freed
}
