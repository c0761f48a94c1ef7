package cold_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/batch"
)

// ScanObject hands over every chunk's batches in order and the SHA-256
// the writer computed, in one GET; an object shorter or longer than the
// manifest says, or whose chunks do not decode, is corrupt.
func TestScanObject(t *testing.T) {
	ctx := context.Background()
	b := newFileBucket(t)
	log, _ := buildLog(t, segSpec{nBatches: 40, recs: 10, size: 200, codec: batch.Zstd})
	seg, want := putSegment(t, b, "seg", log, cold.SegmentOptions{ChunkBytes: 8 << 10})
	f, err := cold.ReadFooter(ctx, b, seg)
	if err != nil || len(f.Chunks) < 2 {
		t.Fatalf("footer: %d chunks, %v", len(f.Chunks), err)
	}
	before := b.gets.Load()
	var got []byte
	var chunks []int
	sum, err := cold.ScanObject(ctx, b, seg, f, func(c cold.ChunkInfo, raw []byte) error {
		chunks = append(chunks, c.Index)
		got = append(got, raw...)
		return nil
	})
	if err != nil || sum != want.SHA256 || !bytes.Equal(got, log) || len(chunks) != len(f.Chunks) || b.gets.Load()-before != 1 {
		t.Fatalf("scan: err %v, sha match %v, %d of %d bytes, chunks %v, %d GETs", err, sum == want.SHA256, len(got), len(log), chunks, b.gets.Load()-before)
	}
	stop := errors.New("stop")
	if _, err := cold.ScanObject(ctx, b, seg, f, func(cold.ChunkInfo, []byte) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("fn's error: %v", err)
	}

	obj, _ := writeObject(t, log, cold.SegmentOptions{ChunkBytes: 8 << 10})
	for name, body := range map[string][]byte{
		"truncated":      obj[:len(obj)-100],
		"longer":         append(bytes.Clone(obj), 0),
		"chunk altered":  flip(obj, int(f.Chunks[1].StoredPos)+5),
		"trailer broken": flip(obj, len(obj)-2),
	} {
		if _, err := b.Upload(ctx, "seg", bytes.NewReader(body), int64(len(body))); err != nil {
			t.Fatal(err)
		}
		if _, err := cold.ScanObject(ctx, b, seg, f, func(cold.ChunkInfo, []byte) error { return nil }); !errors.Is(err, cold.ErrCorruptObject) {
			t.Errorf("%s: %v, want a corrupt object", name, err)
		}
	}
}

func flip(b []byte, at int) []byte {
	c := bytes.Clone(b)
	c[at] ^= 0xff
	return c
}
