package hot

import (
	"encoding/binary"
	"fmt"
	"os"
	"sort"

	"github.com/tierlog/tierlog/internal/fileutil"
)

// The sparse indexes live in memory while a segment is active and are
// written to .index/.timeindex once, when the segment is sealed or the log
// closes cleanly. A crash never leaves a half-written index that recovery
// must trust: the active segment is rebuilt by scanning, and a sealed
// segment's index files were written atomically.

const (
	offsetEntrySize = 8  // relative offset uint32, position uint32
	timeEntrySize   = 12 // timestamp int64, relative offset uint32
)

// offsetEntry maps the base offset of a batch to its file position.
type offsetEntry struct {
	rel uint32
	pos uint32
}

// timeEntry says: ts is the largest max timestamp of all batches before the
// batch starting at relative offset rel. A search for the first batch with a
// timestamp >= T can skip straight to the last entry whose ts is below T.
type timeEntry struct {
	ts  int64
	rel uint32
}

type indexes struct {
	offsets []offsetEntry
	times   []timeEntry
}

// lookup returns the position of the last indexed batch whose base offset is
// at most rel; scanning forward from there finds rel.
func (x *indexes) lookup(rel uint32) uint32 {
	i := sort.Search(len(x.offsets), func(i int) bool { return x.offsets[i].rel > rel })
	if i == 0 {
		return 0
	}
	return x.offsets[i-1].pos
}

// lookupTime returns a relative offset from which a forward scan finds the
// first batch with max timestamp >= ts: the last entry whose running max is
// still below ts (every batch before it is older than ts).
func (x *indexes) lookupTime(ts int64) (rel uint32, ok bool) {
	i := sort.Search(len(x.times), func(i int) bool { return x.times[i].ts >= ts })
	if i == 0 {
		return 0, false
	}
	return x.times[i-1].rel, true
}

func (x *indexes) encode() (off, tim []byte) {
	off = make([]byte, 0, len(x.offsets)*offsetEntrySize)
	for _, e := range x.offsets {
		off = binary.BigEndian.AppendUint32(off, e.rel)
		off = binary.BigEndian.AppendUint32(off, e.pos)
	}
	tim = make([]byte, 0, len(x.times)*timeEntrySize)
	for _, e := range x.times {
		tim = binary.BigEndian.AppendUint64(tim, uint64(e.ts))
		tim = binary.BigEndian.AppendUint32(tim, e.rel)
	}
	return off, tim
}

// write stores both index files atomically.
func (x *indexes) write(base string) error {
	off, tim := x.encode()
	if err := fileutil.WriteFileAtomic(base+".index", off, 0o644); err != nil {
		return err
	}
	return fileutil.WriteFileAtomic(base+".timeindex", tim, 0o644)
}

// readIndexes loads both index files and checks them for the shape a
// correct index has; logSize bounds the positions. A missing or malformed
// file is reported so the caller rebuilds by scanning.
func readIndexes(base string, logSize int64) (*indexes, error) {
	off, err := os.ReadFile(base + ".index")
	if err != nil {
		return nil, err
	}
	tim, err := os.ReadFile(base + ".timeindex")
	if err != nil {
		return nil, err
	}
	if len(off)%offsetEntrySize != 0 || len(tim)%timeEntrySize != 0 {
		return nil, fmt.Errorf("index size %d/%d is not a whole number of entries", len(off), len(tim))
	}
	x := &indexes{}
	for i := 0; i < len(off); i += offsetEntrySize {
		e := offsetEntry{binary.BigEndian.Uint32(off[i:]), binary.BigEndian.Uint32(off[i+4:])}
		if n := len(x.offsets); n > 0 && (e.rel <= x.offsets[n-1].rel || e.pos <= x.offsets[n-1].pos) {
			return nil, fmt.Errorf("offset index entry %d is not increasing", n)
		}
		if int64(e.pos) >= logSize {
			return nil, fmt.Errorf("offset index entry %d points at %d, past the log end %d", len(x.offsets), e.pos, logSize)
		}
		x.offsets = append(x.offsets, e)
	}
	for i := 0; i < len(tim); i += timeEntrySize {
		e := timeEntry{int64(binary.BigEndian.Uint64(tim[i:])), binary.BigEndian.Uint32(tim[i+8:])}
		if n := len(x.times); n > 0 && (e.ts < x.times[n-1].ts || e.rel < x.times[n-1].rel) {
			return nil, fmt.Errorf("time index entry %d is not increasing", n)
		}
		x.times = append(x.times, e)
	}
	return x, nil
}
