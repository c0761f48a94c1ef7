package groups

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tierlog/tierlog/internal/fileutil"
)

// The committed-offset log (see doc.go for the layout).
const (
	offsetsFile = "offsets.log"
	fileMagic   = "TLOFFS\x00\x02" // name and format version 2
	// fileMagicV1 is format version 1, whose frame header has no check of
	// its own: it is read (and rewritten as version 2) at open.
	fileMagicV1 = "TLOFFS\x00\x01"
	// frameHeader: payload length, CRC-32C of the payload, CRC-32C of
	// those 8 bytes (version 1: the first two only).
	frameHeader   = 12
	frameHeaderV1 = 8
	// maxFrame bounds a frame's claimed length at replay: a longer claim is
	// damage, not a frame (one frame is one OffsetCommit request, and
	// requests are smaller than this).
	maxFrame = 256 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Offset is a committed offset with what the committer attached to it.
type Offset struct {
	Offset      int64
	LeaderEpoch int32 // -1: unknown
	Metadata    string
	CommitTime  time.Time
	// ExpireTime, if set, is when the offset expires (OffsetCommit v2 to
	// v4's retention time) instead of the coordinator's retention.
	ExpireTime time.Time
}

// entry is one committed (or, with Offset -1, deleted) partition offset:
// the unit of the log.
type entry struct {
	group, topic string
	partition    int32
	Offset
}

func (e entry) tombstone() bool { return e.Offset.Offset < 0 }

type tp struct {
	topic     string
	partition int32
}

// store keeps every group's committed offsets in memory and makes each
// change durable in one append-only file before it is applied: a frame per
// change (one OffsetCommit, one group deletion), fsynced before the caller
// is answered. Changes from concurrent callers share an fsync (group
// commit). The file is rewritten atomically from memory when it holds
// mostly superseded entries.
type store struct {
	dir     string
	log     *slog.Logger
	compact int // rewrite when the file has this many entries and 4x the live ones
	syncDur prometheus.Observer

	// mu guards the applied state and the queue; it is never held across
	// file I/O.
	mu      sync.Mutex
	offsets map[string]map[tp]Offset // applied: durable
	live    int                      // entries in offsets
	queued  [][]entry                // enqueued, not yet written
	writing [][]entry                // being written and fsynced, not yet applied
	buf     []byte                   // their frames
	nextSeq uint64                   // seq of the next enqueued change
	// synced is the seq below which every change is durable and applied;
	// failed is the sticky write error: after a failed write or fsync the
	// file's tail is unknown, so nothing more is acknowledged until a
	// restart replays it.
	synced uint64
	failed error

	// syncMu is held by the one caller writing and fsyncing the queue (and
	// compacting): the file's writer.
	syncMu  sync.Mutex
	f       *os.File
	entries int // entries in the file

	// replicate, if set, copies every batch of changes elsewhere (the
	// cluster's Raft log) after its fsync, under syncMu so batches arrive
	// in log order; the changes' callers are answered only once it
	// returned, with its error. failedRepl holds the seq ranges of recent
	// batches it refused (guarded by mu).
	replicate  func([]OffsetOf) error
	failedRepl []replFailure
}

// replFailure is a batch of changes, seqs [from, to), that is durable
// locally but was not replicated.
type replFailure struct {
	from, to uint64
	err      error
}

// maxReplFailures bounds failedRepl: a waiter older than that many failed
// batches is long answered.
const maxReplFailures = 64

func openStore(dir string, log *slog.Logger, compact int, syncDur prometheus.Observer) (*store, error) {
	s := &store{dir: dir, log: log, compact: compact, syncDur: syncDur, offsets: map[string]map[tp]Offset{}}
	if err := fileutil.MkdirAllDurable(dir); err != nil {
		return nil, fmt.Errorf("groups: directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, offsetsFile)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := fileutil.WriteFileAtomic(path, []byte(fileMagic), 0o644); err != nil {
			return nil, fmt.Errorf("groups: create %s: %w", path, err)
		}
		data = []byte(fileMagic)
	case err != nil:
		return nil, fmt.Errorf("groups: read %s: %w", path, err)
	}
	v1 := len(data) >= len(fileMagicV1) && string(data[:len(fileMagicV1)]) == fileMagicV1
	good, err := s.replay(data, v1)
	if err != nil {
		return nil, fmt.Errorf("groups: %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("groups: open %s: %w", path, err)
	}
	if good < len(data) {
		// A torn last write: its change was never acknowledged.
		s.log.Warn("dropping the torn end of the committed-offset log", "file", path,
			"position", good, "bytes", len(data)-good)
		if err := errors.Join(f.Truncate(int64(good)), f.Sync()); err != nil {
			f.Close()
			return nil, fmt.Errorf("groups: truncate %s: %w", path, err)
		}
	}
	if _, err := f.Seek(int64(good), io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	s.f = f
	if v1 {
		s.log.Info("rewriting the committed-offset log in format version 2", "file", path)
		if err := s.rewrite(); err != nil {
			s.f.Close()
			return nil, fmt.Errorf("groups: rewrite %s: %w", path, err)
		}
	}
	return s, nil
}

// CorruptionError is damage in the middle of the committed-offset log:
// a frame that fails its checksum with valid frames after it, so
// acknowledged commits would be lost by dropping it.
type CorruptionError struct {
	Position int
	Reason   string
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("corrupt frame at position %d (%s) with valid frames after it; "+
		"move the file away to start without committed offsets", e.Position, e.Reason)
}

// replay applies every whole frame of data and returns the length of the
// valid prefix. A bad frame with nothing valid after it is a torn tail (a
// write cut short by a crash); one followed by a valid frame is corruption.
//
// Frames are looked for after a bad one only where one could start: past
// its end when its header is intact (its checksum makes the length
// trustworthy), for the payload, a committer's metadata, may hold bytes
// that read as a frame; anywhere after it when the header itself is
// damaged (or, in version 1, cannot be checked).
func (s *store) replay(data []byte, v1 bool) (int, error) {
	magic := fileMagic
	if v1 {
		magic = fileMagicV1
	}
	if len(data) < len(magic) || string(data[:len(magic)]) != magic {
		return 0, &CorruptionError{Position: 0, Reason: "bad file header"}
	}
	pos := len(magic)
	for pos < len(data) {
		es, n, reason := readFrame(data[pos:], v1)
		if reason != "" {
			from := pos + 1
			if n > 0 {
				from = pos + n
			}
			for p := from; p < len(data); p++ {
				if _, _, r := readFrame(data[p:], v1); r == "" {
					return 0, &CorruptionError{Position: pos, Reason: reason}
				}
			}
			return pos, nil
		}
		for _, e := range es {
			s.apply(e)
		}
		s.entries += len(es)
		pos += n
	}
	return pos, nil
}

// readFrame decodes the frame at the start of b: its entries and length,
// or why it is not a whole valid frame (with its claimed length if its
// header is intact, else 0).
func readFrame(b []byte, v1 bool) ([]entry, int, string) {
	hdr := frameHeader
	if v1 {
		hdr = frameHeaderV1
	}
	if len(b) < hdr {
		return nil, 0, "short frame header"
	}
	n := binary.BigEndian.Uint32(b)
	claimed := 0
	if !v1 {
		if crc32.Checksum(b[:8], castagnoli) != binary.BigEndian.Uint32(b[8:]) {
			return nil, 0, "frame header checksum mismatch"
		}
		if n > 0 && n <= maxFrame {
			claimed = hdr + int(n)
		}
	}
	if n == 0 || n > maxFrame || int(n) > len(b)-hdr {
		return nil, claimed, "bad frame length"
	}
	payload := b[hdr : hdr+int(n)]
	if crc32.Checksum(payload, castagnoli) != binary.BigEndian.Uint32(b[4:]) {
		return nil, claimed, "checksum mismatch"
	}
	es, err := decodeEntries(payload, v1)
	if err != nil {
		return nil, claimed, err.Error()
	}
	return es, hdr + int(n), ""
}

func appendFrame(dst []byte, es []entry) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, frameHeader)...)
	dst = binary.AppendUvarint(dst, uint64(len(es)))
	for _, e := range es {
		dst = appendString(dst, e.group)
		dst = appendString(dst, e.topic)
		dst = binary.AppendVarint(dst, int64(e.partition))
		dst = binary.AppendVarint(dst, e.Offset.Offset)
		dst = binary.AppendVarint(dst, int64(e.LeaderEpoch))
		dst = binary.AppendVarint(dst, e.CommitTime.UnixMilli())
		var expire int64 // 0: none
		if !e.ExpireTime.IsZero() {
			expire = e.ExpireTime.UnixMilli()
		}
		dst = binary.AppendVarint(dst, expire)
		dst = appendString(dst, e.Metadata)
	}
	payload := dst[start+frameHeader:]
	binary.BigEndian.PutUint32(dst[start:], uint32(len(payload)))
	binary.BigEndian.PutUint32(dst[start+4:], crc32.Checksum(payload, castagnoli))
	binary.BigEndian.PutUint32(dst[start+8:], crc32.Checksum(dst[start:start+8], castagnoli))
	return dst
}

func appendString(dst []byte, s string) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(s))), s...)
}

var errShort = errors.New("truncated entry")

func decodeEntries(b []byte, v1 bool) ([]entry, error) {
	r := bytes.NewReader(b)
	n, err := binary.ReadUvarint(r)
	if err != nil || n > uint64(len(b)) {
		return nil, errShort
	}
	es := make([]entry, 0, n)
	str := func() (string, error) {
		l, err := binary.ReadUvarint(r)
		if err != nil || l > uint64(r.Len()) {
			return "", errShort
		}
		s := make([]byte, l)
		_, _ = r.Read(s)
		return string(s), nil
	}
	for range n {
		var e entry
		var p, off, epoch, ts, expire int64
		var errs [8]error
		e.group, errs[0] = str()
		e.topic, errs[1] = str()
		p, errs[2] = binary.ReadVarint(r)
		off, errs[3] = binary.ReadVarint(r)
		epoch, errs[4] = binary.ReadVarint(r)
		ts, errs[5] = binary.ReadVarint(r)
		if !v1 {
			expire, errs[6] = binary.ReadVarint(r)
		}
		e.Metadata, errs[7] = str()
		if errors.Join(errs[:]...) != nil {
			return nil, errShort
		}
		e.partition, e.Offset.Offset, e.LeaderEpoch, e.CommitTime = int32(p), off, int32(epoch), time.UnixMilli(ts)
		if expire != 0 {
			e.ExpireTime = time.UnixMilli(expire)
		}
		es = append(es, e)
	}
	if r.Len() != 0 {
		return nil, errors.New("trailing bytes")
	}
	return es, nil
}

// apply makes one durable entry visible. s.mu is held (or s is not shared
// yet).
func (s *store) apply(e entry) {
	g := s.offsets[e.group]
	k := tp{e.topic, e.partition}
	_, had := g[k]
	if e.tombstone() {
		if had {
			delete(g, k)
			s.live--
			if len(g) == 0 {
				delete(s.offsets, e.group)
			}
		}
		return
	}
	if g == nil {
		g = map[tp]Offset{}
		s.offsets[e.group] = g
	}
	g[k] = e.Offset
	if !had {
		s.live++
	}
}

// enqueue queues a change; the returned wait makes it durable (sharing the
// write and fsync with the changes queued beside it) and applied, or
// reports why it is not. The order of enqueues is the order of the log.
func (s *store) enqueue(es []entry) func() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		err := s.failed
		return func() error { return err }
	}
	s.queued = append(s.queued, es)
	s.buf = appendFrame(s.buf, es)
	seq := s.nextSeq
	s.nextSeq++
	return func() error { return s.wait(seq) }
}

// wait returns once change seq is durable and applied, or failed. The
// first waiter to get syncMu writes everything queued so far, so the
// others usually find their change done when they get it.
func (s *store) wait(seq uint64) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	if seq < s.synced {
		err := s.replError(seq)
		s.mu.Unlock()
		return err
	}
	if s.failed != nil {
		err := s.failed
		s.mu.Unlock()
		return err
	}
	from := s.synced
	queued, buf, upto := s.queued, s.buf, s.nextSeq
	s.queued, s.buf, s.writing = nil, nil, queued
	s.mu.Unlock()

	start := time.Now()
	_, err := s.f.Write(buf)
	if err == nil {
		err = s.f.Sync()
	}
	s.syncDur.Observe(time.Since(start).Seconds())
	s.mu.Lock()
	s.writing = nil
	if err != nil {
		s.failed = fmt.Errorf("%w: write %s: %v", ErrUnavailable, filepath.Join(s.dir, offsetsFile), err)
		s.log.Error("committed-offset log write failed; commits are refused until a restart", "err", err)
		s.mu.Unlock()
		return s.failed
	}
	n := 0
	for _, es := range queued {
		for _, e := range es {
			s.apply(e)
		}
		n += len(es)
	}
	s.synced = upto
	s.entries += n
	rewrite := s.entries >= s.compact && s.entries >= 4*s.live
	s.mu.Unlock()
	if s.replicate != nil {
		var out []OffsetOf
		for _, es := range queued {
			for _, e := range es {
				out = append(out, OffsetOf{Group: e.group, PartitionOffset: PartitionOffset{Topic: e.topic, Partition: e.partition, Offset: e.Offset}})
			}
		}
		if err := s.replicate(out); err != nil {
			s.mu.Lock()
			s.failedRepl = append(s.failedRepl, replFailure{from: from, to: upto, err: err})
			if len(s.failedRepl) > maxReplFailures {
				s.failedRepl = s.failedRepl[1:]
			}
			s.mu.Unlock()
			return err
		}
	}
	if rewrite {
		if err := s.rewrite(); err != nil {
			// The appended file is still whole and current: only its size
			// suffers. The next trigger tries again.
			s.log.Warn("rewriting the committed-offset log failed", "err", err)
		}
	}
	return nil
}

// replError is the replication error of change seq's batch, nil if it
// was replicated (or nothing replicates). s.mu is held.
func (s *store) replError(seq uint64) error {
	for _, f := range s.failedRepl {
		if seq >= f.from && seq < f.to {
			return f.err
		}
	}
	return nil
}

// load replaces every offset with what read returns (the cluster's copy,
// for a node that becomes the coordinator), durably, without replicating
// them. read is called once every replication in flight has ended (under
// syncMu), so a batch acknowledged as replicated is in the copy.
func (s *store) load(read func() []OffsetOf) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	offsets := read()
	s.mu.Lock()
	if s.failed != nil {
		err := s.failed
		s.mu.Unlock()
		return err
	}
	if s.nextSeq > s.synced {
		// Changes queued before the load, not written yet: from an earlier
		// time in the seat; they fail rather than overwrite the loaded copy.
		s.failedRepl = append(s.failedRepl, replFailure{from: s.synced, to: s.nextSeq, err: ErrNotCoordinator})
		s.queued, s.buf, s.synced = nil, nil, s.nextSeq
	}
	s.offsets, s.live = map[string]map[tp]Offset{}, 0
	for _, o := range offsets {
		s.apply(entry{group: o.Group, topic: o.Topic, partition: o.Partition, Offset: o.Offset})
	}
	s.mu.Unlock()
	return s.rewrite()
}

// snapshot encodes the live offsets as a whole offset log (magic, then one
// frame per group) and returns the number of durable changes it reflects
// (synced: it grows with every change made durable). s.mu is held.
func (s *store) snapshot() (data []byte, live int, changes uint64) {
	data = []byte(fileMagic)
	for g, ps := range s.offsets {
		es := make([]entry, 0, len(ps))
		for k, o := range ps {
			es = append(es, entry{group: g, topic: k.topic, partition: k.partition, Offset: o})
		}
		data = appendFrame(data, es)
		live += len(es)
	}
	return data, live, s.synced
}

// rewrite replaces the file with one frame per group of the live offsets.
// syncMu is held, so nothing is written meanwhile; enqueues go on.
func (s *store) rewrite() error {
	s.mu.Lock()
	data, live, _ := s.snapshot()
	s.mu.Unlock()
	path := filepath.Join(s.dir, offsetsFile)
	if err := fileutil.WriteFileAtomic(path, data, 0o644); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		// The old descriptor names the replaced file: appends to it would
		// be lost, so stop acknowledging until a restart.
		s.mu.Lock()
		s.failed = fmt.Errorf("%w: reopen %s: %v", ErrUnavailable, path, err)
		s.mu.Unlock()
		return err
	}
	s.f.Close()
	s.f = f
	s.entries = live
	return nil
}

// get returns a group's applied offsets (a copy).
func (s *store) get(group string) map[tp]Offset {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[tp]Offset, len(s.offsets[group]))
	for k, o := range s.offsets[group] {
		out[k] = o
	}
	return out
}

// groupIDs lists the groups with offsets.
func (s *store) groupIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.offsets))
	for g := range s.offsets {
		out = append(out, g)
	}
	return out
}

func (s *store) hasGroup(group string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.offsets[group]) > 0
}

// groupTombstones lists deletions of every offset of a group.
func (s *store) groupTombstones(group string) []entry {
	return s.tombstones(func(g, _ string) bool { return g == group })
}

// all lists every durable offset.
func (s *store) all() []OffsetOf {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []OffsetOf
	for g, ps := range s.offsets {
		for k, o := range ps {
			out = append(out, OffsetOf{Group: g, PartitionOffset: PartitionOffset{Topic: k.topic, Partition: k.partition, Offset: o}})
		}
	}
	return out
}

// topicTombstones lists deletions of the offsets, in every group, of the
// topics keep refuses.
func (s *store) topicTombstones(keep func(topic string) bool) []entry {
	return s.tombstones(func(_, t string) bool { return !keep(t) })
}

// tombstones lists deletions of the offsets drop selects: those applied
// and those enqueued but not yet durable, which the deletions (enqueued
// after them) must delete too. Deleting an offset twice is harmless.
func (s *store) tombstones(drop func(group, topic string) bool) []entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []entry
	add := func(g string, k tp) {
		if drop(g, k.topic) {
			out = append(out, entry{group: g, topic: k.topic, partition: k.partition, Offset: Offset{Offset: -1}})
		}
	}
	for g, ps := range s.offsets {
		for k := range ps {
			add(g, k)
		}
	}
	type key struct {
		group string
		tp
	}
	seen := map[key]bool{}
	for _, batches := range [][][]entry{s.writing, s.queued} {
		for _, es := range batches {
			for _, e := range es {
				k := key{e.group, tp{e.topic, e.partition}}
				if !e.tombstone() && !seen[k] && !s.has(e.group, k.tp) {
					seen[k] = true
					add(e.group, k.tp)
				}
			}
		}
	}
	return out
}

// expired lists deletions of the offsets that have expired at now:
// those of the groups since says may expire (and from when: the group
// became empty), past their ExpireTime if set, else retention after the
// later of their commit and since. Offsets with a change on its way are
// left: the change is newer.
func (s *store) expired(now time.Time, retention time.Duration, since func(group string) (time.Time, bool)) []entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	onTheirWay := map[string]map[tp]bool{}
	for _, batches := range [][][]entry{s.writing, s.queued} {
		for _, es := range batches {
			for _, e := range es {
				if onTheirWay[e.group] == nil {
					onTheirWay[e.group] = map[tp]bool{}
				}
				onTheirWay[e.group][tp{e.topic, e.partition}] = true
			}
		}
	}
	var out []entry
	for g, ps := range s.offsets {
		from, ok := since(g)
		if !ok {
			continue
		}
		for k, o := range ps {
			expire := o.ExpireTime
			if expire.IsZero() {
				expire = o.CommitTime
				if from.After(expire) {
					expire = from
				}
				expire = expire.Add(retention)
			}
			if now.Before(expire) || onTheirWay[g][k] {
				continue
			}
			out = append(out, entry{group: g, topic: k.topic, partition: k.partition, Offset: Offset{Offset: -1}})
		}
	}
	return out
}

// has says whether a group has an applied offset of a partition. s.mu is
// held.
func (s *store) has(group string, k tp) bool {
	_, ok := s.offsets[group][k]
	return ok
}

// pending lists the partitions of a group's offsets that are applied or
// on their way (enqueued, not yet durable).
func (s *store) pending(group string) map[tp]bool {
	out := map[tp]bool{}
	for _, e := range s.groupTombstones(group) {
		out[tp{e.topic, e.partition}] = true
	}
	return out
}

func (s *store) close() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	if s.failed == nil {
		s.failed = fmt.Errorf("%w: closed", ErrUnavailable)
	}
	s.mu.Unlock()
	return s.f.Close()
}
