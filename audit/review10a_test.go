package audit_test

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/internal/batch"
)

// TestReview10a_HeaderKeyNotUTF8: Kafka's wire format lets a header key
// be any bytes (internal/batch accepts them, and non-Java producers send
// them), the leaf encodes them as they are, but the proof file carries
// the key as a JSON string: encoding/json turns invalid UTF-8 into U+FFFD,
// so the file `tierlog prove` writes for such a record never verifies -
// the record in the file is no longer the one in the leaf.
func TestReview10a_HeaderKeyNotUTF8(t *testing.T) {
	b, err := batch.Build([]batch.Record{{Timestamp: 1, Value: []byte("v"), Headers: []batch.RecordHeader{{Key: "\xff\xfeid", Value: []byte("x")}}}}, batch.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var rec audit.Record
	if err := audit.EachRecord(b, func(r audit.Record) error {
		rec = r
		rec.Headers = append([]audit.Header(nil), r.Headers...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	k, err := audit.LoadOrCreateKey(filepath.Join(t.TempDir(), "k"), audit.KeyName(0))
	if err != nil {
		t.Fatal(err)
	}
	leaf := audit.EncodeLeaf(nil, rec)
	signed, err := audit.Sign(k.Signer, audit.Origin("c", "audit", 0), 1, audit.LeafHash(leaf))
	if err != nil {
		t.Fatal(err)
	}
	f := audit.NewInclusionFile("audit", 0, rec, 1, nil, signed)
	v, err := audit.NewVerifier(k.Public)
	if err != nil {
		t.Fatal(err)
	}
	vs := note.VerifierList(v)
	if err := f.Verify(vs); err != nil {
		t.Fatalf("in memory: %v", err)
	}
	data, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	pf, err := audit.ParseProofFile(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := pf.Verify(vs); err != nil {
		t.Fatalf("the proof file of a record in the log does not verify: %v", err)
	}
}
