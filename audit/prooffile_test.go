package audit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold"
)

// proofLog is a tree of records with a checkpoint after each of its
// appends, signed by key.
type proofLog struct {
	b       cold.Bucket
	key     *audit.Key
	records []audit.Record
	signed  map[uint64][]byte
}

func newProofLog(t *testing.T, sizes ...int) *proofLog {
	t.Helper()
	ctx := context.Background()
	key, err := audit.LoadOrCreateKey(filepath.Join(t.TempDir(), "k"), audit.KeyName(0))
	if err != nil {
		t.Fatal(err)
	}
	pl := &proofLog{b: newFileBucket(t), key: key, signed: map[uint64][]byte{}}
	tree, err := audit.OpenTree(ctx, pl.b, prefix, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range sizes {
		l := audit.NewLeaves(int64(tree.Size()))
		for o := int64(tree.Size()); o < int64(size); o++ {
			r := audit.Record{Offset: o, Timestamp: 1700000000000 + o, Value: []byte(fmt.Sprintf("v%d", o))}
			switch o % 3 {
			case 1:
				r.Key, r.Headers = []byte{}, []audit.Header{{Key: "h", Value: nil}, {Key: "g", Value: []byte("x")}}
			case 2:
				r.Key, r.Value, r.Control = []byte("k"), nil, true
			}
			pl.records = append(pl.records, r)
			if err := l.Add(o, audit.LeafHash(audit.EncodeLeaf(nil, r))); err != nil {
				t.Fatal(err)
			}
		}
		if err := tree.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
		if pl.signed[tree.Size()], err = audit.Sign(key, audit.Origin("c1", "topic", 0), tree.Size(), tree.Root()); err != nil {
			t.Fatal(err)
		}
	}
	return pl
}

// inclusion is the proof file of offset against the checkpoint of size,
// through its JSON encoding.
func (pl *proofLog) inclusion(t *testing.T, offset int64, size uint64) *audit.InclusionFile {
	t.Helper()
	p, err := audit.InclusionProof(context.Background(), pl.b, prefix, uint64(offset), size)
	if err != nil {
		t.Fatal(err)
	}
	f := audit.NewInclusionFile("topic", 0, pl.records[offset], size, p, pl.signed[size])
	raw, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	pf, err := audit.ParseProofFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	return pf.(*audit.InclusionFile)
}

func verifiers(t *testing.T, keys ...*audit.Key) note.Verifiers {
	t.Helper()
	var vs []note.Verifier
	for _, k := range keys {
		v, err := audit.NewVerifier(k.Public)
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	return note.VerifierList(vs...)
}

// An inclusion proof file survives its JSON encoding (null and empty keys,
// null header values, control records) and verifies; each alteration an
// auditor could be handed fails, saying what does not hold.
func TestInclusionFile(t *testing.T) {
	pl := newProofLog(t, 300, 700)
	other, err := audit.LoadOrCreateKey(filepath.Join(t.TempDir(), "other"), audit.KeyName(0))
	if err != nil {
		t.Fatal(err)
	}
	vs := verifiers(t, pl.key)
	for _, c := range []struct {
		offset int64
		size   uint64
	}{{0, 300}, {1, 700}, {2, 700}, {299, 300}, {699, 700}} {
		f := pl.inclusion(t, c.offset, c.size)
		if err := f.Verify(vs); err != nil {
			t.Fatalf("offset %d size %d: %v", c.offset, c.size, err)
		}
		// A list of keys holding the right one verifies too.
		if err := f.Verify(verifiers(t, other, pl.key)); err != nil {
			t.Fatalf("offset %d with two keys: %v", c.offset, err)
		}
	}
	otherCP, _ := audit.Sign(pl.key, audit.Origin("c1", "topic", 1), 700, make([]byte, 32))
	for _, c := range []struct {
		name  string
		alter func(f *audit.InclusionFile)
		vs    note.Verifiers
		want  string
	}{
		{"value byte", func(f *audit.InclusionFile) { f.Record.Value[0] ^= 1 }, vs, "not the canonical encoding"},
		{"value and leaf", func(f *audit.InclusionFile) {
			f.Record.Value[0] ^= 1
			f.Leaf = audit.EncodeLeaf(nil, f.Record)
		}, vs, "not in the tree"},
		{"null key made empty", func(f *audit.InclusionFile) { f.Record.Key = []byte{} }, vs, "not the canonical encoding"},
		{"timestamp", func(f *audit.InclusionFile) { f.Record.Timestamp++ }, vs, "not the canonical encoding"},
		{"record offset", func(f *audit.InclusionFile) { f.Record.Offset++ }, vs, "the record is offset"},
		{"offset and leaf", func(f *audit.InclusionFile) {
			f.Offset++
			f.Record.Offset++
			f.Leaf = audit.EncodeLeaf(nil, f.Record)
		}, vs, "not in the tree"},
		{"offset past the tree", func(f *audit.InclusionFile) {
			f.Offset, f.Record.Offset = 700, 700
			f.Leaf = audit.EncodeLeaf(nil, f.Record)
		}, vs, "not a leaf of a tree of size 700"},
		{"proof hash", func(f *audit.InclusionFile) { f.InclusionProof[3][0] ^= 1 }, vs, "not in the tree"},
		{"proof shortened", func(f *audit.InclusionFile) { f.InclusionProof = f.InclusionProof[1:] }, vs, "not in the tree"},
		{"tree size", func(f *audit.InclusionFile) { f.TreeSize = 300 }, vs, "tree size 700"},
		{"checkpoint root", func(f *audit.InclusionFile) {
			f.Checkpoint = strings.Replace(f.Checkpoint, "\n700\n", "\n700\nAAAA", 1)
		}, vs, "signature"},
		{"another key", func(*audit.InclusionFile) {}, verifiers(t, other), "none of them a key given"},
		{"another partition's checkpoint", func(f *audit.InclusionFile) { f.Checkpoint = string(otherCP) }, vs, "topic/1"},
		{"format", func(f *audit.InclusionFile) { f.Format = "x" }, vs, "format"},
	} {
		f := pl.inclusion(t, 3, 700) // a null key, a value
		c.alter(f)
		err := f.Verify(c.vs)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
	if _, err := audit.ParseProofFile([]byte(`{"format":"tierlog-inclusion-proof-v1","extra":1}`)); err == nil {
		t.Error("a proof file with an unknown field parsed")
	}
}

// A consistency proof file verifies between any two checkpoints, and
// fails for a forked checkpoint, an altered proof, checkpoints in the
// wrong order or of another key.
func TestConsistencyFile(t *testing.T) {
	ctx := context.Background()
	pl := newProofLog(t, 100, 256, 300, 1000)
	vs := verifiers(t, pl.key)
	file := func(s1, s2 uint64) *audit.ConsistencyFile {
		p, err := audit.ConsistencyProof(ctx, pl.b, prefix, s1, s2)
		if err != nil {
			t.Fatal(err)
		}
		return audit.NewConsistencyFile("topic", 0, pl.signed[s1], pl.signed[s2], p)
	}
	for _, c := range [][2]uint64{{100, 256}, {100, 1000}, {256, 300}, {300, 300}} {
		if err := file(c[0], c[1]).Verify(vs); err != nil {
			t.Fatalf("%v: %v", c, err)
		}
	}
	if s := file(100, 1000).String(); !strings.Contains(s, "at 1000 records extends its log at 100 records") {
		t.Errorf("summary %q", s)
	}
	fork, err := audit.Sign(pl.key, audit.Origin("c1", "topic", 0), 300, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		alter func(f *audit.ConsistencyFile)
		want  string
	}{
		{"fork", func(f *audit.ConsistencyFile) { f.OldCheckpoint = string(fork) }, "does not extend"},
		{"proof hash", func(f *audit.ConsistencyFile) { f.ConsistencyProof[0][5] ^= 1 }, "does not extend"},
		{"swapped", func(f *audit.ConsistencyFile) { f.OldCheckpoint, f.NewCheckpoint = f.NewCheckpoint, f.OldCheckpoint }, "want 0 < old <= new"},
		{"topic", func(f *audit.ConsistencyFile) { f.Topic = "other" }, "the proof of other/0"},
	} {
		f := file(300, 1000)
		c.alter(f)
		if err := f.Verify(vs); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	other, _ := audit.LoadOrCreateKey(filepath.Join(t.TempDir(), "other"), audit.KeyName(0))
	if err := file(100, 300).Verify(verifiers(t, other)); err == nil || !strings.Contains(err.Error(), "old checkpoint") {
		t.Errorf("another key: %v", err)
	}
}

// Public keys are read from a key string or a file of keys, one a line.
func TestLoadPublicKeys(t *testing.T) {
	dir := t.TempDir()
	var keys []*audit.Key
	for i := range 2 {
		k, err := audit.LoadOrCreateKey(filepath.Join(dir, fmt.Sprint(i)), audit.KeyName(i))
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	path := filepath.Join(dir, "keys.txt")
	if err := os.WriteFile(path, []byte("# node keys\n"+keys[0].Public+"\n\n"+keys[1].Public+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	signed, _ := audit.Sign(keys[1], "tierlog/c/t/0", 1, make([]byte, 32))
	for _, arg := range []string{path, keys[1].Public} {
		vs, err := audit.LoadPublicKeys(arg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := audit.OpenWith(signed, "", vs); err != nil {
			t.Fatalf("%s: %v", arg, err)
		}
	}
	c, err := audit.PeekCheckpoint(signed)
	if err != nil || c.Size != 1 || c.Origin != "tierlog/c/t/0" {
		t.Fatalf("peek: %+v %v", c, err)
	}
	for _, bad := range []string{filepath.Join(dir, "missing"), keys[0].Public + "x", filepath.Join(dir, "0")} {
		if _, err := audit.LoadPublicKeys(bad); err == nil {
			t.Errorf("%q read as public keys", bad)
		}
	}
}

// A proof file's objects (top level, record, headers) must have exactly
// the documented field names, case-sensitive, each once, and nothing may
// follow the object: encoding/json alone would match "OFFSET" to offset,
// keep the last of two, and ignore a field inside a header.
func TestProofFileStrictFields(t *testing.T) {
	pl := newProofLog(t, 100)
	good, err := json.Marshal(audit.NewInclusionFile("topic", 0, pl.records[1], 100, nil, pl.signed[100]))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.ParseProofFile(good); err != nil {
		t.Fatalf("the file as prove writes it: %v", err)
	}
	s := string(good)
	for _, c := range []struct{ name, file, want string }{
		{"a case variant at the top", strings.Replace(s, `"offset":1,`, `"offset":1,"OFFSET":2,`, 1), `"OFFSET" (field names are case-sensitive: the field is "offset")`},
		{"a duplicate at the top", strings.Replace(s, `"offset":1,`, `"offset":1,"offset":2,`, 1), `field "offset" given twice`},
		{"a case variant in the record", strings.Replace(s, `"control":`, `"Control":`, 1), `"Control"`},
		{"a duplicate in the record", strings.Replace(s, `"timestamp":`, `"timestamp":1,"timestamp":`, 1), `"timestamp" given twice`},
		{"an unknown field in a header", strings.Replace(s, `{"key":"aA=="`, `{"approved_by":"x","key":"aA=="`, 1), `unknown field "approved_by"`},
		{"a header field twice", strings.Replace(s, `{"key":"aA=="`, `{"key":"Zw==","key":"aA=="`, 1), `"key" given twice`},
		{"an unknown field in the record", strings.Replace(s, `"control":false`, `"control":false,"x":0`, 1), `unknown field "x"`},
		{"the record missing control", strings.Replace(s, `,"control":false`, ``, 1), `missing field control`},
		{"inclusion_proof not an array", strings.Replace(s, `"inclusion_proof":[]`, `"inclusion_proof":{}`, 1), `want an array`},
		{"a record that is not an object", strings.Replace(s, `"record":{`, `"record":[],"x":{`, 1), `want an object`},
		{"a null header list", strings.Replace(s, `"headers":[{"key":"aA==","value":null},{"key":"Zw==","value":"eA=="}]`, `"headers":null`, 1), `"headers": want an array`},
		{"a null header key", strings.Replace(s, `{"key":"aA=="`, `{"key":null`, 1), `"key": null`},
		{"a second object after it", s + `{}`, `after top-level value`},
	} {
		if c.file == s {
			t.Fatalf("%s: the edit did not apply to %s", c.name, s)
		}
		_, err := audit.ParseProofFile([]byte(c.file))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %s", c.name, err, c.want)
		}
	}
	cons, err := json.Marshal(audit.NewConsistencyFile("topic", 0, pl.signed[100], pl.signed[100], nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.ParseProofFile(cons); err != nil {
		t.Fatalf("a consistency file as prove-consistency writes it: %v", err)
	}
	dup := strings.Replace(string(cons), `"topic":"topic"`, `"topic":"topic","Topic":"other"`, 1)
	if _, err := audit.ParseProofFile([]byte(dup)); err == nil || !strings.Contains(err.Error(), `"Topic"`) {
		t.Errorf("a consistency file with \"Topic\" beside \"topic\": %v", err)
	}
}
