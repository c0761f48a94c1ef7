package audit_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash/crc32"
	"testing"

	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/internal/batch"
)

// The leaf layout of FORMAT10 / doc.go, byte by byte, for a record with a
// null value, an empty header value and a control flag.
func TestEncodeLeafLayout(t *testing.T) {
	r := audit.Record{Offset: 5, Timestamp: 1000, Key: []byte("k"), Value: nil,
		Headers: []audit.Header{{Key: "h", Value: []byte{}}, {Key: "n", Value: nil}}, Control: true}
	want := "01" + "0000000000000005" + "01" + "00000000000003e8" +
		"00000001" + "6b" + // key "k"
		"ffffffff" + // null value
		"00000002" + // two headers
		"00000001" + "68" + "00000000" + // "h": empty value
		"00000001" + "6e" + "ffffffff" // "n": null value
	if got := hex.EncodeToString(audit.EncodeLeaf(nil, r)); got != want {
		t.Fatalf("leaf\n got %s\nwant %s", got, want)
	}
	// An empty key is not a null key.
	r2 := r
	r2.Key = []byte{}
	if bytes.Equal(audit.EncodeLeaf(nil, r), audit.EncodeLeaf(nil, r2)) {
		t.Fatal("an empty key encodes like a null one")
	}
	if got := hex.EncodeToString(audit.AbsentLeaf(258)); got != "02"+"0000000000000102" {
		t.Fatalf("absent leaf %s", got)
	}
	// RFC 6962 leaf hash: SHA-256(0x00 || leaf); the empty leaf's is well known.
	if got := hex.EncodeToString(audit.LeafHash(nil)); got != "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d" {
		t.Fatalf("leaf hash of the empty leaf %s", got)
	}
}

func sampleRecords(n int, ts int64) []batch.Record {
	recs := make([]batch.Record, n)
	for i := range recs {
		recs[i] = batch.Record{Timestamp: ts + int64(i*3), Key: []byte{byte(i)}, Value: bytes.Repeat([]byte{'v', byte(i)}, i),
			Headers: []batch.RecordHeader{{Key: "content-type", Value: []byte("json")}, {Key: "null"}}}
		if i%3 == 0 {
			recs[i].Key = nil
		}
	}
	return recs
}

func leavesOf(t *testing.T, b []byte) (offsets []int64, leaves [][]byte) {
	t.Helper()
	err := audit.AppendLeaves(b, func(o int64, leaf []byte) error {
		offsets = append(offsets, o)
		leaves = append(leaves, bytes.Clone(leaf))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// EachLeafHash hashes the same leaves as the library's RFC 6962 leaf
	// hash does, without building them apart.
	i := 0
	err = audit.EachLeafHash(b, func(o int64, h []byte) error {
		if i >= len(leaves) || o != offsets[i] || !bytes.Equal(h, rfc6962.DefaultHasher.HashLeaf(leaves[i])) {
			t.Fatalf("EachLeafHash: leaf %d: offset %d hash %x, AppendLeaves gives offset %d, leaf %x", i, o, h, offsets[min(i, len(offsets)-1)], leaves[min(i, len(leaves)-1)])
		}
		i++
		return nil
	})
	if err != nil || i != len(leaves) {
		t.Fatalf("EachLeafHash: %v after %d of %d leaves", err, i, len(leaves))
	}
	return offsets, leaves
}

// The leaves are those of the records, whatever the batch's compression:
// the encoding is independent of batching and codecs.
func TestAppendLeavesIndependentOfCompression(t *testing.T) {
	recs := sampleRecords(20, 1_700_000_000_000)
	var first [][]byte
	for _, c := range []batch.Codec{batch.None, batch.Gzip, batch.Snappy, batch.LZ4, batch.Zstd} {
		b, err := batch.Build(recs, batch.BuildOptions{Codec: c, BaseOffset: 100})
		if err != nil {
			t.Fatal(err)
		}
		offsets, leaves := leavesOf(t, b)
		if len(leaves) != len(recs) {
			t.Fatalf("%s: %d leaves for %d records", c, len(leaves), len(recs))
		}
		for i, r := range recs {
			want := audit.Record{Offset: 100 + int64(i), Timestamp: r.Timestamp, Key: r.Key, Value: r.Value,
				Headers: []audit.Header{{Key: "content-type", Value: []byte("json")}, {Key: "null"}}}
			if offsets[i] != want.Offset || !bytes.Equal(leaves[i], audit.EncodeLeaf(nil, want)) {
				t.Fatalf("%s: record %d: offset %d leaf %x, want %d %x", c, i, offsets[i], leaves[i], want.Offset, audit.EncodeLeaf(nil, want))
			}
		}
		if first == nil {
			first = leaves
		}
		for i := range leaves {
			if !bytes.Equal(leaves[i], first[i]) {
				t.Fatalf("%s: leaf %d differs from the uncompressed batch's", c, i)
			}
		}
	}
	// Split into two batches: the same leaves.
	b1, _ := batch.Build(recs[:7], batch.BuildOptions{BaseOffset: 100})
	b2, _ := batch.Build(recs[7:], batch.BuildOptions{Codec: batch.Zstd, BaseOffset: 107})
	_, l1 := leavesOf(t, b1)
	_, l2 := leavesOf(t, b2)
	for i, l := range append(l1, l2...) {
		if !bytes.Equal(l, first[i]) {
			t.Fatalf("split batches: leaf %d differs", i)
		}
	}
}

// A LogAppendTime batch's records carry its max timestamp, and a control
// batch's records the control flag, as consumers see them.
func TestAppendLeavesTimestampTypeAndControl(t *testing.T) {
	recs := sampleRecords(3, 1000)
	b, err := batch.Build(recs, batch.BuildOptions{BaseOffset: 7})
	if err != nil {
		t.Fatal(err)
	}
	batch.SetMaxTimestamp(b, true, 5555)
	_, leaves := leavesOf(t, b)
	for i, l := range leaves {
		if ts := int64(binary.BigEndian.Uint64(l[10:])); ts != 5555 {
			t.Fatalf("leaf %d timestamp %d, want the batch's append time 5555", i, ts)
		}
		if l[9] != 0 {
			t.Fatalf("leaf %d flags %x", i, l[9])
		}
	}
	// Mark it a control batch (attributes bit 0x20) and fix the CRC.
	binary.BigEndian.PutUint16(b[21:], binary.BigEndian.Uint16(b[21:])|0x20)
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)))
	_, leaves = leavesOf(t, b)
	for i, l := range leaves {
		if l[9] != 1 {
			t.Fatalf("control leaf %d flags %x", i, l[9])
		}
	}
}

func TestAppendLeavesErrors(t *testing.T) {
	b, _ := batch.Build(sampleRecords(3, 1), batch.BuildOptions{})
	bad := bytes.Clone(b)
	bad[len(bad)-1] ^= 1 // CRC no longer matches
	if err := audit.AppendLeaves(bad, func(int64, []byte) error { return nil }); !errors.Is(err, batch.ErrCorrupt) {
		t.Fatalf("corrupt batch: %v", err)
	}
	stop := errors.New("stop")
	n := 0
	if err := audit.AppendLeaves(b, func(int64, []byte) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("callback error: %v after %d calls", err, n)
	}
}

// Leaves fills the offsets a run skips with absent leaves and refuses
// going back.
func TestLeavesGaps(t *testing.T) {
	l := audit.NewLeaves(10)
	b, _ := batch.Build(sampleRecords(2, 1), batch.BuildOptions{BaseOffset: 12})
	if err := l.AddBatch(b); err != nil {
		t.Fatal(err)
	}
	l.FillTo(16)
	if l.Start() != 10 || l.End() != 16 {
		t.Fatalf("run %d..%d", l.Start(), l.End())
	}
	for _, o := range []int64{10, 11, 14, 15} {
		if !bytes.Equal(l.Hash(o), audit.LeafHash(audit.AbsentLeaf(o))) {
			t.Fatalf("offset %d is not absent", o)
		}
	}
	_, leaves := leavesOf(t, b)
	if !bytes.Equal(l.Hash(13), audit.LeafHash(leaves[1])) {
		t.Fatal("offset 13 is not its record's leaf")
	}
	if err := l.Add(15, audit.LeafHash(nil)); !errors.Is(err, audit.ErrOrder) {
		t.Fatalf("going back: %v", err)
	}
}

// The proof file's record JSON: base64 bytes, null for null.
func TestRecordJSON(t *testing.T) {
	r := audit.Record{Offset: 1, Timestamp: 2, Key: nil, Value: []byte("hi"), Headers: []audit.Header{{Key: "a", Value: nil}, {Key: "\xff", Value: []byte{}}}}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"offset":1,"timestamp":2,"key":null,"value":"aGk=","headers":[{"key":"YQ==","value":null},{"key":"/w==","value":""}],"control":false}`
	if string(b) != want {
		t.Fatalf("json %s\nwant %s", b, want)
	}
	var back audit.Record
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(audit.EncodeLeaf(nil, back), audit.EncodeLeaf(nil, r)) {
		t.Fatal("the record read back encodes another leaf")
	}
}

// A header key is base64 bytes in JSON, never null.
func TestHeaderJSONRejects(t *testing.T) {
	for _, in := range []string{`{"value":null}`, `{"key":null,"value":null}`, `{"key":"a!","value":null}`} {
		var h audit.Header
		if err := json.Unmarshal([]byte(in), &h); err == nil {
			t.Errorf("%s read as %+v", in, h)
		}
	}
}
