package hot

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
)

// FuzzRecover damages a segment file (bytes overwritten at a position, the
// file cut at another) and opens the log as after a crash. Recovery must
// never panic and never serve wrong bytes: what it keeps is a prefix of what
// was written, and the log takes appends afterwards.
func FuzzRecover(f *testing.F) {
	var seg bytes.Buffer
	var want []batch.Record
	for i := range 40 {
		b := testutil.Batch(f, int64(i*3), 3, 40, int64(i))
		batch.SetBaseOffset(b, int64(i*3))
		seg.Write(b)
	}
	want, err := batch.DecodeAll(seg.Bytes())
	if err != nil {
		f.Fatal(err)
	}
	orig := seg.Bytes()
	f.Add(uint16(0), []byte{}, uint16(len(orig)))
	f.Add(uint16(100), []byte{0xff}, uint16(len(orig)))
	f.Add(uint16(500), []byte("garbage"), uint16(len(orig)-5))
	f.Add(uint16(8), []byte{0x7f, 0xff, 0xff, 0xff}, uint16(len(orig)))
	f.Fuzz(func(t *testing.T, at uint16, garbage []byte, cut uint16) {
		data := append([]byte(nil), orig...)
		if int(at) < len(data) {
			copy(data[at:], garbage)
		}
		data = data[:min(int(cut), len(data))]
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "00000000000000000000.log"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		l, err := Open(dir, testConfig(FlushOS), Options{})
		if err != nil {
			t.Fatalf("open after damage: %v", err)
		}
		defer l.Close()
		got := readAll(t, l, 0)
		if len(got) > len(want) {
			t.Fatalf("recovered %d records from %d written", len(got), len(want))
		}
		for i, r := range got {
			if r.Offset != want[i].Offset || !bytes.Equal(r.Value, want[i].Value) || !bytes.Equal(r.Key, want[i].Key) {
				t.Fatalf("recovered record %d differs from what was written", i)
			}
		}
		if _, err := l.Append(testutil.Batch(t, 0, 1, 10, 1)); err != nil {
			t.Fatalf("append after recovery: %v", err)
		}
	})
}
