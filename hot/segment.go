package hot

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tierlog/tierlog/internal/batch"
)

// SegmentInfo describes a segment to callers outside the package (the
// tiering daemon, retention, status).
type SegmentInfo struct {
	BaseOffset   int64 // first offset
	NextOffset   int64 // offset after the last batch
	Size         int64 // bytes in the .log file
	MaxTimestamp int64 // largest batch max timestamp, Unix ms; -1 if empty
	// Sealed: rolled, fsynced and its index files written. A sealed segment
	// never changes again, so it can be uploaded.
	Sealed bool
	// Path is the .log file.
	Path string
}

// segment is one .log file with its in-memory sparse indexes. Fields are
// guarded by the owning Log's mutex, except that reads of the file below the
// published size need no lock.
type segment struct {
	base       int64
	prefix     string // directory + 20-digit base offset
	f          File
	size       int64
	next       int64
	maxTs      int64
	idx        indexes
	sinceIndex int
	created    time.Time
	rolled     bool // no more appends
	sealed     bool // rolled and fsynced, index files written
	// durable: rolled and fsynced by sealing, so every byte of it is on disk
	// and it is off the log's flush list for good.
	durable bool
	// deleted is set (under the log lock) when retention takes the segment
	// off the log, before its file is closed: a reader whose read of it
	// failed then knows it lost a race and retries at the new start.
	deleted atomic.Bool
	// truncations counts the times TruncateTo cut the segment (under the
	// log lock, before the file changes): a reader that took its bounds
	// before a cut sees the count move and reads again.
	truncations atomic.Uint64
	// producers is the log's producer state at the segment's end, taken
	// when it rolled and written as a snapshot when it seals.
	producers frozenProducers
}

func segmentPrefix(dir string, base int64) string {
	return filepath.Join(dir, fmt.Sprintf("%020d", base))
}

// parseSegmentName returns the base offset of a "<20 digits>.log" name.
func parseSegmentName(name string) (int64, bool) {
	s, ok := strings.CutSuffix(name, ".log")
	if !ok || len(s) != 20 {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

func (s *segment) logPath() string { return s.prefix + ".log" }

func (s *segment) info() SegmentInfo {
	return SegmentInfo{BaseOffset: s.base, NextOffset: s.next, Size: s.size, MaxTimestamp: s.maxTs, Sealed: s.sealed, Path: s.logPath()}
}

// append writes one validated batch whose base offset is already assigned.
// A failed write may leave a partial batch at the tail; the caller fails
// the log, and recovery truncates it on reopen.
func (s *segment) append(b []byte, h batch.Header, indexInterval int) error {
	n, err := s.f.Write(b)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("hot: write %s at position %d: %w", s.logPath(), s.size, err)
	}
	s.indexBatch(h, s.size, indexInterval)
	return nil
}

// scanner walks the batches of a segment file through a buffer.
type scanner struct {
	r   *bufio.Reader
	pos int64
	end int64
	buf []byte
}

// newScanner reads [from, to) through a buffer of bufSize bytes: small for
// index lookups, which walk at most an index interval of headers, large for
// recovery scans, which read everything.
func newScanner(f io.ReaderAt, from, to int64, bufSize int) *scanner {
	return &scanner{r: bufio.NewReaderSize(io.NewSectionReader(f, from, to-from), bufSize), pos: from, end: to}
}

const (
	lookupBufSize = 8 << 10
	scanBufSize   = 1 << 20
)

// next returns the header of the batch at the scanner position and, if full,
// the whole batch (valid until the next call). It returns io.EOF at the end,
// batch.ErrShortBatch (wrapped) for a batch cut off by the end.
func (sc *scanner) next(full bool) (batch.Header, []byte, error) {
	if sc.pos >= sc.end {
		return batch.Header{}, nil, io.EOF
	}
	hdr, err := sc.r.Peek(batch.HeaderSize)
	if err != nil && !errors.Is(err, io.EOF) {
		// A read that failed (EIO, a closed file) is not a torn tail:
		// calling it a short batch made recovery truncate acknowledged
		// records after one failed read, and readers report bad input.
		return batch.Header{}, nil, fmt.Errorf("hot: read at position %d: %w", sc.pos, err)
	}
	if err != nil {
		return batch.Header{}, nil, fmt.Errorf("%w: %d bytes left at position %d", batch.ErrShortBatch, len(hdr), sc.pos)
	}
	h, err := batch.ParseHeader(hdr)
	if err != nil {
		return h, nil, err
	}
	if h.Length < batch.HeaderSize-batch.LengthFieldEnd || h.Magic != batch.Magic {
		_, err := batch.Peek(hdr) // for its error message
		return h, nil, err
	}
	size := int64(h.Size())
	if sc.pos+size > sc.end {
		return h, nil, fmt.Errorf("%w: batch of %d bytes at position %d, file ends at %d", batch.ErrShortBatch, size, sc.pos, sc.end)
	}
	var b []byte
	if full {
		if cap(sc.buf) < int(size) {
			sc.buf = make([]byte, size)
		}
		b = sc.buf[:size]
		if _, err := io.ReadFull(sc.r, b); err != nil {
			return h, nil, err
		}
	} else if _, err := sc.r.Discard(int(size)); err != nil {
		return h, nil, err
	}
	sc.pos += size
	return h, b, nil
}

// scanFrom returns the file position of the batch containing offset,
// scanning forward from pos (found with idx.lookup under the log lock), or
// limit if offset is past the last batch below limit.
func (s *segment) scanFrom(pos, offset, limit int64) (int64, error) {
	sc := newScanner(s.f, pos, limit, lookupBufSize)
	for {
		start := sc.pos
		h, _, err := sc.next(false)
		if err == io.EOF {
			return limit, nil
		}
		if err != nil {
			return 0, fmt.Errorf("hot: %s: %w", s.logPath(), err)
		}
		if h.NextOffset() > offset {
			return start, nil
		}
	}
}

// timeScanStart returns where a forward scan for the first batch with max
// timestamp >= ts may start. Call under the log lock.
func (s *segment) timeScanStart(ts int64) int64 {
	if rel, ok := s.idx.lookupTime(ts); ok {
		return int64(s.idx.lookup(rel))
	}
	return 0
}

// firstAtOrAfterTime returns the base offset of the first batch from pos
// whose max timestamp is >= ts, or -1 if none below limit.
func (s *segment) firstAtOrAfterTime(pos, ts, limit int64) (int64, error) {
	sc := newScanner(s.f, pos, limit, lookupBufSize)
	for {
		h, _, err := sc.next(false)
		if err == io.EOF {
			return -1, nil
		}
		if err != nil {
			return 0, fmt.Errorf("hot: %s: %w", s.logPath(), err)
		}
		if h.MaxTimestamp >= ts {
			return h.BaseOffset, nil
		}
	}
}

// read returns whole batches from pos up to about maxBytes (at least one
// batch, unless it reaches maxNext), never past limit nor past a batch
// that ends after offset maxNext (a high watermark), and how many batches
// that is.
func (s *segment) read(pos, limit int64, maxBytes int, buf []byte, maxNext int64) ([]byte, int, error) {
	if pos >= limit {
		return nil, 0, nil
	}
	buf = grow(buf, min(int64(max(maxBytes, batch.HeaderSize)), limit-pos))
	if _, err := s.f.ReadAt(buf, pos); err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, fmt.Errorf("hot: read %s at %d: %w", s.logPath(), pos, err)
	}
	h, err := batch.ParseHeader(buf)
	if err != nil {
		return nil, 0, fmt.Errorf("hot: read %s at %d: %w", s.logPath(), pos, err)
	}
	if h.Size() > len(buf) {
		// The first batch is larger than maxBytes: return it whole, as
		// Kafka does, so a consumer always makes progress.
		buf = grow(buf, min(int64(h.Size()), limit-pos))
		if _, err := s.f.ReadAt(buf, pos); err != nil && !errors.Is(err, io.EOF) {
			return nil, 0, fmt.Errorf("hot: read %s at %d: %w", s.logPath(), pos, err)
		}
	}
	// Trim to whole batches below maxNext.
	end, n := 0, 0
	for end+batch.HeaderSize <= len(buf) {
		h, err := batch.ParseHeader(buf[end:])
		if err != nil || end+h.Size() > len(buf) || h.NextOffset() > maxNext {
			break
		}
		end += h.Size()
		n++
	}
	return buf[:end], n, nil
}

// grow returns buf resized to n bytes, reusing its memory when it is large
// enough.
func grow(buf []byte, n int64) []byte {
	if int64(cap(buf)) >= n {
		return buf[:n]
	}
	return make([]byte, n)
}

// recoverResult is what a scan of a segment established.
type recoverResult struct {
	validEnd int64 // position after the last valid batch
	fileSize int64
	next     int64
	cause    error // why the scan stopped before the file end, if it did
}

// scanRecover validates every batch from the start of the segment, rebuilds
// the in-memory indexes and stops at the first torn, corrupt or
// out-of-sequence batch.
func (s *segment) scanRecover(indexInterval int) (recoverResult, error) {
	st, err := s.f.Stat()
	if err != nil {
		return recoverResult{}, err
	}
	res := recoverResult{fileSize: st.Size(), next: s.base}
	s.idx = indexes{}
	s.size, s.next, s.maxTs, s.sinceIndex = 0, s.base, -1, 0
	sc := newScanner(s.f, 0, st.Size(), scanBufSize)
	for {
		pos := sc.pos
		_, b, err := sc.next(true)
		if err == io.EOF {
			break
		}
		if err == nil {
			var h batch.Header
			h, err = batch.Validate(b)
			if err == nil && h.BaseOffset != s.next {
				err = fmt.Errorf("%w: batch base offset %d, expected %d", batch.ErrCorrupt, h.BaseOffset, s.next)
			}
			if err == nil {
				s.indexBatch(h, pos, indexInterval)
				continue
			}
		}
		if !errors.Is(err, batch.ErrShortBatch) && !errors.Is(err, batch.ErrCorrupt) {
			return res, fmt.Errorf("hot: scan %s at %d: %w", s.logPath(), pos, err)
		}
		res.cause = fmt.Errorf("hot: segment %s: position %d: %w", filepath.Base(s.logPath()), pos, err)
		break
	}
	res.validEnd, res.next = s.size, s.next
	return res, nil
}

// indexBatch accounts for a batch already in the file (recovery).
func (s *segment) indexBatch(h batch.Header, pos int64, indexInterval int) {
	if s.sinceIndex >= indexInterval || len(s.idx.offsets) == 0 {
		rel := uint32(h.BaseOffset - s.base)
		s.idx.offsets = append(s.idx.offsets, offsetEntry{rel: rel, pos: uint32(pos)})
		if n := len(s.idx.times); pos > 0 && (n == 0 || s.idx.times[n-1].ts < s.maxTs) {
			s.idx.times = append(s.idx.times, timeEntry{ts: s.maxTs, rel: rel})
		}
		s.sinceIndex = 0
	}
	s.size = pos + int64(h.Size())
	s.sinceIndex += h.Size()
	s.next = h.NextOffset()
	s.maxTs = max(s.maxTs, h.MaxTimestamp)
}

func (s *segment) close() error { return s.f.Close() }

// remove closes the segment and deletes its files.
func (s *segment) remove() error {
	s.f.Close()
	return removeSegmentFiles(s.prefix)
}

func removeSegmentFiles(prefix string) error {
	var errs []error
	// The .log last: index files without it are ignored, while a .log
	// left with stale index files would be checked against them.
	for _, ext := range []string{".index", ".timeindex", ".log"} {
		if err := os.Remove(prefix + ext); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// closeIndex adds the final time-index entry: the segment's max timestamp at
// its next offset. A reopened segment takes its next offset and max
// timestamp from this entry instead of scanning.
func (s *segment) closeIndex() {
	rel := uint32(s.next - s.base)
	if n := len(s.idx.times); n > 0 && s.idx.times[n-1].rel == rel {
		return
	}
	s.idx.times = append(s.idx.times, timeEntry{ts: s.maxTs, rel: rel})
}

// loadIndexes trusts the index files of a segment only if they describe the
// file: the final time entry gives the next offset, and walking the batch
// headers from the last offset entry must end exactly at the file's end at
// that offset. Anything else means a missing or stale index.
func (s *segment) loadIndexes() error {
	st, err := s.f.Stat()
	if err != nil {
		return err
	}
	x, err := readIndexes(s.prefix, st.Size())
	if err != nil {
		return err
	}
	if len(x.offsets) == 0 || len(x.times) == 0 || x.offsets[0].pos != 0 {
		return errors.New("index is empty")
	}
	last := x.times[len(x.times)-1]
	next := s.base + int64(last.rel)
	sc := newScanner(s.f, int64(x.offsets[len(x.offsets)-1].pos), st.Size(), lookupBufSize)
	first := true
	var h batch.Header
	for {
		h2, _, err := sc.next(false)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if first && h2.BaseOffset != s.base+int64(x.offsets[len(x.offsets)-1].rel) {
			return fmt.Errorf("last index entry names offset %d, the batch there has %d", s.base+int64(x.offsets[len(x.offsets)-1].rel), h2.BaseOffset)
		}
		first = false
		h = h2
	}
	if h.NextOffset() != next {
		return fmt.Errorf("index says next offset %d, log says %d", next, h.NextOffset())
	}
	s.idx = *x
	s.size, s.next, s.maxTs = st.Size(), next, last.ts
	s.sinceIndex = int(st.Size() - int64(x.offsets[len(x.offsets)-1].pos))
	return nil
}
