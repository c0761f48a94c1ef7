package cold_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"strings"
	"testing"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/miniobucket"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
)

// TestReadOnlyVersions: a read-only view of a versioned bucket reads the
// version it is asked for (not an overwrite made since) and refuses to
// delete it.
func TestReadOnlyVersions(t *testing.T) {
	ctx := context.Background()
	m := testutil.StartMinIO(t)
	bucket := m.NewLockedBucket(t) // versioned
	b, err := miniobucket.Open(ctx, m.MinIOURL(bucket, "ro/"), cold.Options{Credentials: &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	first, err := b.Upload(ctx, "k", strings.NewReader("written"), 7)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Upload(ctx, "k", strings.NewReader("forged!"), 7); err != nil {
		t.Fatal(err)
	}
	ro := cold.ReadOnly(b)
	rc, err := cold.GetRangeVersion(ctx, ro, "k", first.VersionID, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, []byte("written")) {
		t.Errorf("read-only read of the first version: %q, %v; want the bytes written", got, err)
	}
	if err := cold.DeleteVersion(ctx, ro, "k", first.VersionID); !errors.Is(err, cold.ErrReadOnly) {
		t.Errorf("read-only DeleteVersion: %v, want ErrReadOnly", err)
	}
	if _, err := b.Attributes(ctx, "k"); err != nil {
		t.Errorf("the object after a refused delete: %v", err)
	}
}

// TestReaderVersions: one Reader reading two versions of a key (a segment
// and a same-size object written over it) serves each version's own bytes,
// in either order: its footer and chunk caches key on the version as well
// as the key, so what one version cached is never served for the other.
func TestReaderVersions(t *testing.T) {
	ctx := context.Background()
	m := testutil.StartMinIO(t)
	b, err := miniobucket.Open(ctx, m.MinIOURL(m.NewLockedBucket(t), "rv/"), cold.Options{Credentials: &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	opts := cold.SegmentOptions{ChunkBytes: 4 << 10, NoCompression: true} // equal sizes
	written, _ := buildLog(t, segSpec{nBatches: 8, recs: 10, size: 100, codec: batch.None, ts: 1})
	forged := bytes.Clone(written)
	h, err := batch.Peek(forged)
	if err != nil {
		t.Fatal(err)
	}
	first := forged[:h.Size()]
	first[len(first)-2] ^= 0x20 // the last byte of the batch's last value
	binary.BigEndian.PutUint32(first[17:21], crc32.Checksum(first[21:], crc32.MakeTable(crc32.Castagnoli)))
	if _, err := batch.Validate(first); err != nil {
		t.Fatal(err)
	}
	obj1, f := writeObject(t, written, opts)
	obj2, _ := writeObject(t, forged, opts)
	if len(obj1) != len(obj2) {
		t.Fatalf("object sizes %d and %d", len(obj1), len(obj2))
	}
	var seg1, seg2 cold.SegmentRef
	for _, v := range []struct {
		obj []byte
		ref *cold.SegmentRef
	}{{obj1, &seg1}, {obj2, &seg2}} {
		a, err := b.Upload(ctx, "s.seg", bytes.NewReader(v.obj), int64(len(v.obj)))
		if err != nil {
			t.Fatal(err)
		}
		*v.ref = cold.SegmentRef{Key: "s.seg", Size: int64(len(v.obj)), VersionID: a.VersionID}
	}
	v1 := seg1.VersionID
	current := cold.SegmentRef{Key: seg1.Key, Size: seg1.Size}
	for _, order := range [][]cold.SegmentRef{{current, seg1, seg2}, {seg1, seg2, current}} {
		r, _ := newReader(t, b, cold.ChunkCacheOptions{}, cold.ReaderOptions{})
		for _, seg := range order {
			want := forged
			if seg.VersionID == v1 {
				want = written
			}
			if got := replay(t, r, seg, f, 1<<20); !bytes.Equal(got, want) {
				t.Fatalf("order %v: version %q read back other bytes (the forged ones: %v)", order, seg.VersionID, bytes.Equal(got, forged))

			}
		}
	}
}
