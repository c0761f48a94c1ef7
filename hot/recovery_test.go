package hot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
)

// crash stops the log the way a killed process does: no final fsync, no
// index files for the active segment, no recovery-point update.
func crash(l *Log) {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.stopBackground()
	for _, s := range l.segments {
		s.f.Close()
	}
}

// written describes the log a corruption case damages.
type written struct {
	dir        string
	active     SegmentInfo // the last segment
	sealed     SegmentInfo // a sealed segment before it
	lastBase   int64       // base offset of the last batch
	activeBats []int64     // positions of the active segment's batches
	end        int64
}

func TestRecoveryTable(t *testing.T) {
	const size = 100
	cases := []struct {
		name    string
		corrupt func(t *testing.T, w written) (wantEnd int64)
	}{
		{"clean crash", func(t *testing.T, w written) int64 { return w.end }},
		{"torn tail", func(t *testing.T, w written) int64 {
			truncate(t, w.active.Path, w.active.Size-7)
			return w.lastBase
		}},
		{"torn header", func(t *testing.T, w written) int64 {
			truncate(t, w.active.Path, w.activeBats[len(w.activeBats)-1]+20)
			return w.lastBase
		}},
		{"bad checksum in last batch", func(t *testing.T, w written) int64 {
			flip(t, w.active.Path, w.active.Size-3)
			return w.lastBase
		}},
		{"bad length in last batch", func(t *testing.T, w written) int64 {
			writeAt(t, w.active.Path, w.activeBats[len(w.activeBats)-1]+8, binary.BigEndian.AppendUint32(nil, 1<<30))
			return w.lastBase
		}},
		{"garbage mid-segment", func(t *testing.T, w written) int64 {
			mid := len(w.activeBats) / 2
			writeAt(t, w.active.Path, w.activeBats[mid]+30, []byte("garbage garbage garbage"))
			return w.active.BaseOffset + int64(mid)*5
		}},
		{"zero-filled tail", func(t *testing.T, w written) int64 {
			writeAt(t, w.active.Path, w.active.Size, make([]byte, 4096))
			return w.end
		}},
		{"missing index of a sealed segment", func(t *testing.T, w written) int64 {
			os.Remove(w.sealed.Path[:len(w.sealed.Path)-4] + ".index")
			return w.end
		}},
		{"stale index of a sealed segment", func(t *testing.T, w written) int64 {
			os.WriteFile(w.sealed.Path[:len(w.sealed.Path)-4]+".index", binary.BigEndian.AppendUint64(nil, 0xFFFF_0000_FFFF), 0o644)
			return w.end
		}},
		{"index from another segment", func(t *testing.T, w written) int64 {
			b, _ := os.ReadFile(w.sealed.Path[:len(w.sealed.Path)-4] + ".timeindex")
			os.WriteFile(w.sealed.Path[:len(w.sealed.Path)-4]+".timeindex", b[:len(b)-12], 0o644)
			return w.end
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := writeAndCrash(t, size)
			wantEnd := c.corrupt(t, w)
			l := openLog(t, w.dir, testConfig(FlushAlways), Options{})
			if got := l.EndOffset(); got != wantEnd {
				t.Fatalf("end offset after recovery %d, want %d", got, wantEnd)
			}
			checkRecords(t, readAll(t, l, 0), 0, wantEnd, size)
			// The log takes appends again and they survive a clean reopen.
			appendRecords(t, l, 20, 5, size)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l = openLog(t, w.dir, testConfig(FlushAlways), Options{})
			defer l.Close()
			checkRecords(t, readAll(t, l, 0), 0, wantEnd+100, size)
		})
	}
}

// writeAndCrash writes several segments, waits until all but the active one
// are sealed, and crashes the log.
func writeAndCrash(t *testing.T, size int) written {
	dir := t.TempDir()
	l := openLog(t, dir, testConfig(FlushAlways), Options{})
	res := appendRecords(t, l, 250, 5, size)
	testutil.Eventually(t, 5*time.Second, func() bool { return len(l.SealedSegments()) == len(l.Segments())-1 }, "sealed")
	segs := l.Segments()
	w := written{dir: dir, active: segs[len(segs)-1], sealed: segs[len(segs)-2], lastBase: res[len(res)-1].BaseOffset, end: l.EndOffset()}
	if w.active.Size < 10<<10 {
		t.Fatalf("active segment too small for the cases: %d bytes", w.active.Size)
	}
	for pos := int64(0); pos < w.active.Size; {
		w.activeBats = append(w.activeBats, pos)
		var hdr [12]byte
		readAt(t, w.active.Path, pos, hdr[:])
		pos += 12 + int64(binary.BigEndian.Uint32(hdr[8:]))
	}
	crash(l)
	return w
}

func TestCorruptionBelowRecoveryPointRefusesToOpen(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, testConfig(FlushAlways), Options{})
	appendRecords(t, l, 20, 5, 100)
	active := l.Segments()[0]
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// Fsynced, acknowledged data is damaged and its index is gone, so open
	// must scan it: it refuses rather than truncate acknowledged records.
	flip(t, active.Path, active.Size/2)
	os.Remove(active.Path[:len(active.Path)-4] + ".index")
	before, _ := os.ReadFile(active.Path)
	_, err := Open(dir, testConfig(FlushAlways), Options{})
	var ce *CorruptionError
	if !errors.As(err, &ce) {
		t.Fatalf("open: %v, want *CorruptionError", err)
	}
	t.Log(err)
	after, _ := os.ReadFile(active.Path)
	if string(before) != string(after) {
		t.Fatal("a refused open rewrote the segment")
	}
}

func truncate(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

func flip(t *testing.T, path string, at int64) {
	t.Helper()
	var b [1]byte
	readAt(t, path, at, b[:])
	writeAt(t, path, at, []byte{b[0] ^ 0x5a})
}

func readAt(t *testing.T, path string, at int64, b []byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
}

func writeAt(t *testing.T, path string, at int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

// TestOverlappingSegmentsRefuseToOpen is issue 6 item 9 (last sentence):
// two writers appending into one directory leave segments whose offsets
// overlap; recovery accepted them and served duplicate offsets. Open must
// refuse, name both files, and remove nothing.
func TestOverlappingSegmentsRefuseToOpen(t *testing.T) {
	t.Run("scanned segments", func(t *testing.T) {
		dir := t.TempDir()
		writeSegment(t, dir, 0, 30)  // offsets 0..29
		writeSegment(t, dir, 20, 30) // offsets 20..49: another writer's
		checkOpenRefused(t, dir, ErrOverlappingSegments, "00000000000000000000.log", "00000000000000000020.log")
	})
	t.Run("sealed segments below the recovery point", func(t *testing.T) {
		dir := t.TempDir()
		segs := closedLog(t, dir)
		// A segment starting inside the first, trusted, sealed segment.
		inside := segs[1].BaseOffset - 10
		writeSegment(t, dir, inside, 20)
		checkOpenRefused(t, dir, ErrOverlappingSegments, filepath.Base(segs[0].Path), filepath.Base(segmentPrefix(dir, inside)+".log"))
	})
}

// A segment file missing between two others leaves offsets no read can
// serve: reads in the hole returned nothing for ever, stalling consumers.
// The log must refuse to open, naming the missing range, and change nothing.
func TestSegmentGapRefusesToOpen(t *testing.T) {
	t.Run("scanned segments", func(t *testing.T) {
		dir := t.TempDir()
		writeSegment(t, dir, 0, 30)  // offsets 0..29
		writeSegment(t, dir, 40, 30) // offsets 40..69: 30..39 missing
		checkOpenRefused(t, dir, ErrSegmentGap, "00000000000000000000.log", "00000000000000000040.log", "offsets 30 to 39")
	})
	t.Run("sealed segments below the recovery point", func(t *testing.T) {
		dir := t.TempDir()
		segs := closedLog(t, dir)
		if len(segs) < 3 {
			t.Fatalf("%d segments, want at least 3", len(segs))
		}
		if err := removeSegmentFiles(segmentPrefix(dir, segs[1].BaseOffset)); err != nil {
			t.Fatal(err)
		}
		checkOpenRefused(t, dir, ErrSegmentGap, filepath.Base(segs[0].Path), filepath.Base(segs[2].Path),
			fmt.Sprintf("offsets %d to %d", segs[1].BaseOffset, segs[1].NextOffset-1))
	})
}

// closedLog writes 250 batches to a log in dir under FlushAlways and
// closes it cleanly (every segment sealed, below the recovery point); it
// returns the segments.
func closedLog(t *testing.T, dir string) []SegmentInfo {
	t.Helper()
	l := openLog(t, dir, testConfig(FlushAlways), Options{})
	appendRecords(t, l, 250, 5, 100)
	segs := l.Segments()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return segs
}

// writeSegment writes a segment file of n records (batches of 5, value
// size 100) from offset base, as another writer would have.
func writeSegment(t *testing.T, dir string, base int64, n int) {
	t.Helper()
	var data []byte
	for off := base; off < base+int64(n); off += 5 {
		b := testutil.Batch(t, off, 5, 100, 1_000_000+off)
		batch.SetBaseOffset(b, off)
		data = append(data, b...)
	}
	if err := os.WriteFile(segmentPrefix(dir, base)+".log", data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func checkOpenRefused(t *testing.T, dir string, want error, names ...string) {
	t.Helper()
	before := dirContents(t, dir)
	l, err := Open(dir, testConfig(FlushAlways), Options{})
	if err == nil {
		l.Close()
		t.Fatalf("open accepted the segments, want %v", want)
	}
	if !errors.Is(err, want) {
		t.Fatalf("open: %v, want %v", err, want)
	}
	for _, n := range names {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("error does not name %s: %v", n, err)
		}
	}
	t.Log(err)
	// Index files may have been written for segments checked before the
	// problem was found (derived data); no segment is removed or changed.
	if after := dirContents(t, dir); !maps.Equal(before, after) {
		t.Fatalf("a refused open changed the segments: %v, then %v", slices.Sorted(maps.Keys(before)), slices.Sorted(maps.Keys(after)))
	}
}

// dirContents maps each .log file in dir to its contents.
func dirContents(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".log") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = string(b)
	}
	return out
}
