package hot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/tierlog/tierlog/internal/fileutil"
)

// truncateFullyFile marks a TruncateFullyAndStartAt in progress: it holds
// the new start offset. While it exists the old log is condemned; Open
// finishes the job (finishTruncateFully) before it reads any segment.
const truncateFullyFile = "truncate-fully-start-offset"

// TruncateFullyAndStartAt (Kafka's name) replaces the whole log with an
// empty one whose start, end and high watermark are offset: every
// segment, the producer snapshots and state, and the leader epoch cache go, and a new empty
// active segment with base offset offset is created (the recovery point
// is offset). A follower does this when it is new or wiped, or when its
// log lies wholly below or above the leader's local log start (KIP-1023:
// it starts at the leader's tiered offset, not at 0). AppendReplica at
// offset then works.
//
// It excludes sealing, retention, TruncateTo and Close (structMu, alone).
// Readers racing it answer as before it or with the new empty log (their
// offset out of range). As with TruncateTo, a caller must not append to a
// log it truncates: a batch appended before the call returns may be lost.
//
// Crash safety: a marker file holding offset is written (atomically)
// first. A crash before it leaves the old log; after it, Open sees the
// marker and finishes the job, so it opens the new empty log at offset:
// never a mix of the two, never a gap between them.
func (l *Log) TruncateFullyAndStartAt(offset int64) error {
	if offset < 0 {
		return fmt.Errorf("hot: truncate fully: negative start offset %d", offset)
	}
	l.structMu.Lock()
	defer l.structMu.Unlock()
	l.mu.RLock()
	err := l.usableLocked()
	oldStart, oldEnd := l.segments[0].base, l.next
	l.mu.RUnlock()
	if err != nil {
		return err
	}
	truncateStep("fully-begin")
	marker := filepath.Join(l.dir, truncateFullyFile)
	if err := fileutil.WriteFileAtomic(marker, []byte(strconv.FormatInt(offset, 10)+"\n"), 0o644); err != nil {
		return fmt.Errorf("hot: truncate fully: write marker: %w", err)
	}
	truncateStep("fully-marker")

	l.mu.Lock()
	if err := l.usableLocked(); err != nil {
		l.mu.Unlock()
		return err
	}
	old := l.segments
	for _, s := range old {
		s.deleted.Store(true) // readers of them answer as after the wipe
		s.truncations.Add(1)
	}
	var errs []error
	for i := len(old) - 1; i >= 0; i-- { // newest first, like TruncateTo
		errs = append(errs, old[i].remove())
		truncateStep("fully-segment-deleted")
	}
	// The directory is fsynced below, outside the lock; until then the
	// marker makes Open create this file anyway.
	s := &segment{base: offset, prefix: segmentPrefix(l.dir, offset), next: offset, maxTs: -1, created: l.opts.Now()}
	f, err := l.opts.OpenFile(s.logPath(), os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		err = l.failLocked(fmt.Errorf("hot: truncate fully: create segment: %w", err))
		l.mu.Unlock()
		return err
	}
	s.f = f
	truncateStep("fully-created")
	l.segments = []*segment{s}
	l.active = s
	l.toSeal, l.dirty, l.unsynced = nil, nil, 0
	l.sealedEnd.Store(0)
	l.next = offset
	l.written = &position{offset: offset, seg: s, pos: 0}
	l.truncations++
	l.visible.Store(l.written)
	ch := make(chan struct{})
	close(*l.notify.Swap(&ch))
	l.lowerHighWatermarkLocked(offset, true)
	l.producers = newProducerTable(l.opts.MaxProducers)
	l.snapshotted = false
	l.epochs.entries = nil
	l.mu.Unlock()

	l.epochFileMu.Lock()
	errs = append(errs, l.clearStateFiles(offset))
	l.epochFileMu.Unlock()
	truncateStep("fully-state")
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("hot: truncate fully (the marker stays; Open finishes the job): %w", err)
	}
	if err := os.Remove(marker); err != nil {
		return fmt.Errorf("hot: truncate fully: remove marker: %w", err)
	}
	if err := fileutil.SyncDir(l.dir); err != nil {
		return err
	}
	truncateStep("fully-done")
	l.opts.Logger.Info("truncated log fully", "start_offset", offset, "old_start", oldStart, "old_end", oldEnd, "segments_deleted", len(old))
	l.updateGauges()
	return nil
}

// clearStateFiles removes the producer snapshots and the epoch and high
// watermark checkpoints and sets the recovery point to offset, then fsyncs the directory (and
// with it the new segment's entry).
func (l *Log) clearStateFiles(offset int64) error {
	var errs []error
	snaps, err := producerSnapshotOffsets(l.dir)
	errs = append(errs, err)
	for _, o := range snaps {
		if err := os.Remove(producerSnapshotPath(l.dir, o)); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	// No high watermark checkpoint means the log start: offset.
	for _, f := range []string{epochCheckpointFile, highWatermarkFile} {
		if err := os.Remove(filepath.Join(l.dir, f)); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	l.hw.saved.Store(-1)
	errs = append(errs, l.writeRecoveryPoint(offset), fileutil.SyncDir(l.dir))
	return errors.Join(errs...)
}

// finishTruncateFully completes, at Open, a TruncateFullyAndStartAt that
// a crash interrupted: with the marker present, every segment goes (the
// new one, empty, is created again), then the state files, then the
// marker.
func (l *Log) finishTruncateFully() error {
	marker := filepath.Join(l.dir, truncateFullyFile)
	b, err := os.ReadFile(marker)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	offset, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || offset < 0 {
		return fmt.Errorf("hot: %s: unreadable start offset %q", marker, b)
	}
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return err
	}
	var bases []int64
	for _, e := range entries {
		if b, ok := parseSegmentName(e.Name()); ok {
			bases = append(bases, b)
		}
	}
	for i := len(bases) - 1; i >= 0; i-- {
		if err := removeSegmentFiles(segmentPrefix(l.dir, bases[i])); err != nil {
			return err
		}
	}
	f, err := l.opts.OpenFile(segmentPrefix(l.dir, offset)+".log", os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("hot: truncate fully: create segment: %w", err)
	}
	f.Close()
	if err := l.clearStateFiles(offset); err != nil {
		return err
	}
	if err := os.Remove(marker); err != nil {
		return err
	}
	l.opts.Logger.Warn("finished a full truncation a crash interrupted", "start_offset", offset, "segments_deleted", len(bases))
	return fileutil.SyncDir(l.dir)
}
