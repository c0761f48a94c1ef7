package hot

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/tierlog/tierlog/internal/batch"
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
// A log keeps at most Options.MaxProducers producers (see producerTable).
//
// The state survives restarts (producer_snapshot.go): a snapshot
// (<20-digit offset>.producers) is written when a segment seals, at Close
// and at Open, and Open loads the newest snapshot at or below the log end
// that passes its CRC (an older one, or none, otherwise) and replays the
// batch headers after it. Snapshots are kept when retention deletes
// segments, so producers whose batches are gone are still known.

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

// producerState is what a log knows of one producer id. A state a
// snapshot has taken is never changed again: update changes a copy, so
// taking a snapshot under the log lock copies the map of pointers only.
type producerState struct {
	Epoch int16 `json:"epoch"`
	// Batches are the latest of Epoch, oldest first.
	Batches []keptBatch `json:"batches"`
	// LastSeen is the broker's clock (Unix ms) at the producer's latest
	// append; expiry counts from it, not from the producer's timestamps,
	// so a producer replaying old records is not expired as it writes.
	LastSeen int64 `json:"last_seen_ms"`

	// The rest is the table's, under the log lock; a snapshot writer
	// reads only the fields above.
	id  int64
	gen uint64 // the table's gen when this state was made
	// older and newer link the table's recency list.
	older, newer *producerState
}

// producerSet is producer states by id (a snapshot file's payload).
type producerSet map[int64]*producerState

// producerShardCount is how many maps a table splits its producers into,
// by id: a snapshot takes the maps (never changed once taken) and the
// next change to each copies that one map, so the lock is held for a
// snapshot as long as for copying this many pointers, and a change after
// it copies 1/producerShardCount of the table at most once.
const producerShardCount = 256

// producerShard is one of a table's maps; gen is the table's gen when it
// was made (one of an older gen may be in a snapshot).
type producerShard struct {
	m   producerSet
	gen uint64
}

// frozenProducers is a snapshot of a table: its shards' maps, which
// nothing changes any more.
type frozenProducers []producerSet

// merge is the snapshot as one set, built outside the log lock.
func (f frozenProducers) merge() producerSet {
	n := 0
	for _, m := range f {
		n += len(m)
	}
	all := make(producerSet, n)
	for _, m := range f {
		maps.Copy(all, m)
	}
	return all
}

// producerTable is a log's producer state, guarded by the log's mutex.
//
// It keeps at most max producers (Options.MaxProducers): past that, the
// one whose latest append is oldest is dropped. A dropped producer is then
// unknown to the log, and its next batch is taken whatever its sequence
// (KIP-360's rule for unknown producers, as after expiry): a retry of one
// of its batches still in flight would be written again. Only a producer
// idle the longest while more than max others appended after it can be
// dropped this way.
type producerTable struct {
	shards [producerShardCount]*producerShard
	n      int // producers kept
	// oldest and newest end the list of producers ordered by their latest
	// append: expiry and the cap drop from the oldest end, in O(1) each.
	oldest, newest *producerState
	// gen counts the snapshots taken: a state or shard of an older gen
	// may be in one, so it is copied before it changes.
	gen uint64
	max int
	// onDrop, if set, is called for each producer the cap drops.
	onDrop func()
}

// DefaultMaxProducers is the default of Options.MaxProducers. A producer
// of one batch costs about 160 bytes of heap and 160 bytes of every
// snapshot (BenchmarkRollWithManyProducers), so a full table is about
// 16 MB of heap and a 16 MB snapshot per partition. It is room for a new
// producer every second of the day-long expiration, more distinct
// producers than one partition of a real workload sees, while a client
// creating producers in a loop can no longer grow a partition's state,
// and the snapshot written at every seal, without bound.
const DefaultMaxProducers = 100_000

func newProducerTable(maxProducers int) *producerTable {
	t := &producerTable{max: maxProducers}
	for i := range t.shards {
		t.shards[i] = &producerShard{m: producerSet{}}
	}
	return t
}

// len is the number of producers kept.
func (t *producerTable) len() int { return t.n }

func shardOf(id int64) int { return int(uint64(id) % producerShardCount) }

func (t *producerTable) get(id int64) *producerState { return t.shards[shardOf(id)].m[id] }

// writable returns id's shard, copied first if a snapshot may hold it.
func (t *producerTable) writable(id int64) producerSet {
	s := t.shards[shardOf(id)]
	if s.gen != t.gen {
		s = &producerShard{m: maps.Clone(s.m), gen: t.gen}
		t.shards[shardOf(id)] = s
	}
	return s.m
}

func (t *producerTable) put(p *producerState) {
	m := t.writable(p.id)
	if _, ok := m[p.id]; !ok {
		t.n++
	}
	m[p.id] = p
}

// lastOffset is the last offset of the producer's latest batch.
func (p *producerState) lastOffset() int64 {
	if len(p.Batches) == 0 {
		return -1
	}
	return p.Batches[len(p.Batches)-1].LastOffset
}

func (t *producerTable) unlink(p *producerState) {
	if p.older != nil {
		p.older.newer = p.newer
	} else {
		t.oldest = p.newer
	}
	if p.newer != nil {
		p.newer.older = p.older
	} else {
		t.newest = p.older
	}
	p.older, p.newer = nil, nil
}

func (t *producerTable) pushNewest(p *producerState) {
	p.older, p.newer = t.newest, nil
	if t.newest != nil {
		t.newest.newer = p
	} else {
		t.oldest = p
	}
	t.newest = p
}

func (t *producerTable) drop(p *producerState) {
	t.unlink(p)
	delete(t.writable(p.id), p.id)
	t.n--
}

// trim drops the least recently seen producers past the cap.
func (t *producerTable) trim() {
	for t.n > t.max && t.oldest != nil {
		t.drop(t.oldest)
		if t.onDrop != nil {
			t.onDrop()
		}
	}
}

// expire drops producers idle since before cutoff (Unix ms). The list is
// ordered by latest append, so it stops at the first producer seen since:
// the cost is the number expired, not the table's size. (Should the clock
// step back, a producer behind a newer one may outlive its expiration
// until that one expires; it is never dropped early.)
func (t *producerTable) expire(cutoff int64) {
	for t.oldest != nil && t.oldest.LastSeen < cutoff {
		t.drop(t.oldest)
	}
}

// snapshot returns the state as it is now, for a snapshot written outside
// the lock: the shards' maps, which (like the states they point to) are
// copied before any later change. Called with the log lock held.
func (t *producerTable) snapshot() frozenProducers {
	f := make(frozenProducers, producerShardCount)
	for i, s := range t.shards {
		f[i] = s.m
	}
	t.gen++
	return f
}

// adopt replaces the state with a snapshot's, ordering the producers by
// their latest append, and drops any past the cap. Called at Open, before
// the log is shared.
func (t *producerTable) adopt(set producerSet) {
	onDrop := t.onDrop
	*t = *newProducerTable(t.max)
	t.onDrop = onDrop
	ps := make([]*producerState, 0, len(set))
	for id, p := range set {
		p.id, p.gen, p.older, p.newer = id, t.gen, nil, nil
		ps = append(ps, p)
	}
	// By latest append: its time, then (for appends in the same ms) its
	// offset.
	slices.SortFunc(ps, func(a, b *producerState) int {
		return cmp.Or(cmp.Compare(a.LastSeen, b.LastSeen), cmp.Compare(a.lastOffset(), b.lastOffset()))
	})
	for _, p := range ps {
		t.put(p)
		t.pushNewest(p)
	}
	t.trim()
}

// check decides the fate of a producer's batch h under the log lock: a
// retry of a kept batch (dup), one to append (nil, nil), or a refusal.
// empty says the log has never held a record.
func (t *producerTable) check(h batch.Header, empty bool) (dup *keptBatch, err error) {
	if h.ProducerID < 0 {
		if h.Transactional() {
			return nil, fmt.Errorf("%w: transactional batch without a producer id", ErrTransactional)
		}
		return nil, nil
	}
	if h.Transactional() {
		return nil, fmt.Errorf("%w: batch of producer %d is transactional; tierlog accepts idempotent, not transactional, producers", ErrTransactional, h.ProducerID)
	}
	p := t.get(h.ProducerID)
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
func (t *producerTable) update(h batch.Header, now int64) {
	if h.ProducerID < 0 {
		return
	}
	p := t.get(h.ProducerID)
	switch {
	case p == nil:
		p = &producerState{Epoch: h.ProducerEpoch, id: h.ProducerID, gen: t.gen}
		t.put(p)
	case p.gen != t.gen:
		// A snapshot may hold p: change a copy.
		t.unlink(p)
		q := &producerState{Epoch: p.Epoch, LastSeen: p.LastSeen, id: p.id, gen: t.gen, Batches: slices.Clone(p.Batches)}
		t.put(q)
		p = q
	default:
		t.unlink(p)
	}
	t.pushNewest(p)
	if h.ProducerEpoch != p.Epoch {
		p.Epoch, p.Batches = h.ProducerEpoch, p.Batches[:0]
	}
	if len(p.Batches) == producerBatchesKept {
		p.Batches = append(p.Batches[:0], p.Batches[1:]...)
	}
	p.Batches = append(p.Batches, keptBatch{FirstSeq: h.BaseSequence, LastSeq: h.LastSequence(),
		BaseOffset: h.BaseOffset, LastOffset: h.LastOffset(), MaxTimestamp: h.MaxTimestamp})
	p.LastSeen = max(p.LastSeen, now)
	t.trim()
}

// MaxProducerID is the largest producer id the log's producer state holds
// (-1 if none): the broker hands out new ids above it.
func (l *Log) MaxProducerID() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := int64(-1)
	for _, s := range l.producers.shards {
		for id := range s.m {
			m = max(m, id)
		}
	}
	return m
}
