package replcheck

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tierlog/tierlog/internal/batch"
)

// history is a partition's log as the leader wrote it: 40 records in
// epoch 0, then 20 in epoch 2, four records a batch.
func history(t testing.TB, p int32) [][]byte {
	t.Helper()
	return append(leaderBatches(t, 0, 0, 4, numbered(p, 0, 40)), leaderBatches(t, 40, 2, 4, numbered(p, 40, 20))...)
}

// upTo returns the batches of h that end at or before offset end.
func upTo(t testing.TB, h [][]byte, end int64) [][]byte {
	t.Helper()
	var out [][]byte
	for _, b := range h {
		hd, err := batch.ParseHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		if hd.NextOffset() <= end {
			out = append(out, b)
		}
	}
	return out
}

// from returns the batches of h that start at or after offset start.
func from(t testing.TB, h [][]byte, start int64) [][]byte {
	t.Helper()
	var out [][]byte
	for _, b := range h {
		hd, err := batch.ParseHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		if hd.BaseOffset >= start {
			out = append(out, b)
		}
	}
	return out
}

func offsets(acks []Ack) []int64 {
	var out []int64
	for _, a := range acks {
		out = append(out, a.Offset)
	}
	return out
}

func TestCleanReplicasPass(t *testing.T) {
	dirs := nodes(t, 3)
	var acks []Ack
	for p := range int32(2) {
		h := history(t, p)
		for _, dir := range dirs {
			writeReplica(t, dir, p, 0, h)
		}
		acks = append(acks, acksOf(t, p, h)...)
	}
	r := mustCheck(t, acks, Options{Partitions: 2, Dirs: dirs})
	if !r.OK() || len(r.Unverified) > 0 {
		t.Fatalf("clean replicas failed the check:\n%s", r)
	}
	for n := range dirs {
		if r.Checked[n] != 120 {
			t.Errorf("node %d: %d records compared, want 120 (60 in each of 2 partitions)", n, r.Checked[n])
		}
	}
	if !strings.HasPrefix(r.String(), "replcheck OK") {
		t.Errorf("summary does not say OK: %s", r)
	}
}

// A replica that is behind, or whose local log starts later, agrees with
// the reference over what it holds: not divergent.
func TestBehindReplicaIsConsistent(t *testing.T) {
	dirs := nodes(t, 3)
	h := history(t, 0)
	writeReplica(t, dirs[1], 0, 0, upTo(t, h, 40)) // behind
	writeReplica(t, dirs[2], 0, 0, h)
	writeReplica(t, dirs[3], 0, 20, from(t, h, 20)) // older history tiered
	r := mustCheck(t, acksOf(t, 0, h), Options{Partitions: 1, Dirs: dirs})
	if !r.OK() {
		t.Fatalf("a behind replica failed the check:\n%s", r)
	}
	// Nodes 2 and 3 end alike; node 2 holds more (starts earlier).
	if r.Reference[0] != 2 {
		t.Errorf("reference node %d, want 2", r.Reference[0])
	}
	want := map[int32]int64{1: 40, 2: 60, 3: 40}
	for n, w := range want {
		if r.Checked[n] != w {
			t.Errorf("node %d: %d records compared, want %d", n, r.Checked[n], w)
		}
	}
}

func TestLostRecord(t *testing.T) {
	h := history(t, 0)
	acks := acksOf(t, 0, h)
	all := numbered(0, 0, 60)
	withoutOne := slices.Delete(slices.Clone(all), 25, 26)
	for _, tc := range []struct {
		name     string
		ref      [][]byte // node 1's log; nodes 2 and 3 hold offsets 0..19
		wantLost []int64
	}{
		// Offset 25 removed and the log rewritten without it: every later
		// record moved down one offset, the last offset is gone.
		{"record removed", append(leaderBatches(t, 0, 0, 4, withoutOne[:40]), leaderBatches(t, 40, 2, 4, withoutOne[40:])...), rangeOf(25, 60)},
		// The tail of the log cut (a truncation too far).
		{"tail cut", upTo(t, h, 52), rangeOf(52, 60)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dirs := nodes(t, 3)
			writeReplica(t, dirs[1], 0, 0, tc.ref)
			writeReplica(t, dirs[2], 0, 0, upTo(t, h, 20))
			writeReplica(t, dirs[3], 0, 0, upTo(t, h, 20))
			r := mustCheck(t, acks, Options{Partitions: 1, Dirs: dirs})
			if r.OK() {
				t.Fatal("a log missing an acknowledged record passed the check")
			}
			if got := offsets(r.Lost); !slices.Equal(got, tc.wantLost) {
				t.Errorf("lost offsets %v, want %v", got, tc.wantLost)
			}
			if len(r.Divergent)+len(r.Duplicates)+len(r.Gaps) > 0 {
				t.Errorf("unexpected findings besides the loss:\n%s", r)
			}
			if want := fmt.Sprintf("LOST partition 0 offset %d", tc.wantLost[0]); !strings.Contains(r.String(), want) {
				t.Errorf("summary does not name %q:\n%s", want, r)
			}
		})
	}
}

func rangeOf(from, to int64) []int64 {
	var out []int64
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

func TestDivergentReplica(t *testing.T) {
	h := history(t, 0)
	acks := acksOf(t, 0, h)
	altered := slices.Clone(h)
	altered[8] = alterValue(t, h[8], 33) // the batch of offsets 32..35
	epochs := slices.Clone(h)
	for i := 10; i < len(epochs); i++ { // offsets 40.. stamped epoch 1, not 2
		epochs[i] = slices.Clone(h[i])
		batch.SetLeaderEpoch(epochs[i], 1)
	}
	rebatched := append(leaderBatches(t, 0, 0, 4, numbered(0, 0, 40)), leaderBatches(t, 40, 2, 2, numbered(0, 40, 20))...)
	for _, tc := range []struct {
		name       string
		node       int32 // the node holding the bad log; the others hold h
		log        [][]byte
		offset     int64
		reason     string
		wantLost   []int64
		divergents int
	}{
		{"value byte altered on a follower", 2, altered, 33, "value", nil, 1},
		{"epoch differs on a follower", 3, epochs, 40, "leader epoch", nil, 1},
		{"batched differently on a follower", 2, rebatched, 40, "batch boundaries differ", nil, 1},
		// Node 1 is the reference (all end alike, lowest id): the ack is
		// lost there and both followers disagree with it.
		{"value byte altered on the reference", 1, altered, 33, "value", []int64{33}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dirs := nodes(t, 3)
			for n, dir := range dirs {
				if n == tc.node {
					writeReplica(t, dir, 0, 0, tc.log)
				} else {
					writeReplica(t, dir, 0, 0, h)
				}
			}
			r := mustCheck(t, acks, Options{Partitions: 1, Dirs: dirs})
			if r.OK() {
				t.Fatal("divergent replicas passed the check")
			}
			if len(r.Divergent) != tc.divergents {
				t.Fatalf("%d divergences, want %d:\n%s", len(r.Divergent), tc.divergents, r)
			}
			for _, d := range r.Divergent {
				if d.Partition != 0 || d.Offset != tc.offset || d.Reference != 1 || d.Node == 1 {
					t.Errorf("divergence %+v, want partition 0 offset %d against reference node 1", d, tc.offset)
				}
				if tc.node != 1 && d.Node != tc.node {
					t.Errorf("divergence names node %d, want %d", d.Node, tc.node)
				}
				if !strings.Contains(d.Reason, tc.reason) {
					t.Errorf("reason %q does not say %q", d.Reason, tc.reason)
				}
				want := fmt.Sprintf("DIVERGENT partition 0 offset %d: node %d differs from reference node 1", tc.offset, d.Node)
				if !strings.Contains(r.String(), want) {
					t.Errorf("summary does not say %q:\n%s", want, r)
				}
			}
			if got := offsets(r.Lost); !slices.Equal(got, tc.wantLost) {
				t.Errorf("lost %v, want %v", got, tc.wantLost)
			}
		})
	}
}

// A producer's retry stored twice: the first attempt was written but its
// acknowledgement lost, the retry was written again and acknowledged.
func TestDuplicateRetry(t *testing.T) {
	recs := numbered(0, 0, 20)
	stored := slices.Concat(recs[:10], recs[5:6], recs[10:]) // offset 10 holds record 5 again
	log := leaderBatches(t, 0, 0, 3, stored)
	var acks []Ack
	for _, a := range acksOf(t, 0, log) {
		if a.Offset != 5 { // the first attempt's ack never arrived
			acks = append(acks, a)
		}
	}
	dirs := nodes(t, 2)
	for _, dir := range dirs {
		writeReplica(t, dir, 0, 0, log)
	}
	r := mustCheck(t, acks, Options{Partitions: 1, Dirs: dirs})
	if r.OK() || len(r.Duplicates) != 1 {
		t.Fatalf("want one duplicate:\n%s", r)
	}
	d := r.Duplicates[0]
	if d.Acked != 10 || !slices.Equal(d.Offsets, []int64{5, 10}) || string(d.Value) != recs[5].value {
		t.Errorf("duplicate %+v, want value %q acked at 10, stored at [5 10]", d, recs[5].value)
	}
	if len(r.Lost)+len(r.Divergent)+len(r.Gaps) > 0 {
		t.Errorf("unexpected findings besides the duplicate:\n%s", r)
	}
	if !strings.Contains(r.String(), "stored at offsets [5 10]") {
		t.Errorf("summary does not name the offsets:\n%s", r)
	}
}

// Records written but never acknowledged may exist: unacknowledged
// records, even the same value twice, are not findings.
func TestUnacknowledgedRecordsAllowed(t *testing.T) {
	recs := numbered(0, 0, 20)
	stored := slices.Concat(recs, recs[15:]) // an unacknowledged retry of the tail
	log := leaderBatches(t, 0, 0, 5, stored)
	dirs := nodes(t, 1)
	writeReplica(t, dirs[1], 0, 0, log)
	r := mustCheck(t, acksOf(t, 0, log)[:15], Options{Partitions: 1, Dirs: dirs})
	if !r.OK() {
		t.Fatalf("unacknowledged records failed the check:\n%s", r)
	}
}

// A batch whose offsets skip one (as compaction leaves them) is a gap
// inside the replica's log.
func TestGap(t *testing.T) {
	recs := numbered(0, 0, 44)
	log := slices.Concat(leaderBatches(t, 0, 0, 4, recs[:40]),
		[][]byte{skipSecondOffset(t, leaderBatches(t, 40, 0, 2, recs[40:42])[0])}, // offsets 40 and 42
		leaderBatches(t, 43, 0, 4, recs[42:]))
	dirs := nodes(t, 1)
	writeReplica(t, dirs[1], 0, 0, log)
	r := mustCheck(t, nil, Options{Partitions: 1, Dirs: dirs})
	want := []Gap{{Partition: 0, Node: 1, From: 41, To: 42}}
	if r.OK() || !slices.Equal(r.Gaps, want) {
		t.Fatalf("gaps %+v, want %+v:\n%s", r.Gaps, want, r)
	}
	if !strings.Contains(r.String(), "GAP partition 0 node 1: offsets 41 to 41 missing") {
		t.Errorf("summary does not name the gap:\n%s", r)
	}
}

// Acks below every replica's local log start are lost unless the caller
// says history was tiered, then unverified.
func TestAcksBelowLocalStart(t *testing.T) {
	h := history(t, 0)
	dirs := nodes(t, 2)
	for _, dir := range dirs {
		writeReplica(t, dir, 0, 20, from(t, h, 20))
	}
	acks := acksOf(t, 0, h)
	r := mustCheck(t, acks, Options{Partitions: 1, Dirs: dirs})
	if got := offsets(r.Lost); r.OK() || !slices.Equal(got, rangeOf(0, 20)) {
		t.Errorf("without Tiered: lost %v, want offsets 0..19", got)
	}
	r = mustCheck(t, acks, Options{Partitions: 1, Dirs: dirs, Tiered: true})
	if got := offsets(r.Unverified); !r.OK() || !slices.Equal(got, rangeOf(0, 20)) {
		t.Errorf("with Tiered: OK %v, unverified %v, want offsets 0..19:\n%s", r.OK(), got, r)
	}
	// Below the reference's start another replica may still hold them,
	// and is checked.
	alteredOld := slices.Clone(h)
	alteredOld[1] = alterValue(t, h[1], 6)
	dirs3 := nodes(t, 2)
	writeReplica(t, dirs3[1], 0, 0, upTo(t, alteredOld, 40)) // holds old offsets, altered at 6
	writeReplica(t, dirs3[2], 0, 20, from(t, h, 20))         // the reference
	r = mustCheck(t, acks, Options{Partitions: 1, Dirs: dirs3, Tiered: true})
	if r.Reference[0] != 2 || !slices.Equal(offsets(r.Lost), []int64{6}) || len(r.Unverified) != 0 {
		t.Errorf("want offset 6 lost on node 1 below reference node 2's start, nothing unverified:\n%s", r)
	}
}

func TestAbsentPartition(t *testing.T) {
	dirs := nodes(t, 3)
	h := history(t, 0)
	writeReplica(t, dirs[1], 0, 0, h)
	writeReplica(t, dirs[2], 0, 0, h)
	acks := acksOf(t, 0, h)
	r := mustCheck(t, acks, Options{Partitions: 2, Dirs: dirs})
	if !r.OK() || !slices.Equal(r.Absent[0], []int32{3}) || !slices.Equal(r.Absent[1], []int32{1, 2, 3}) {
		t.Fatalf("want OK with partition 0 absent on node 3, partition 1 on all:\n%s", r)
	}
	// An ack for a partition no node holds is lost.
	r = mustCheck(t, append(acks, Ack{Partition: 1, Offset: 0, Value: []byte("x")}), Options{Partitions: 2, Dirs: dirs})
	if r.OK() || len(r.Lost) != 1 || r.Lost[0].Partition != 1 {
		t.Fatalf("want the partition-1 ack lost:\n%s", r)
	}
}

func TestBadOptions(t *testing.T) {
	dirs := nodes(t, 1)
	if _, err := Check(nil, Options{Topic: topic, Dirs: dirs}); err == nil {
		t.Error("zero partitions: no error")
	}
	if _, err := Check(nil, Options{Topic: topic, Partitions: 1}); err == nil {
		t.Error("no nodes: no error")
	}
	if _, err := Check([]Ack{{Partition: 3}}, Options{Topic: topic, Partitions: 1, Dirs: dirs}); err == nil {
		t.Error("ack for partition 3 of 1: no error")
	}
}

// Check and Records read a copy: the node's files are left as they were,
// a torn tail included, and what is read is what a restart recovers.
func TestReadsLeaveTheNodeUnchanged(t *testing.T) {
	h := history(t, 0)
	dirs := nodes(t, 1)
	writeReplica(t, dirs[1], 0, 0, h)
	pdir := PartitionDir(dirs[1], topic, 0)
	segs, err := filepath.Glob(filepath.Join(pdir, "*.log"))
	if err != nil || len(segs) < 2 {
		t.Fatalf("want several segments, got %v (%v)", segs, err)
	}
	f, err := os.OpenFile(segs[len(segs)-1], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(h[3][:30]); err != nil { // a torn batch
		t.Fatal(err)
	}
	f.Close()
	before := snapshot(t, dirs[1])

	r := mustCheck(t, acksOf(t, 0, h), Options{Partitions: 1, Dirs: dirs})
	if !r.OK() || r.Checked[1] != 60 {
		t.Fatalf("want OK with 60 records:\n%s", r)
	}
	recs, err := Records(dirs[1], topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 60 {
		t.Fatalf("%d records, want 60", len(recs))
	}
	for i, rec := range recs {
		want := numbered(0, i, 1)[0]
		epoch := int32(0)
		if i >= 40 {
			epoch = 2
		}
		if rec.Offset != int64(i) || string(rec.Key) != want.key || string(rec.Value) != want.value || rec.Epoch != epoch {
			t.Fatalf("record %d: %+v, want offset %d key %q value %q epoch %d", i, rec, i, want.key, want.value, epoch)
		}
	}
	if after := snapshot(t, dirs[1]); !maps.Equal(before, after) {
		t.Fatalf("the node's files changed:\nbefore %v\nafter  %v", before, after)
	}
	if _, err := Records(dirs[1], topic, 7); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing partition: %v, want not-exist", err)
	}
}

// snapshot is every file under dir with a hash of its contents.
func snapshot(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		out[path] = sha256.Sum256(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A replica whose stored bytes fail their CRC cannot be checked: Check
// says so, naming the node, rather than comparing what it cannot trust.
func TestCorruptReplicaIsAnError(t *testing.T) {
	h := history(t, 0)
	dirs := nodes(t, 2)
	for _, dir := range dirs {
		writeReplica(t, dir, 0, 0, h)
	}
	seg := filepath.Join(PartitionDir(dirs[2], topic, 0), "00000000000000000000.log")
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	b[len(h[0])+batch.HeaderSize+12] ^= 0xff // inside the second batch's records
	if err := os.WriteFile(seg, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Check(acksOf(t, 0, h), Options{Topic: topic, Partitions: 1, Dirs: dirs})
	if err == nil || !strings.Contains(err.Error(), "node 2") {
		t.Fatalf("corrupt replica: error %v, want one naming node 2", err)
	}
	t.Log(err)
}
