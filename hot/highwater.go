package hot

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tierlog/tierlog/internal/fileutil"
)

// The high watermark (Options.Replicated). A replicated log has two ends:
//
//   - the log end (LogEndOffset): what the flush policy made visible -
//     under flush.policy=always, fsynced batches only. Followers fetch up
//     to it (ReadReplica, ChangedEnd).
//   - the high watermark (HighWatermark): the offset every in-sync replica
//     holds, below which a record is committed. Consumers read only below
//     it (Read, ReadBuf, EndOffset, Wait, Changed, OffsetForTime), and the
//     tiering daemon uploads only segments that end at or below it
//     (SealedSegments, SealedEnd), since anything above may still be
//     truncated away by a new leader.
//
// The leader moves it with a ReplicaSet (replication.go), a follower with
// the value its leader sends; SetHighWatermark only moves it forward,
// within [StartOffset, LogEndOffset]. TruncateTo and
// TruncateFullyAndStartAt lower it to the cut (the one way it goes down),
// and retention never deletes a segment above it.
//
// It is checkpointed in highWatermarkFile, written by the log's background
// job at most every hwCheckpointInterval while it moves, and by Close -
// never on the produce or fetch path. A checkpoint behind the truth only
// hides committed records until the leader (or a follower's next fetch)
// moves it again; one ahead of the truth would show uncommitted ones, so
// TruncateTo writes the lowered value before it cuts anything, and Open
// takes min(checkpoint, log end). A missing or damaged file means the
// log start.
//
// Without Options.Replicated the high watermark is the log end, no file
// is written and SetHighWatermark does nothing.

// highWatermarkFile holds the checkpoint, text:
//
//	1            format version
//	1200         high watermark
//	1a2b3c4d     CRC-32C (Castagnoli) of the two lines above, hex
const highWatermarkFile = "high-watermark-checkpoint"

// hwCheckpointInterval bounds how often a moving high watermark is written.
const hwCheckpointInterval = time.Second

// highWater is a replicated log's high watermark and its checkpoint state.
type highWater struct {
	off atomic.Int64
	// mu orders moves of off. Truncations take it while holding Log.mu;
	// SetHighWatermark takes it alone (never Log.mu), so a follower's
	// fetch never waits for an append's write.
	mu     sync.Mutex
	notify atomic.Pointer[chan struct{}] // closed when off moves
	// saved is the value in the checkpoint (-1: none). Written by the
	// writers of the file, who hold Log.structMu (read: the background
	// job, of which a log runs one at a time; write: Close, truncations).
	saved atomic.Int64
	// kicked: the background job has been asked for (or has planned) a
	// checkpoint write, so further moves need not ask again.
	kicked atomic.Bool
}

func (h *highWater) init() {
	ch := make(chan struct{})
	h.notify.Store(&ch)
	h.saved.Store(-1)
}

// setLocked moves the high watermark to off and wakes its waiters. Called
// with h.mu held.
func (h *highWater) setLocked(off int64) {
	h.off.Store(off)
	ch := make(chan struct{})
	close(*h.notify.Swap(&ch))
}

// HighWatermark is the offset below which records are committed and
// consumers may read them. Without Options.Replicated it is the log end.
func (l *Log) HighWatermark() int64 {
	if !l.opts.Replicated {
		return l.visible.Load().offset
	}
	return l.hw.off.Load()
}

// LogEndOffset is the next offset after what the flush policy has made
// visible (fsynced under flush.policy=always): what followers may fetch.
// Without Options.Replicated it equals EndOffset.
func (l *Log) LogEndOffset() int64 { return l.visible.Load().offset }

// SetHighWatermark moves the high watermark forward to off, clamped to the
// log end; an off at or below the current value changes nothing. Moving it
// wakes consumers waiting in Wait or on Changed, and the tiering daemon
// (Options.OnSealed) when it passes the end of a sealed segment. It does
// no I/O: the checkpoint is written later by the background job. Without
// Options.Replicated it does nothing.
func (l *Log) SetHighWatermark(off int64) {
	if !l.opts.Replicated {
		return
	}
	h := &l.hw
	h.mu.Lock()
	// Under h.mu the log end can only grow (truncations lower it and the
	// high watermark while holding h.mu), so the clamp stays true; the
	// start never passes the high watermark (retention stops below it).
	off = min(off, l.visible.Load().offset)
	old := h.off.Load()
	if off <= old {
		h.mu.Unlock()
		return
	}
	h.setLocked(off)
	h.mu.Unlock()
	l.m.highWatermark.Set(float64(off))
	if h.kicked.CompareAndSwap(false, true) {
		l.sched.kick(l) // checkpoint it (at most every hwCheckpointInterval)
	}
	if se := l.sealedEnd.Load(); l.opts.OnSealed != nil && old < se && se <= off {
		l.opts.OnSealed() // the newest sealed segment became committed: it may be tiered now
	}
}

// lowerHighWatermarkLocked lowers the high watermark to off if it is
// above (a truncation cut the log there), or with force sets it to off
// (a full truncation's new start). Called with l.mu held for writing.
func (l *Log) lowerHighWatermarkLocked(off int64, force bool) {
	if !l.opts.Replicated {
		return
	}
	l.hw.mu.Lock()
	if cur := l.hw.off.Load(); force || cur > off {
		l.hw.setLocked(off)
	}
	l.hw.mu.Unlock()
}

// ReadReplica is ReadBuf for a follower: it reads up to the log end, not
// the high watermark, and its FetchResult.EndOffset is the log end.
// Without Options.Replicated it is ReadBuf.
func (l *Log) ReadReplica(offset int64, maxBytes int, buf []byte) (FetchResult, error) {
	return l.readRetrying(offset, maxBytes, buf, true)
}

// ChangedEnd is Changed for the log end: a channel closed when the log end
// next moves (or a truncation lowers it) and one closed when the log
// closes. A leader's fetch handler waits on it for its followers, and a
// ReplicaSet on it when the leader alone is in sync.
func (l *Log) ChangedEnd() (moved, closed <-chan struct{}) { return *l.notify.Load(), l.stop }

// loadHighWatermark sets the high watermark at Open: the checkpoint,
// within [log start, log end]; the log start if there is none.
func (l *Log) loadHighWatermark() {
	if !l.opts.Replicated {
		return
	}
	start, end := l.segments[0].base, l.visible.Load().offset
	off, err := readHighWatermark(l.dir)
	switch {
	case err == nil:
		l.hw.saved.Store(off)
	case os.IsNotExist(err):
		off = start
	default:
		l.opts.Logger.Warn("unreadable high watermark checkpoint: consumers see nothing above the log start until the leader moves it",
			"err", err, "log_start", start)
		off = start
	}
	l.hw.off.Store(max(start, min(off, end)))
}

func readHighWatermark(dir string) (int64, error) {
	path := filepath.Join(dir, highWatermarkFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	lines := bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
	if len(lines) != 3 {
		return 0, fmt.Errorf("hot: %s: %d lines, want 3", path, len(lines))
	}
	body := b[:len(lines[0])+len(lines[1])+2]
	want, err := strconv.ParseUint(string(lines[2]), 16, 32)
	if err != nil || uint32(want) != crc32.Checksum(body, castagnoli) {
		return 0, fmt.Errorf("hot: %s: checksum mismatch", path)
	}
	if string(lines[0]) != "1" {
		return 0, fmt.Errorf("hot: %s: version %q, this build reads 1", path, lines[0])
	}
	off, err := strconv.ParseInt(string(lines[1]), 10, 64)
	if err != nil || off < 0 {
		return 0, fmt.Errorf("hot: %s: bad offset %q", path, lines[1])
	}
	return off, nil
}

// writeHighWatermark writes off to the checkpoint atomically (temp file,
// fsync, rename, fsync dir). Its callers hold structMu (see highWater.saved).
func (l *Log) writeHighWatermark(off int64) error {
	body := fmt.Appendf(nil, "1\n%d\n", off)
	data := fmt.Appendf(body, "%08x\n", crc32.Checksum(body, castagnoli))
	if err := fileutil.WriteFileAtomic(filepath.Join(l.dir, highWatermarkFile), data, 0o644); err != nil {
		return fmt.Errorf("hot: write high watermark checkpoint: %w", err)
	}
	l.hw.saved.Store(off)
	return nil
}

// saveHighWatermark checkpoints the current high watermark if the file
// holds another value. Its callers hold structMu.
func (l *Log) saveHighWatermark() error {
	if !l.opts.Replicated {
		return nil
	}
	off := l.hw.off.Load()
	if off == l.hw.saved.Load() {
		return nil
	}
	return l.writeHighWatermark(off)
}

// checkpointHighWatermark is the background job's part: write the high
// watermark if it moved and the last write is hwCheckpointInterval old,
// else plan the job for when it is (bg.hwDue).
func (l *Log) checkpointHighWatermark(now time.Time) {
	if !l.opts.Replicated {
		return
	}
	l.bg.hwDue = time.Time{}
	// Cleared before reading the value: a move after this asks again.
	l.hw.kicked.Store(false)
	if l.hw.off.Load() == l.hw.saved.Load() {
		return
	}
	if due := l.bg.hwWritten.Add(hwCheckpointInterval); now.Before(due) {
		l.bg.hwDue = due
		l.hw.kicked.Store(true) // moves until then need not kick the job
		return
	}
	l.bg.hwWritten = now
	l.structMu.RLock()
	err := l.saveHighWatermark()
	l.structMu.RUnlock()
	if err != nil && !errors.Is(err, os.ErrClosed) {
		l.opts.Logger.Warn("checkpoint high watermark; will retry", "err", err)
		l.bg.hwDue = now.Add(hwCheckpointInterval)
		l.hw.kicked.Store(true)
	}
}
