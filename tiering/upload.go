package tiering

import (
	"context"
	"errors"
	"fmt"
)

// ErrNotTiered: the partition does not tier (its topic has
// remote.storage.enable=false), so there is nothing to upload it to.
var ErrNotTiered = errors.New("partition does not tier")

// UploadNow rolls the partition's active segment (if it holds anything)
// and asks the daemon for a pass now, past any failure backoff, so every
// record appended so far goes to the bucket without waiting for
// segment.bytes or segment.ms. It returns the target: the log end offset
// before the roll, below which everything is to be uploaded; WaitUploaded
// waits for it.
//
// The target is read before the roll, so records appended meanwhile are
// in the rolled segment (it ends at or past the target), never only in
// the new active one that no pass uploads.
func (p *Partition) UploadNow() (int64, error) {
	d := p.daemon.Load()
	if d == nil || p.store == nil || !p.remoteOn.Load() {
		return 0, fmt.Errorf("tiering: %s/%d: %w: remote.storage.enable=false", p.topic, p.partition, ErrNotTiered)
	}
	if why := p.notLeader(); why != nil {
		return 0, why
	}
	target := p.log.EndOffset()
	if err := p.log.Roll(); err != nil {
		return 0, fmt.Errorf("tiering: %s/%d: roll the active segment: %w", p.topic, p.partition, err)
	}
	for { // the highest target asked for stays urgent
		t := p.urgentTo.Load()
		if t >= target || p.urgentTo.CompareAndSwap(t, target) {
			break
		}
	}
	// Sealing the rolled segment wakes the daemon again (p.sealed); this
	// wake covers a roll that had nothing to seal and a backoff to skip.
	d.Wake()
	return target, nil
}

// UploadedEnd is the offset after the last segment the bucket's manifest
// copy names as committed: every offset below it is in the bucket.
func (p *Partition) UploadedEnd() int64 { return p.uploaded.Load() }

// WaitUploaded blocks until the bucket's manifest names segments up to
// target (UploadedEnd() >= target) or ctx ends. Segments become committed
// only after the bucket's manifest copy names them (commitDurable), so
// once it returns nil a node that loses its disk restores every offset
// below target.
func (p *Partition) WaitUploaded(ctx context.Context, target int64) error {
	for {
		p.mu.RLock()
		done, changed := p.uploaded.Load() >= target, p.changed
		p.mu.RUnlock()
		if done {
			return nil
		}
		// Read after changed: a change from here on closes it.
		if why := p.cannotUpload(); why != nil {
			return fmt.Errorf("tiering: %s/%d: wait for the upload of offsets up to %d (the bucket holds up to %d): %w",
				p.topic, p.partition, target, p.uploaded.Load(), why)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("tiering: %s/%d: wait for the upload of offsets up to %d (the bucket holds up to %d): %w",
				p.topic, p.partition, target, p.uploaded.Load(), context.Cause(ctx))
		case <-changed:
		}
	}
}

// cannotUpload says why no pass will upload p any more, or nil.
func (p *Partition) cannotUpload() error {
	d := p.daemon.Load()
	switch {
	case p.closed.Load():
		return errors.New("the partition was closed")
	case d == nil:
		return errors.New("the partition left the tiering daemon (its topic was deleted)")
	case d.stopped():
		return errors.New("the tiering daemon stopped (the node is closing)")
	case !p.remoteOn.Load():
		return fmt.Errorf("%w: remote.storage.enable=false", ErrNotTiered)
	}
	return p.notLeader()
}

// notLeader says why this node does not tier p on a shared prefix (a
// follower, or fenced by another leader), or nil.
func (p *Partition) notLeader() error {
	if !p.shared() {
		return nil
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.stopped != nil {
		return p.stopped
	}
	if !p.lead.leader {
		return fmt.Errorf("%w: %s/%d: this node follows it (leader epoch %d)", ErrNotLeader, p.topic, p.partition, p.lead.epoch)
	}
	return nil
}

// sealed is the hot log's OnSealed hook: a sealed segment can be uploaded
// now rather than at the daemon's next pass.
func (p *Partition) sealed() {
	if d := p.daemon.Load(); d != nil {
		d.Wake()
	}
}
