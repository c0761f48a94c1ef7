package groups

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func openTest(t *testing.T, dir string, compact int) *Coordinator {
	t.Helper()
	c, err := Open(Options{Dir: dir, CompactEntries: compact})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func commit(t *testing.T, c *Coordinator, group string, partition int32, offset int64) {
	t.Helper()
	err := c.Commit(CommitRequest{Group: group, Generation: -1, Offsets: []PartitionOffset{
		{Topic: "t", Partition: partition, Offset: Offset{Offset: offset, LeaderEpoch: 2, Metadata: fmt.Sprint("m", offset)}}}})()
	if err != nil {
		t.Fatal(err)
	}
}

func offsetOf(c *Coordinator, group string, partition int32) int64 {
	o, ok := c.Offsets(group)["t"][partition]
	if !ok {
		return -1
	}
	return o.Offset
}

// Damage to the end of the log (a crash mid-write) loses only the change
// being written, which was never acknowledged: every earlier commit
// survives, and the log takes new commits after the repair. Damage with
// valid frames after it is corruption: the open fails rather than
// silently dropping acknowledged commits.
func TestStoreRepair(t *testing.T) {
	for _, tc := range []struct {
		name    string
		damage  func(data []byte, lastFrame int) []byte
		corrupt bool
	}{
		{"torn last frame", func(d []byte, last int) []byte { return d[:last+(len(d)-last)/2] }, false},
		{"torn frame header", func(d []byte, last int) []byte { return d[:last+3] }, false},
		{"bad checksum in last frame", func(d []byte, last int) []byte { d[len(d)-1] ^= 0xff; return d }, false},
		{"zeroed tail", func(d []byte, last int) []byte { return append(d[:last], make([]byte, 64)...) }, false},
		{"bad checksum in the middle", func(d []byte, last int) []byte { d[len(fileMagic)+frameHeader+2] ^= 0xff; return d }, true},
		{"bad header", func(d []byte, last int) []byte { d[0] = 'X'; return d }, true},
		// A frame's length is trusted only with its header's checksum: a
		// damaged length in the middle does not pass for a torn tail.
		{"bad length in the middle", func(d []byte, last int) []byte { d[len(fileMagic)+1] ^= 0x40; return d }, true},
		{"bad length in the last frame", func(d []byte, last int) []byte { d[last+1] ^= 0x40; return d }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			c := openTest(t, dir, 0)
			for i := range 5 {
				commit(t, c, "g", int32(i), int64(100+i))
			}
			path := filepath.Join(dir, offsetsFile)
			before, _ := os.ReadFile(path)
			commit(t, c, "g", 9, 999) // the last frame, damaged below
			c.Close()
			data, _ := os.ReadFile(path)
			if err := os.WriteFile(path, tc.damage(data, len(before)), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := Open(Options{Dir: dir})
			if tc.corrupt {
				var ce *CorruptionError
				if !errors.As(err, &ce) {
					t.Fatalf("open: %v, want a CorruptionError", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				if got := offsetOf(c, "g", int32(i)); got != int64(100+i) {
					t.Errorf("partition %d: %d after repair", i, got)
				}
			}
			commit(t, c, "g", 7, 777)
			c.Close()
			c = openTest(t, dir, 0)
			defer c.Close()
			if offsetOf(c, "g", 7) != 777 || offsetOf(c, "g", 0) != 100 {
				t.Errorf("after a commit on the repaired log: %v", c.Offsets("g"))
			}
		})
	}
}

// A log in format version 1 (no frame header checksum, no expire time) is read, its torn
// tail repaired, and rewritten in version 2.
func TestStoreReadsVersion1(t *testing.T) {
	dir := t.TempDir()
	v1 := []byte(fileMagicV1)
	for i := range 3 { // one entry a frame; version 1 has no expire time
		p := binary.AppendUvarint(nil, 1)
		p = appendString(appendString(p, "g"), "t")
		for _, v := range []int64{int64(i), int64(10 + i), -1, time.Now().UnixMilli()} {
			p = binary.AppendVarint(p, v)
		}
		p = appendString(p, "md")
		v1 = binary.BigEndian.AppendUint32(v1, uint32(len(p)))
		v1 = append(binary.BigEndian.AppendUint32(v1, crc32.Checksum(p, castagnoli)), p...)
	}
	v1 = append(v1, 0, 0, 0, 9, 1) // torn
	path := filepath.Join(dir, offsetsFile)
	if err := os.WriteFile(path, v1, 0o644); err != nil {
		t.Fatal(err)
	}
	c := openTest(t, dir, 0)
	commit(t, c, "g", 3, 13)
	c.Close()
	data, _ := os.ReadFile(path)
	if string(data[:len(fileMagic)]) != fileMagic {
		t.Errorf("file starts %q after open, want version 2", data[:len(fileMagic)])
	}
	c = openTest(t, dir, 0)
	defer c.Close()
	for i := range int32(4) {
		if got := offsetOf(c, "g", i); got != int64(10+i) {
			t.Errorf("partition %d: %d, want %d", i, got, 10+i)
		}
	}
}

// The log is rewritten from the live offsets once it holds mostly
// superseded entries, and what it holds reopens the same.
func TestStoreCompaction(t *testing.T) {
	dir := t.TempDir()
	c := openTest(t, dir, 50)
	for i := range 500 {
		commit(t, c, fmt.Sprint("g", i%3), int32(i%4), int64(i))
	}
	if err := c.Delete("g2")(); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(filepath.Join(dir, offsetsFile))
	// 500 commits of ~30 bytes each would be ~20 KB without rewrites; 8
	// live entries and at most ~4x50 appended since the last rewrite.
	if st.Size() > 10_000 {
		t.Errorf("log is %d bytes after 500 commits to 12 partitions", st.Size())
	}
	want := map[string]map[int32]int64{}
	for _, g := range []string{"g0", "g1", "g2"} {
		want[g] = map[int32]int64{}
		for p := range int32(4) {
			want[g][p] = offsetOf(c, g, p)
		}
	}
	c.Close()
	c = openTest(t, dir, 50)
	defer c.Close()
	for g, ps := range want {
		for p, o := range ps {
			if got := offsetOf(c, g, p); got != o {
				t.Errorf("%s/%d: %d after reopen, want %d", g, p, got, o)
			}
		}
	}
	if want["g2"][0] != -1 || want["g0"][3] == -1 {
		t.Errorf("deleted group kept or live group lost: %v", want)
	}
	o := c.Offsets("g1")["t"][1]
	if o.LeaderEpoch != 2 || o.Metadata != fmt.Sprint("m", o.Offset) || time.Since(o.CommitTime) > time.Minute {
		t.Errorf("commit details lost: %+v", o)
	}
}

// BenchmarkCommit: one consumer's commit of 10 partitions, written and
// fsynced before it returns.
func BenchmarkCommit(b *testing.B) {
	c, err := Open(Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	offs := make([]PartitionOffset, 10)
	for i := range offs {
		offs[i] = PartitionOffset{Topic: "events", Partition: int32(i)}
	}
	b.ResetTimer()
	for i := range b.N {
		for j := range offs {
			offs[j].Offset.Offset = int64(i)
		}
		if err := c.Commit(CommitRequest{Group: "g", Generation: -1, Offsets: offs})(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCommitParallel: many consumers committing at once share
// fsyncs.
func BenchmarkCommitParallel(b *testing.B) {
	c, err := Open(Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		g := fmt.Sprint("g", time.Now().UnixNano())
		var i int64
		for pb.Next() {
			i++
			if err := c.Commit(CommitRequest{Group: g, Generation: -1, Offsets: []PartitionOffset{{Topic: "events", Offset: Offset{Offset: i}}}})(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
