package hot

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/fileutil"
)

// producerSnapshot is a .producers file's payload: the producer state of
// the log below Offset.
//
// The file is an envelope of producerSnapshotHeader bytes, then the
// payload as JSON:
//
//	0..3  format version, uint32 big endian (producerSnapshotVersion)
//	4..7  CRC-32C (Castagnoli) of the payload, uint32 big endian
//
// A snapshot that fails its CRC (a torn or corrupted file that might
// still parse, and turn one producer into another) is unreadable: Open
// falls back to the older snapshot or to replaying the segments' batch
// headers. Version 1 (bare JSON, no CRC; never released) is unreadable the
// same way, so a log written by it rebuilds its state from the headers
// once.
type producerSnapshot struct {
	Offset    int64       `json:"offset"`
	Producers producerSet `json:"producers"`
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

const (
	producerSnapshotVersion = 2
	producerSnapshotHeader  = 8
	producerSnapshotSuffix  = ".producers"
	// producerSnapshotsKept is how many snapshots stay on disk: the
	// newest, and one before it should the newest be unreadable.
	producerSnapshotsKept = 2
)

func producerSnapshotPath(dir string, offset int64) string {
	return segmentPrefix(dir, offset) + producerSnapshotSuffix
}

// producerSnapshotOffsets lists the snapshots in dir, oldest first.
func producerSnapshotOffsets(dir string) ([]int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []int64
	for _, e := range entries {
		s, ok := strings.CutSuffix(e.Name(), producerSnapshotSuffix)
		if !ok || len(s) != 20 {
			continue
		}
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

// writeProducerSnapshot writes the state below offset atomically (temp
// file, fsync, rename, fsync dir) and removes all but the newest
// snapshots. Called without the log lock, by one writer at a time (the
// log's background job, or Open and Close, which run without it).
func (l *Log) writeProducerSnapshot(offset int64, f frozenProducers) error {
	payload, err := json.Marshal(producerSnapshot{Offset: offset, Producers: f.merge()})
	if err != nil {
		return err
	}
	data := make([]byte, producerSnapshotHeader, producerSnapshotHeader+len(payload))
	binary.BigEndian.PutUint32(data, producerSnapshotVersion)
	binary.BigEndian.PutUint32(data[4:], crc32.Checksum(payload, castagnoli))
	data = append(data, payload...)
	if err := fileutil.WriteFileAtomic(producerSnapshotPath(l.dir, offset), data, 0o644); err != nil {
		return fmt.Errorf("hot: write producer snapshot at offset %d: %w", offset, err)
	}
	l.mu.Lock()
	l.snapshotted = true
	l.mu.Unlock()
	offs, err := producerSnapshotOffsets(l.dir)
	if err != nil {
		return err
	}
	for i, o := range offs {
		if o < offset && i < len(offs)-producerSnapshotsKept {
			os.Remove(producerSnapshotPath(l.dir, o))
		}
	}
	return nil
}

// wantsProducerSnapshot says whether a snapshot is worth writing: there is
// state, or an older snapshot that would otherwise stay the newest. A log
// that never saw an idempotent producer writes none. Called with l.mu held
// or before the log is shared.
func (l *Log) wantsProducerSnapshot() bool { return l.producers.len() > 0 || l.snapshotted }

// loadProducers rebuilds the producer state at Open, once the segments are
// recovered: the newest readable snapshot at or below the log end, then
// the headers of the batches after it. A snapshot past the log end (its
// batches were truncated away, or segments moved out) is removed. The
// result is written as a snapshot at the log end, so the next Open replays
// nothing and a snapshot covers every batch retention may later delete.
func (l *Log) loadProducers() error {
	t, snapshots, replayed, from, err := l.buildProducers(l.spansLocked(), l.next)
	if err != nil {
		return err
	}
	l.producers = t
	l.snapshotted = snapshots
	if (!snapshots || !l.hasProducerSnapshotAt(l.next)) && l.wantsProducerSnapshot() {
		if err := l.writeProducerSnapshot(l.next, l.producers.snapshot()); err != nil {
			return err
		}
	}
	if replayed > 0 {
		l.opts.Logger.Info("rebuilt producer state", "from_offset", from, "batches_replayed", replayed, "producers", l.producers.len())
	}
	return nil
}

// segmentSpan is a segment with its size and next offset as they were
// under the log lock, for a walk of its headers outside it.
type segmentSpan struct {
	s          *segment
	size, next int64
}

func (l *Log) spansLocked() []segmentSpan {
	out := make([]segmentSpan, len(l.segments))
	for i, s := range l.segments {
		out[i] = segmentSpan{s: s, size: s.size, next: s.next}
	}
	return out
}

func (l *Log) hasProducerSnapshotAt(offset int64) bool {
	_, err := os.Stat(producerSnapshotPath(l.dir, offset))
	return err == nil
}

// buildProducers builds the producer state of the log below end from segs
// (which hold it): the newest readable snapshot at or below end, then the
// headers of the batches after it below end. Snapshots past end are
// removed (their batches were truncated away, or segments moved out). It
// reports whether any snapshot remains, how many headers it replayed and
// from which offset. It reads files only, so TruncateTo calls it outside
// the log lock.
func (l *Log) buildProducers(segs []segmentSpan, end int64) (t *producerTable, snapshots bool, replayed int, from int64, err error) {
	t = newProducerTable(l.opts.MaxProducers)
	t.onDrop = l.m.m.producersDropped.Inc
	offs, err := producerSnapshotOffsets(l.dir)
	if err != nil {
		return nil, false, 0, 0, err
	}
	from = segs[0].s.base
	for i := len(offs) - 1; i >= 0; i-- {
		o := offs[i]
		if o > end {
			l.opts.Logger.Warn("removing producer snapshot past the log end", "offset", o, "log_end", end)
			os.Remove(producerSnapshotPath(l.dir, o))
			offs = offs[:i]
			continue
		}
		snap, err := readProducerSnapshot(producerSnapshotPath(l.dir, o))
		if err != nil {
			l.opts.Logger.Warn("unreadable producer snapshot, trying an older one", "offset", o, "err", err)
			continue
		}
		t.adopt(snap.Producers)
		from = max(o, from)
		break
	}
	now := l.opts.Now().UnixMilli()
	for _, sp := range segs {
		if sp.next <= from || sp.s.base >= end {
			continue
		}
		n, err := sp.s.walkHeadersTo(sp.size, func(h batch.Header) {
			if h.BaseOffset >= from && h.BaseOffset < end {
				t.update(h, now)
			}
		})
		if err != nil {
			return nil, false, 0, 0, err
		}
		replayed += n
	}
	t.expire(l.opts.Now().Add(-l.opts.ProducerIDExpiration).UnixMilli())
	return t, len(offs) > 0, replayed, from, nil
}

func readProducerSnapshot(path string) (producerSnapshot, error) {
	var snap producerSnapshot
	b, err := os.ReadFile(path)
	if err != nil {
		return snap, err
	}
	name := filepath.Base(path)
	if len(b) < producerSnapshotHeader {
		return snap, fmt.Errorf("%s: %d bytes, shorter than the %d-byte header", name, len(b), producerSnapshotHeader)
	}
	if v := binary.BigEndian.Uint32(b); v != producerSnapshotVersion {
		return snap, fmt.Errorf("%s: format version %d, this build reads %d", name, v, producerSnapshotVersion)
	}
	payload := b[producerSnapshotHeader:]
	if want, got := binary.BigEndian.Uint32(b[4:]), crc32.Checksum(payload, castagnoli); want != got {
		return snap, fmt.Errorf("%s: CRC-32C %08x, the header says %08x: corrupted", name, got, want)
	}
	if err := json.Unmarshal(payload, &snap); err != nil {
		return snap, fmt.Errorf("%s: %w", name, err)
	}
	if snap.Producers == nil {
		snap.Producers = producerSet{}
	}
	return snap, nil
}

// walkHeaders calls fn with the header of every batch in the segment's
// valid bytes, reading 61 bytes per batch, and returns how many it read.
func (s *segment) walkHeaders(fn func(batch.Header)) (int, error) { return s.walkHeadersTo(s.size, fn) }

// walkHeadersTo is walkHeaders over the first size bytes (a size taken
// under the log lock, for a walk outside it).
func (s *segment) walkHeadersTo(size int64, fn func(batch.Header)) (int, error) {
	var hdr [batch.HeaderSize]byte
	n := 0
	for pos := int64(0); pos < size; n++ {
		if _, err := s.f.ReadAt(hdr[:], pos); err != nil {
			return n, fmt.Errorf("hot: read batch header of %s at %d: %w", s.logPath(), pos, err)
		}
		h, err := batch.ParseHeader(hdr[:])
		if err != nil {
			return n, fmt.Errorf("hot: batch header of %s at %d: %w", s.logPath(), pos, err)
		}
		fn(h)
		pos += int64(h.Size())
	}
	return n, nil
}

// producerSnapshotLocked returns a copy of the producer state for a
// snapshot at the log end, first dropping producers idle past the
// expiration; nil if no snapshot is wanted. Called with l.mu held.
func (l *Log) producerSnapshotLocked() frozenProducers {
	l.producers.expire(l.opts.Now().Add(-l.opts.ProducerIDExpiration).UnixMilli())
	if !l.wantsProducerSnapshot() {
		return nil
	}
	return l.producers.snapshot()
}
