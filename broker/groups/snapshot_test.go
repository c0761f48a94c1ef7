package groups

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSnapshotRestores: a snapshot carries every group's durable offsets
// (metadata and epoch included) into an empty directory; its change count
// moves only with a durable change; a damaged or cut snapshot, or a
// directory that has its own log, is refused and leaves nothing behind.
func TestSnapshotRestores(t *testing.T) {
	c := openTest(t, t.TempDir(), 0)
	commit(t, c, "billing", 0, 60)
	commit(t, c, "billing", 1, 7)
	commit(t, c, "audit", 0, 3)
	data, n := c.Snapshot()
	if _, again := c.Snapshot(); again != n {
		t.Fatalf("change count %d, then %d without a change", n, again)
	}
	commit(t, c, "audit", 0, 4)
	if _, after := c.Snapshot(); after == n {
		t.Fatalf("change count stayed %d across a commit", n)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	for _, bad := range [][]byte{data[:len(data)-1], append(append([]byte{}, data...), 0), flip(data, len(data)-2)} {
		dir := t.TempDir()
		if err := RestoreSnapshot(dir, bad); err == nil {
			t.Fatalf("a damaged snapshot (%d of %d bytes) restored", len(bad), len(data))
		}
		if has, _ := HasLog(dir); has {
			t.Fatal("a refused snapshot left an offset log")
		}
	}

	dir := t.TempDir()
	if err := RestoreSnapshot(dir, data); err != nil {
		t.Fatal(err)
	}
	if err := RestoreSnapshot(dir, data); err == nil {
		t.Fatal("a snapshot replaced an existing offset log")
	}
	r := openTest(t, dir, 0)
	defer r.Close()
	if got := [3]int64{offsetOf(r, "billing", 0), offsetOf(r, "billing", 1), offsetOf(r, "audit", 0)}; got != [3]int64{60, 7, 3} {
		t.Fatalf("restored offsets %v, want [60 7 3]", got)
	}
	if o := r.Offsets("billing")["t"][0]; o.Metadata != "m60" || o.LeaderEpoch != 2 {
		t.Fatalf("restored offset %+v lost its metadata or epoch", o)
	}
	if _, err := os.Stat(filepath.Join(dir, offsetsFile)); err != nil {
		t.Fatal(err)
	}
}

func flip(b []byte, i int) []byte {
	out := append([]byte{}, b...)
	out[i] ^= 0xff
	return out
}
