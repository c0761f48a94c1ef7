package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/tiering"
)

// TestVerifyUnsignedRecordsAreFindings: what verify cannot trust - the
// bucket's cluster marker, topic records, manifests, tiles - disagreeing
// with the signed history is a finding (exit 1, with the object), never a
// skipped partition nor exit 2; and a partition with committed segments
// but no signed checkpoint is one too.
func TestVerifyUnsignedRecordsAreFindings(t *testing.T) {
	t.Parallel()
	orig := writeAuditArchive(t, nil, "file://"+t.TempDir()+"/bucket", 3000, false)
	wantClean(t, orig.verify(t))
	for _, c := range []struct {
		name string
		// edit tampers with the bucket and returns what verify must say
		// first: offset, object, words.
		edit func(tp *tamper) (int64, string, []string)
		args []string
	}{
		{"cluster marker deleted", func(tp *tamper) (int64, string, []string) {
			tp.del("cluster.json")
			return 0, "cluster.json", []string{"cluster marker cluster.json is missing"}
		}, nil},
		{"cluster marker names another cluster", func(tp *tamper) (int64, string, []string) {
			var m map[string]any
			if err := json.Unmarshal(tp.get("cluster.json"), &m); err != nil {
				t.Fatal(err)
			}
			was := m["cluster_id"].(string)
			m["cluster_id"] = "another"
			raw, _ := json.Marshal(m)
			tp.put("cluster.json", raw)
			return 0, "cluster.json", []string{"the bucket's cluster id another is not the one the signed checkpoint", "(" + was + ")"}
		}, nil},
		{"topic record deleted, partition named", func(tp *tamper) (int64, string, []string) {
			tp.del("topics/audit.json")
			return 0, "topics/audit.json", []string{"no record of topic audit"}
		}, []string{"audit", "0"}},
		{"manifest not JSON", func(tp *tamper) (int64, string, []string) {
			key, _ := tp.manifest()
			tp.put(key, []byte("{not json"))
			return 0, key, []string{"the manifest is not valid"}
		}, nil},
		{"checkpoints deleted", func(tp *tamper) (int64, string, []string) {
			for _, size := range tp.checkpointSizes() {
				tp.del(audit.CheckpointKey(tp.prefix, size))
			}
			tp.del(audit.LatestCheckpointKey(tp.prefix))
			key, _ := tp.manifest()
			return 0, key, []string{"checkpoints were removed"}
		}, nil},
		{"signed history deleted", func(tp *tamper) (int64, string, []string) {
			var keys []string
			if err := tp.b.Iter(tp.ctx, tp.prefix+audit.Dir, func(k string) error { keys = append(keys, k); return nil }); err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				tp.del(k)
			}
			tp.editManifests(func(m *tiering.Manifest) {
				for i := range m.Segments {
					m.Segments[i].TreeSize, m.Segments[i].TreeRoot = 0, ""
				}
				m.TreeSize, m.TreeRoot = 0, ""
			})
			key, _ := tp.manifest()
			return 0, key, []string{"no signed history"}
		}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := orig.copyTo(t)
			offset, object, says := c.edit(a.tamper(t))
			r := a.verify(t, c.args...)
			t.Logf("verify: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			wantFinding(t, r, offset, object, says...)
		})
	}
	// A partition with committed segments and a tree, but no checkpoint
	// valid with the keys given, is flagged (besides what the checkpoints
	// say themselves).
	a := orig.copyTo(t)
	tp := a.tamper(t)
	for _, size := range tp.checkpointSizes() {
		tp.del(audit.CheckpointKey(tp.prefix, size))
	}
	tp.del(audit.LatestCheckpointKey(tp.prefix))
	if r := a.verify(t); !strings.Contains(r.stdout, "WARNING: the partition has a Merkle tree") {
		t.Errorf("verify of a partition whose checkpoints were deleted: exit %d, no warning:\n%s", r.code, r.stdout)
	}
	// A topic the bucket holds nothing of is still a usage error.
	if r := orig.verify(t, "nosuch", "0"); r.code != 2 || !strings.Contains(r.stderr, "holds no topic") {
		t.Errorf("verify nosuch 0: exit %d, want 2 and a word on the topic\n%s", r.code, r.stderr)
	}
}
