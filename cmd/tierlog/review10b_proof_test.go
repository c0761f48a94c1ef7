package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold/filebucket"
)

// review10bProofs builds a small signed tree (records 0..n-1 of
// topic/0) and returns the inclusion proof files of the offsets asked,
// as JSON objects, and the signer's public key.
func review10bProofs(t *testing.T, n int, offsets ...int64) ([]map[string]json.RawMessage, string) {
	t.Helper()
	ctx := context.Background()
	b, err := filebucket.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key, err := audit.LoadOrCreateKey(filepath.Join(t.TempDir(), "k"), audit.KeyName(0))
	if err != nil {
		t.Fatal(err)
	}
	const prefix = "c1/topic/0/"
	tree, err := audit.OpenTree(ctx, b, prefix, 0)
	if err != nil {
		t.Fatal(err)
	}
	l := audit.NewLeaves(0)
	var recs []audit.Record
	for o := int64(0); o < int64(n); o++ {
		r := audit.Record{Offset: o, Timestamp: 1700000000000 + o, Value: []byte(fmt.Sprintf("value %d", o)), Headers: []audit.Header{{Key: "h", Value: []byte("v")}}}
		recs = append(recs, r)
		if err := l.Add(o, audit.LeafHash(audit.EncodeLeaf(nil, r))); err != nil {
			t.Fatal(err)
		}
	}
	if err := tree.Append(ctx, l); err != nil {
		t.Fatal(err)
	}
	signed, err := audit.Sign(key, audit.Origin("c1", "topic", 0), tree.Size(), tree.Root())
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]json.RawMessage
	for _, o := range offsets {
		p, err := audit.InclusionProof(ctx, b, prefix, uint64(o), tree.Size())
		if err != nil {
			t.Fatal(err)
		}
		raw, err := json.Marshal(audit.NewInclusionFile("topic", 0, recs[o], tree.Size(), p, signed))
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out, key.Public
}

// TestReview10b_ProofFileCaseVariantFields: one proof file that the Go
// verifier and the Python verifier both call valid, for two different
// records. encoding/json matches field names case-insensitively (and
// DisallowUnknownFields does not refuse "OFFSET", "RECORD", ...), the
// last one winning; Python's json (and jq, and any auditor's script)
// read the exact names. The file's "offset"/"record" say offset 1 with
// value "value 1"; tierlog verify-proof proves - and prints - offset 2.
// format.md: "Unknown fields are refused"; a proof file must say one
// thing. Go must refuse the file.
func TestReview10b_ProofFileCaseVariantFields(t *testing.T) {
	t.Parallel()
	ps, pub := review10bProofs(t, 5, 1, 2)
	a, b := ps[0], ps[1]
	var sb strings.Builder
	sb.WriteString("{")
	for _, k := range []string{"format", "topic", "partition", "tree_size", "checkpoint"} {
		fmt.Fprintf(&sb, "%q: %s, ", k, a[k])
	}
	// The exact names carry offset 1's proof, upper-case twins offset 2's.
	for _, k := range []string{"offset", "record", "leaf", "inclusion_proof"} {
		fmt.Fprintf(&sb, "%q: %s, %q: %s, ", k, a[k], strings.ToUpper(k), b[k])
	}
	s := strings.TrimSuffix(sb.String(), ", ") + "}\n"
	file := filepath.Join(t.TempDir(), "proof.json")
	writeFile(t, file, s)
	pyCode, pyOut := pyVerify(t, file, pub)
	r := runCLI(t, nil, "", "verify-proof", file, "--public-key", pub)
	t.Logf("verify_proof.py: exit %d: %s", pyCode, strings.TrimSpace(pyOut))
	t.Logf("tierlog verify-proof: exit %d: %s %s", r.code, strings.TrimSpace(r.stdout), strings.TrimSpace(r.stderr))
	if r.code == 0 {
		t.Fatalf("tierlog verify-proof accepted a proof file whose \"offset\"/\"record\" (offset 1, as Python and jq read it) is not what it verified (%s)", strings.TrimSpace(r.stdout))
	}
}

// TestReview10b_ProofFileHeaderUnknownField: format.md says of proof
// files "Unknown fields are refused" (ParseProofFile sets
// DisallowUnknownFields: "a field this version does not check must not
// pass as checked"). audit.Header has its own UnmarshalJSON, which
// decodes with plain json.Unmarshal: inside a record header any field
// passes - here an "approved_by" the verifier never checked - and
// tierlog verify-proof says valid.
func TestReview10b_ProofFileHeaderUnknownField(t *testing.T) {
	t.Parallel()
	ps, pub := review10bProofs(t, 5, 3)
	var rec map[string]any
	if err := json.Unmarshal(ps[0]["record"], &rec); err != nil {
		t.Fatal(err)
	}
	rec["headers"].([]any)[0].(map[string]any)["approved_by"] = "the auditor"
	raw, _ := json.Marshal(rec)
	ps[0]["record"] = raw
	// An unknown field at the top level is refused (the control).
	top, _ := json.Marshal(map[string]any{"format": json.RawMessage(ps[0]["format"]), "approved_by": "x"})
	if _, err := audit.ParseProofFile(top); err == nil {
		t.Fatal("an unknown top-level field is accepted")
	}
	out, _ := json.Marshal(ps[0])
	file := filepath.Join(t.TempDir(), "proof.json")
	writeFile(t, file, out)
	r := runCLI(t, nil, "", "verify-proof", file, "--public-key", pub)
	if r.code == 0 {
		t.Fatalf("verify-proof accepted a proof file with an unknown field in a record header: %s", strings.TrimSpace(r.stdout))
	}
}
