package main

import (
	"slices"
	"testing"

	tierlogv1 "github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/internal/partitioner"
)

func TestSplitKey(t *testing.T) {
	for _, tc := range []struct {
		line, sep string
		key       *string
		value     string
	}{
		{"k:v", ":", ptr("k"), "v"},
		{"k:v:w", ":", ptr("k"), "v:w"}, // the first separator only
		{":v", ":", ptr(""), "v"},       // an empty key, not a null one
		{"k:", ":", ptr("k"), ""},
		{"no separator", ":", nil, "no separator"}, // kcat: null key, whole line
		{"", ":", nil, ""},
		{"a::b", "::", ptr("a"), "b"},
	} {
		k, v := splitKey([]byte(tc.line), []byte(tc.sep))
		if (k == nil) != (tc.key == nil) || (k != nil && string(k) != *tc.key) || string(v) != tc.value {
			t.Errorf("splitKey(%q, %q) = %q (nil %v), %q; want %v, %q", tc.line, tc.sep, k, k == nil, v, tc.key, tc.value)
		}
	}
}

func ptr(s string) *string { return &s }

// Records with per-line keys are grouped by their key's partition (input
// order kept within each), null keys left to the server.
func TestProducerGroupsByKeyPartition(t *testing.T) {
	p := &producer{keySep: []byte(":"), partitions: 4}
	keys := []string{"a", "b", "", "a", "c", "b", "a"}
	recs := make([]*tierlogv1.Record, len(keys)+1)
	for i, k := range keys {
		recs[i] = &tierlogv1.Record{Key: []byte(k)}
	}
	recs[len(keys)] = &tierlogv1.Record{} // null key
	seen := map[int]bool{}
	for _, g := range p.group(recs) {
		if !slices.IsSorted(g.idx) {
			t.Errorf("group %v is not in input order", g.idx)
		}
		for _, i := range g.idx {
			seen[i] = true
			if recs[i].Key == nil {
				if g.partition != nil || len(g.idx) != 1 {
					t.Errorf("null-key record in group %v with partition %v, want its own group with none", g.idx, g.partition)
				}
				continue
			}
			if want := partitioner.ForKey(recs[i].Key, 4); g.partition == nil || *g.partition != want {
				t.Errorf("key %q grouped to partition %v, want %d", recs[i].Key, g.partition, want)
			}
		}
	}
	if len(seen) != len(recs) {
		t.Errorf("groups hold %d records, want %d", len(seen), len(recs))
	}
	// With --partition (or without a separator) everything goes in one call.
	part := int32(2)
	p.partition = &part
	if gs := p.group(recs); len(gs) != 1 || len(gs[0].idx) != len(recs) || *gs[0].partition != 2 {
		t.Errorf("with --partition 2: %d groups, want one to partition 2", len(gs))
	}
}
