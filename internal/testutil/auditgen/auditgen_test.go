package auditgen_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil/auditgen"
)

func TestDeterministicValidJSON(t *testing.T) {
	a, b := auditgen.New(auditgen.Options{Seed: 7}), auditgen.New(auditgen.Options{Seed: 7})
	other := auditgen.New(auditgen.Options{Seed: 8})
	var prev int64
	same := 0
	for i := range 5000 {
		ra, rb, ro := a.Next(), b.Next(), other.Next()
		if !bytes.Equal(ra.Value, rb.Value) || !bytes.Equal(ra.Key, rb.Key) || ra.Timestamp != rb.Timestamp {
			t.Fatalf("event %d differs between two generators with one seed", i)
		}
		if bytes.Equal(ra.Value, ro.Value) {
			same++
		}
		if !json.Valid(ra.Value) {
			t.Fatalf("event %d is not JSON: %s", i, ra.Value)
		}
		if ra.Timestamp < prev {
			t.Fatalf("event %d goes back in time", i)
		}
		prev = ra.Timestamp
		var ev struct {
			Action string              `json:"action"`
			Actor  struct{ ID string } `json:"actor"`
		}
		if err := json.Unmarshal(ra.Value, &ev); err != nil || ev.Action == "" || ev.Actor.ID == "" {
			t.Fatalf("event %d: %v %+v", i, err, ev)
		}
	}
	if same > 0 {
		t.Fatalf("%d events equal across seeds", same)
	}
}

func TestLogIsValidBatches(t *testing.T) {
	log, next, err := auditgen.New(auditgen.Options{Seed: 1}).Log(100, 256<<10, 64, batch.LZ4)
	if err != nil {
		t.Fatal(err)
	}
	off := int64(100)
	for p := log; len(p) > 0; {
		h, err := batch.Validate(p)
		if err != nil || h.BaseOffset != off {
			t.Fatalf("batch at offset %d: %v (base %d)", off, err, h.BaseOffset)
		}
		off = h.NextOffset()
		p = p[h.Size():]
	}
	if off != next {
		t.Fatalf("next %d, batches end at %d", next, off)
	}
}

// The data should compress like real audit logs (several-fold), not like
// random bytes nor like a repeated string.
func TestCompressesLikeAuditLogs(t *testing.T) {
	g := auditgen.New(auditgen.Options{Seed: 3})
	var raw []byte
	n := 0
	for ; len(raw) < 4<<20; n++ {
		raw = append(raw, g.Next().Value...)
	}
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	defer enc.Close()
	ratio := float64(len(raw)) / float64(len(enc.EncodeAll(raw, nil)))
	t.Logf("zstd default ratio on 4 MiB of events: %.2f (%d-byte events on average)", ratio, len(raw)/n)
	if ratio < 2.5 || ratio > 20 {
		t.Fatalf("ratio %.2f is not what audit logs give", ratio)
	}
}

func BenchmarkNext(b *testing.B) {
	g := auditgen.New(auditgen.Options{})
	n := 0
	for b.Loop() {
		n += len(g.Next().Value)
	}
	b.SetBytes(int64(n / b.N))
}
