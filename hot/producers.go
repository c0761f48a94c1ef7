package hot

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/fileutil"
)

// Idempotent producers. A batch with a producer id (not -1) carries the
// producer's epoch and the sequence number of its first record; a producer
// numbers its records per partition from 0. The log keeps, per producer id,
// the epoch and the last producerBatchesKept batches it appended, and
// checks every such batch against them under the log lock, before offsets
// are assigned, as Kafka's ProducerStateManager does:
//
//   - the same epoch and sequence range as a kept batch: a retry of it. The
//     append returns the original's offsets and writes nothing.
//   - an epoch below the producer's: ErrInvalidProducerEpoch.
//   - a new epoch: its first sequence must be 0.
//   - the same epoch: its first sequence must follow the last one
//     (ErrOutOfOrderSequence otherwise).
//   - a producer the log does not know: any sequence, as Kafka since 2.5
//     (KIP-360) accepts, because its state may have expired or its batches
//     been deleted by retention; except that a log that never held a
//     record takes only sequence 0 (KAFKA-15591: otherwise a later batch
//     could land before a lost first one without an error).
//
// The state survives restarts: a snapshot (<20-digit offset>.producers)
// is written when a segment seals, at Close and at Open, and Open loads
// the newest snapshot at or below the log end that passes its CRC (an
// older one, or none, otherwise) and replays the batch headers after it. Snapshots are kept when retention deletes segments,
// so producers whose batches are gone are still known.

// producerBatchesKept is how many of a producer's latest batches a log
// remembers: Kafka's count, the most batches an idempotent producer may
// have in flight per partition (max.in.flight.requests.per.connection 5).
const producerBatchesKept = 5

// DefaultProducerIDExpiration is how long a log keeps an idle producer's
// state (Kafka's producer.id.expiration.ms default, one day).
const DefaultProducerIDExpiration = 24 * time.Hour

// ErrOutOfOrderSequence refuses a batch whose first sequence does not
// follow the producer's last one in this partition (a batch in between
// was lost, or a new epoch did not start at 0). Nothing was written.
var ErrOutOfOrderSequence = errors.New("out of order sequence number")

// ErrInvalidProducerEpoch refuses a batch from an epoch older than the
// producer's latest in this partition (a fenced, older incarnation).
var ErrInvalidProducerEpoch = errors.New("invalid producer epoch")

// ErrTransactional refuses a transactional batch: tierlog has no
// transactions, so no commit or abort marker could ever follow it.
var ErrTransactional = errors.New("transactions are not supported")

// keptBatch is one appended batch of a producer.
type keptBatch struct {
	FirstSeq   int32 `json:"first_seq"`
	LastSeq    int32 `json:"last_seq"`
	BaseOffset int64 `json:"base_offset"`
	LastOffset int64 `json:"last_offset"`
	// MaxTimestamp is the stored batch's (the append time under
	// LogAppendTime), answered again to a retry.
	MaxTimestamp int64 `json:"max_timestamp"`
}

// producerState is what a log knows of one producer id.
type producerState struct {
	Epoch int16 `json:"epoch"`
	// Batches are the latest of Epoch, oldest first.
	Batches []keptBatch `json:"batches"`
	// LastSeen is the broker's clock (Unix ms) at the producer's latest
	// append; expiry counts from it, not from the producer's timestamps,
	// so a producer replaying old records is not expired as it writes.
	LastSeen int64 `json:"last_seen_ms"`
}

// producerTable is a log's producer state, guarded by the log's mutex.
type producerTable map[int64]*producerState

// check decides the fate of a producer's batch h under the log lock: a
// retry of a kept batch (dup), one to append (nil, nil), or a refusal.
// empty says the log has never held a record.
func (t producerTable) check(h batch.Header, empty bool) (dup *keptBatch, err error) {
	if h.ProducerID < 0 {
		if h.Transactional() {
			return nil, fmt.Errorf("%w: transactional batch without a producer id", ErrTransactional)
		}
		return nil, nil
	}
	if h.Transactional() {
		return nil, fmt.Errorf("%w: batch of producer %d is transactional; tierlog accepts idempotent, not transactional, producers", ErrTransactional, h.ProducerID)
	}
	p := t[h.ProducerID]
	if p == nil {
		if empty && h.BaseSequence != 0 {
			return nil, fmt.Errorf("%w: producer %d starts at sequence %d in a partition that has never held a record (expected 0)", ErrOutOfOrderSequence, h.ProducerID, h.BaseSequence)
		}
		return nil, nil
	}
	last := h.LastSequence()
	if h.ProducerEpoch == p.Epoch {
		for i := range p.Batches {
			if b := &p.Batches[i]; b.FirstSeq == h.BaseSequence && b.LastSeq == last {
				c := *b
				return &c, nil
			}
		}
	}
	switch {
	case h.ProducerEpoch < p.Epoch:
		return nil, fmt.Errorf("%w: producer %d sent epoch %d, its latest in this partition is %d", ErrInvalidProducerEpoch, h.ProducerID, h.ProducerEpoch, p.Epoch)
	case h.ProducerEpoch > p.Epoch:
		if h.BaseSequence != 0 {
			return nil, fmt.Errorf("%w: producer %d starts epoch %d at sequence %d (expected 0)", ErrOutOfOrderSequence, h.ProducerID, h.ProducerEpoch, h.BaseSequence)
		}
	case len(p.Batches) > 0:
		prev := p.Batches[len(p.Batches)-1].LastSeq
		if !inSequence(prev, h.BaseSequence) {
			return nil, fmt.Errorf("%w: producer %d epoch %d sent sequence %d, the next expected is %d", ErrOutOfOrderSequence, h.ProducerID, h.ProducerEpoch, h.BaseSequence, nextSequence(prev))
		}
	}
	return nil, nil
}

func nextSequence(last int32) int32 {
	if last == 1<<31-1 {
		return 0
	}
	return last + 1
}

func inSequence(last, next int32) bool { return next == nextSequence(last) }

// update records an appended batch (h as stored, offsets assigned); now is
// the broker's clock in Unix ms.
func (t producerTable) update(h batch.Header, now int64) {
	if h.ProducerID < 0 {
		return
	}
	p := t[h.ProducerID]
	if p == nil {
		p = &producerState{Epoch: h.ProducerEpoch}
		t[h.ProducerID] = p
	}
	if h.ProducerEpoch != p.Epoch {
		p.Epoch, p.Batches = h.ProducerEpoch, p.Batches[:0]
	}
	if len(p.Batches) == producerBatchesKept {
		p.Batches = append(p.Batches[:0], p.Batches[1:]...)
	}
	p.Batches = append(p.Batches, keptBatch{FirstSeq: h.BaseSequence, LastSeq: h.LastSequence(),
		BaseOffset: h.BaseOffset, LastOffset: h.LastOffset(), MaxTimestamp: h.MaxTimestamp})
	p.LastSeen = max(p.LastSeen, now)
}

// expire drops producers idle since before cutoff (Unix ms).
func (t producerTable) expire(cutoff int64) {
	maps.DeleteFunc(t, func(_ int64, p *producerState) bool { return p.LastSeen < cutoff })
}

// clone is a deep copy, for a snapshot written outside the lock.
func (t producerTable) clone() producerTable {
	c := make(producerTable, len(t))
	for id, p := range t {
		q := *p
		q.Batches = slices.Clone(p.Batches)
		c[id] = &q
	}
	return c
}

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
	Offset    int64         `json:"offset"`
	Producers producerTable `json:"producers"`
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
func (l *Log) writeProducerSnapshot(offset int64, t producerTable) error {
	payload, err := json.Marshal(producerSnapshot{Offset: offset, Producers: t})
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
func (l *Log) wantsProducerSnapshot() bool { return len(l.producers) > 0 || l.snapshotted }

// loadProducers rebuilds the producer state at Open, once the segments are
// recovered: the newest readable snapshot at or below the log end, then
// the headers of the batches after it. A snapshot past the log end (its
// batches were truncated away, or segments moved out) is removed. The
// result is written as a snapshot at the log end, so the next Open replays
// nothing and a snapshot covers every batch retention may later delete.
func (l *Log) loadProducers() error {
	l.producers = producerTable{}
	offs, err := producerSnapshotOffsets(l.dir)
	if err != nil {
		return err
	}
	from := l.segments[0].base
	for i := len(offs) - 1; i >= 0; i-- {
		o := offs[i]
		if o > l.next {
			l.opts.Logger.Warn("removing producer snapshot past the log end", "offset", o, "log_end", l.next)
			os.Remove(producerSnapshotPath(l.dir, o))
			continue
		}
		snap, err := readProducerSnapshot(producerSnapshotPath(l.dir, o))
		if err != nil {
			l.opts.Logger.Warn("unreadable producer snapshot, trying an older one", "offset", o, "err", err)
			continue
		}
		l.producers, from = snap.Producers, max(o, from)
		break
	}
	now := l.opts.Now().UnixMilli()
	replayed := 0
	for _, s := range l.segments {
		if s.next <= from {
			continue
		}
		n, err := s.walkHeaders(func(h batch.Header) {
			if h.BaseOffset >= from {
				l.producers.update(h, now)
			}
		})
		if err != nil {
			return err
		}
		replayed += n
	}
	l.producers.expire(l.opts.Now().Add(-l.opts.ProducerIDExpiration).UnixMilli())
	l.snapshotted = len(offs) > 0
	if (len(offs) == 0 || offs[len(offs)-1] != l.next) && l.wantsProducerSnapshot() {
		if err := l.writeProducerSnapshot(l.next, l.producers.clone()); err != nil {
			return err
		}
	}
	if replayed > 0 {
		l.opts.Logger.Info("rebuilt producer state", "from_offset", from, "batches_replayed", replayed, "producers", len(l.producers))
	}
	return nil
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
		snap.Producers = producerTable{}
	}
	return snap, nil
}

// walkHeaders calls fn with the header of every batch in the segment's
// valid bytes, reading 61 bytes per batch, and returns how many it read.
func (s *segment) walkHeaders(fn func(batch.Header)) (int, error) {
	var hdr [batch.HeaderSize]byte
	n := 0
	for pos := int64(0); pos < s.size; n++ {
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
func (l *Log) producerSnapshotLocked() producerTable {
	l.producers.expire(l.opts.Now().Add(-l.opts.ProducerIDExpiration).UnixMilli())
	if !l.wantsProducerSnapshot() {
		return nil
	}
	return l.producers.clone()
}

// MaxProducerID is the largest producer id the log's producer state holds
// (-1 if none): the broker hands out new ids above it.
func (l *Log) MaxProducerID() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := int64(-1)
	for id := range l.producers {
		m = max(m, id)
	}
	return m
}
