package hot

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/fileutil"
)

// Leader epochs. Every batch carries the partition leader epoch it was
// appended under, and epochs never go down along the log. The epoch cache
// lists, per epoch, the offset its first batch has (Kafka's
// leader-epoch-checkpoint), so a replica can ask "where does epoch e end?"
// (OffsetForLeaderEpoch) without searching the log, and a follower of a
// new leader can truncate to the epoch boundary the leader gives it.
//
// The file (epochCheckpointFile) is Kafka's format, text:
//
//	0                version
//	2                number of entries
//	0 0              epoch, start offset
//	3 1200
//
// It is written atomically (temp file, fsync, rename, fsync dir) whenever
// the list changes: SetLeaderEpoch (the new epoch starts at the log end),
// an append whose batch names a newer epoch (AppendReplica), TruncateTo.
// The write happens outside the log lock (appends and reads need it) and
// before the call returns. A crash between a batch's write and the file's
// can leave the file behind the batches, so Open checks the newest batch's
// epoch and, if the file does not know it, finds the missing epochs from
// the batch headers. A file missing altogether (a data directory from
// before the cache) is rebuilt the same way; the headers are cheap to ask,
// since epochs never go down along the log (scanEpochs). Entries past the
// log end (a crash lost their batches) are dropped at Open. A file the
// batches contradict (an entry inside the log whose offset does not start
// a batch of its epoch, or a newest batch the file gives another epoch) is
// not trusted: Open logs a warning and rebuilds it from the headers; a
// consistent file costs one index lookup per entry, no full scan.

const epochCheckpointFile = "leader-epoch-checkpoint"

// EpochEntry says that the batches of Epoch start at StartOffset.
type EpochEntry struct {
	Epoch       int32
	StartOffset int64
}

// epochCache is the list of entries, ascending in both fields. Guarded by
// the log lock.
type epochCache struct {
	entries []EpochEntry
}

func (c *epochCache) latest() (EpochEntry, bool) {
	if len(c.entries) == 0 {
		return EpochEntry{}, false
	}
	return c.entries[len(c.entries)-1], true
}

// assign records that epoch starts at start, as Kafka's cache does: an
// epoch already latest, or older than the latest, changes nothing; a newer
// one first drops entries starting at or after start (an epoch whose
// leader appended nothing). Negative epochs (batches from before epochs)
// are not recorded. It reports whether the list changed.
func (c *epochCache) assign(epoch int32, start int64) bool {
	if epoch < 0 {
		return false
	}
	if l, ok := c.latest(); ok && epoch <= l.Epoch {
		return false
	}
	c.entries = slices.DeleteFunc(c.entries, func(e EpochEntry) bool { return e.StartOffset >= start })
	c.entries = append(c.entries, EpochEntry{Epoch: epoch, StartOffset: start})
	return true
}

// truncateFromEnd drops the entries of epochs that start at or after end
// (their batches are gone). It reports whether the list changed.
func (c *epochCache) truncateFromEnd(end int64) bool {
	n := len(c.entries)
	c.entries = slices.DeleteFunc(c.entries, func(e EpochEntry) bool { return e.StartOffset >= end })
	return len(c.entries) != n
}

// endOffsetFor is Kafka's LeaderEpochFileCache.endOffsetFor: for the
// latest epoch, the log end; for an older one, the start of the first
// epoch above it, answered with the largest known epoch at or below it (or
// the requested epoch itself if it is below every known one); for a newer
// or negative one, or with no entries, (-1, -1).
func (c *epochCache) endOffsetFor(epoch int32, logEnd int64) (int32, int64) {
	l, ok := c.latest()
	switch {
	case epoch < 0 || !ok:
		return -1, -1
	case epoch == l.Epoch:
		return epoch, logEnd
	}
	i, _ := slices.BinarySearchFunc(c.entries, epoch+1, func(e EpochEntry, t int32) int { return int(e.Epoch) - int(t) })
	if i == len(c.entries) {
		return -1, -1 // newer than any known epoch
	}
	higher := c.entries[i]
	if i == 0 {
		return epoch, higher.StartOffset
	}
	return c.entries[i-1].Epoch, higher.StartOffset
}

func (c *epochCache) encode() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "0\n%d\n", len(c.entries))
	for _, e := range c.entries {
		fmt.Fprintf(&b, "%d %d\n", e.Epoch, e.StartOffset)
	}
	return b.Bytes()
}

// readEpochCheckpoint parses the file; it refuses anything that is not a
// well-formed, ascending list (Open then rebuilds from the headers).
func readEpochCheckpoint(path string) ([]EpochEntry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	line := func() (string, bool) {
		if !sc.Scan() {
			return "", false
		}
		return strings.TrimSpace(sc.Text()), true
	}
	name := filepath.Base(path)
	if v, ok := line(); !ok || v != "0" {
		return nil, fmt.Errorf("%s: version %q, this build reads 0", name, v)
	}
	ns, _ := line()
	n, err := strconv.Atoi(ns)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("%s: entry count %q", name, ns)
	}
	out := make([]EpochEntry, 0, n)
	for i := range n {
		s, ok := line()
		f := strings.Fields(s)
		if !ok || len(f) != 2 {
			return nil, fmt.Errorf("%s: entry %d of %d missing or malformed: %q", name, i, n, s)
		}
		e, err1 := strconv.ParseInt(f[0], 10, 32)
		o, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil || e < 0 || o < 0 {
			return nil, fmt.Errorf("%s: entry %d malformed: %q", name, i, s)
		}
		if k := len(out); k > 0 && (int32(e) <= out[k-1].Epoch || o < out[k-1].StartOffset) {
			return nil, fmt.Errorf("%s: entry %d (%s) does not follow entry %d", name, i, s, k-1)
		}
		out = append(out, EpochEntry{Epoch: int32(e), StartOffset: o})
	}
	if s, ok := line(); ok && s != "" {
		return nil, fmt.Errorf("%s: %d entries announced, more follow", name, n)
	}
	return out, nil
}

// loadEpochs builds the cache at Open, once the segments are recovered:
// from the checkpoint (dropping entries past the log end), completed or
// rebuilt from the batch headers, then the log's epoch (Options.LeaderEpoch,
// raised to the newest one the log holds) assigned at the log end. The
// file is rewritten if that changed it.
func (l *Log) loadEpochs() error {
	path := filepath.Join(l.dir, epochCheckpointFile)
	entries, err := readEpochCheckpoint(path)
	from := 0 // first segment whose headers must be read
	switch {
	case err == nil:
		l.epochs.entries = entries
		if e, ok := l.epochs.latest(); ok {
			from = max(0, slices.IndexFunc(l.segments, func(s *segment) bool { return s.next > e.StartOffset }))
		}
	case os.IsNotExist(err):
	default:
		l.opts.Logger.Warn("unreadable leader epoch checkpoint, rebuilding it from the batch headers", "err", err)
	}
	readErr := err
	changed := err != nil || l.epochs.truncateFromEnd(l.next+1)
	last, ok, err := l.lastHeader()
	if err != nil {
		return err
	}
	if readErr == nil && len(l.epochs.entries) > 0 {
		// A checkpoint the batches contradict (a file copied from another
		// replica, or edited) would answer OffsetForLeaderEpoch wrongly and
		// make a follower truncate acknowledged records: it is rebuilt.
		reason, err := l.epochsContradicted(last, ok)
		if err != nil {
			return err
		}
		if reason != "" {
			l.opts.Logger.Warn("leader epoch checkpoint disagrees with the batch headers, rebuilding it from them",
				"reason", reason, "entries", fmt.Sprint(l.epochs.entries))
			l.epochs.entries, from, changed = nil, 0, true
		}
	}
	if lat, has := l.epochs.latest(); ok && (!has || last.PartitionLeaderEpoch > lat.Epoch) {
		// Batches of epochs the file does not name: find where they start.
		n, err := l.scanEpochs(l.segments[from:], last.PartitionLeaderEpoch)
		if err != nil {
			return err
		}
		l.opts.Logger.Info("rebuilt leader epochs from batch headers", "segments", len(l.segments)-from, "headers_read", n, "epochs", len(l.epochs.entries))
		changed = true
	}
	if lat, has := l.epochs.latest(); has && lat.Epoch > l.opts.LeaderEpoch {
		l.opts.LeaderEpoch = lat.Epoch // epochs never go back
	}
	if l.epochs.assign(l.opts.LeaderEpoch, l.next) {
		changed = true
	}
	if changed {
		return l.writeEpochs(l.epochs.encode())
	}
	return nil
}

// epochsContradicted checks the checkpoint's entries against the batches
// cheaply: each entry that starts inside the local log must start at a
// batch of its epoch (an index lookup and at most an index interval of
// headers each), and the newest batch (last, if ok) must carry the epoch
// the cache gives its offset, unless it is newer than every entry (a
// crash between a batch's write and the checkpoint's: completed from the
// headers by the caller). It returns why they disagree, or "".
func (l *Log) epochsContradicted(last batch.Header, ok bool) (string, error) {
	start := l.segments[0].base
	for _, e := range l.epochs.entries {
		if e.StartOffset < start || e.StartOffset >= l.next {
			continue // retention deleted its start, or nothing appended yet
		}
		s := l.segmentForLocked(e.StartOffset)
		pos, err := s.scanFrom(int64(s.idx.lookup(uint32(e.StartOffset-s.base))), e.StartOffset, s.size)
		if err != nil {
			return "", err
		}
		var hdr [batch.HeaderSize]byte
		if pos >= s.size {
			return fmt.Sprintf("no batch at offset %d, where epoch %d starts", e.StartOffset, e.Epoch), nil
		}
		if _, err := s.f.ReadAt(hdr[:], pos); err != nil {
			return "", fmt.Errorf("hot: read batch header of %s: %w", s.logPath(), err)
		}
		h, _ := batch.ParseHeader(hdr[:])
		if h.BaseOffset != e.StartOffset || h.PartitionLeaderEpoch != e.Epoch {
			return fmt.Sprintf("epoch %d starts at offset %d, but the batch there starts at %d with epoch %d",
				e.Epoch, e.StartOffset, h.BaseOffset, h.PartitionLeaderEpoch), nil
		}
	}
	if lat, _ := l.epochs.latest(); ok && last.PartitionLeaderEpoch <= lat.Epoch {
		covering := int32(-1)
		for _, e := range l.epochs.entries {
			if e.StartOffset <= last.BaseOffset {
				covering = e.Epoch
			}
		}
		if covering != last.PartitionLeaderEpoch {
			return fmt.Sprintf("the newest batch, at offset %d, has epoch %d, the checkpoint gives it epoch %d",
				last.BaseOffset, last.PartitionLeaderEpoch, covering), nil
		}
	}
	return "", nil
}

// lastHeader is the header of the newest batch in the log (ok false if
// the log holds none). Called at Open or under the log lock.
func (l *Log) lastHeader() (batch.Header, bool, error) {
	for i := len(l.segments) - 1; i >= 0; i-- {
		s := l.segments[i]
		if s.size == 0 {
			continue
		}
		from := int64(0)
		if n := len(s.idx.offsets); n > 0 {
			from = int64(s.idx.offsets[n-1].pos)
		}
		h, err := s.lastHeaderFrom(from)
		return h, err == nil, err
	}
	return batch.Header{}, false, nil
}

// lastHeaderFrom walks the headers from pos (a batch start) to the end of
// the segment's valid bytes and returns the last.
func (s *segment) lastHeaderFrom(pos int64) (batch.Header, error) {
	sc := newScanner(s.f, pos, s.size, lookupBufSize)
	var last batch.Header
	for {
		h, _, err := sc.next(false)
		if err == io.EOF {
			return last, nil
		}
		if err != nil {
			return last, fmt.Errorf("hot: %s: %w", s.logPath(), err)
		}
		last = h
	}
}

// scanEpochs assigns the epochs of the batches in segs, whose newest batch
// has epoch endEpoch. Epochs never go down along the log, so a segment
// whose first batch already has the epoch of the next segment's first
// batch (or endEpoch) holds that one epoch: one header read. Only a
// segment in which the epoch changes is walked header by header. It
// returns the headers read.
func (l *Log) scanEpochs(segs []*segment, endEpoch int32) (int, error) {
	firsts := make([]int32, len(segs))
	read := 0
	for i, s := range segs {
		firsts[i] = endEpoch
		if s.size == 0 {
			continue
		}
		var hdr [batch.HeaderSize]byte
		if _, err := s.f.ReadAt(hdr[:], 0); err != nil {
			return read, fmt.Errorf("hot: read first batch header of %s: %w", s.logPath(), err)
		}
		h, err := batch.ParseHeader(hdr[:])
		if err != nil {
			// Not epoch 0: a wrong entry would make a follower truncate.
			return read, fmt.Errorf("hot: first batch header of %s: %w", s.logPath(), err)
		}
		firsts[i] = h.PartitionLeaderEpoch
		read++
	}
	for i, s := range segs {
		if s.size == 0 {
			continue
		}
		next := endEpoch
		if i+1 < len(segs) && segs[i+1].size > 0 {
			next = firsts[i+1]
		}
		if firsts[i] == next {
			l.epochs.assign(firsts[i], s.base)
			continue
		}
		n, err := s.walkHeaders(func(h batch.Header) { l.epochs.assign(h.PartitionLeaderEpoch, h.BaseOffset) })
		read += n
		if err != nil {
			return read, err
		}
	}
	return read, nil
}

// writeEpochs writes the checkpoint. Its callers hold epochFileMu (or run
// at Open, before the log is shared), never the log lock (appends and reads
// need it) across the fsync, and write the cache as it is once they hold
// epochFileMu, so the last writer leaves the newest list.
func (l *Log) writeEpochs(data []byte) error {
	if err := fileutil.WriteFileAtomic(filepath.Join(l.dir, epochCheckpointFile), data, 0o644); err != nil {
		return fmt.Errorf("hot: write leader epoch checkpoint: %w", err)
	}
	return nil
}

// persistEpochs writes the current cache to the checkpoint, outside the
// log lock.
func (l *Log) persistEpochs() error {
	l.epochFileMu.Lock()
	defer l.epochFileMu.Unlock()
	l.mu.RLock()
	data := l.epochs.encode()
	l.mu.RUnlock()
	return l.writeEpochs(data)
}

// EpochEntries lists the leader epochs the log knows, oldest first: each
// epoch with the offset of its first batch (or, for an epoch that has
// appended nothing yet, the log end when it began).
func (l *Log) EpochEntries() []EpochEntry {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return slices.Clone(l.epochs.entries)
}

// EndOffsetForEpoch answers OffsetForLeaderEpoch as Kafka's leader epoch
// cache does: for the log's latest epoch, (epoch, log end offset); for an
// older epoch, the largest known epoch at or below it and the start offset
// of the first epoch above it — the offset a follower truncates to; for an
// epoch below every known one, (epoch, start of the first known epoch);
// for an epoch above every known one, or a negative one, (-1, -1)
// (UNDEFINED). The log end is the next offset to be written, fsynced or
// not.
func (l *Log) EndOffsetForEpoch(epoch int32) (int32, int64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.epochs.endOffsetFor(epoch, l.next)
}
