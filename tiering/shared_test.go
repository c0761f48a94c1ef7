package tiering

import (
	"context"
	"encoding/binary"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/bucketurl"
	"github.com/tierlog/tierlog/cold/filebucket"
	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/testutil"
)

// sharedBuckets returns n clients of one bucket prefix, as n nodes see it:
// a directory for the file backend, a real MinIO for the minio backend.
func sharedBuckets(t *testing.T, backend string, n int) []cold.Bucket {
	var out []cold.Bucket
	var m *testutil.MinIO
	dir := filepath.Join(t.TempDir(), "bucket")
	if backend == "minio" {
		m = testutil.StartMinIO(t)
	}
	for range n {
		var b cold.Bucket
		var err error
		if m == nil {
			b, err = filebucket.New(dir)
		} else {
			b, err = bucketurl.Open(context.Background(), remoteURL("minio", m, m.Endpoint, "cluster"),
				cold.Options{Credentials: &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey}})
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		out = append(out, b)
	}
	return out
}

func sharedEnv(t *testing.T, b cold.Bucket) *env {
	t.Helper()
	return newEnvOpts(t, b, t.TempDir(), StoreOptions{Shared: true, ClusterID: "cluster-1"})
}

// replicate copies the batches leader holds past follower's end, as
// replication does (AppendReplica keeps offsets and epochs).
func replicate(t *testing.T, leader, follower *Partition) {
	t.Helper()
	for off := follower.EndOffset(); off < leader.EndOffset(); {
		res, err := leader.Log().Read(off, 1<<20)
		if err != nil {
			t.Fatalf("replicate: read at %d: %v", off, err)
		}
		for data := res.Records; len(data) >= 12; {
			n := 12 + int(binary.BigEndian.Uint32(data[8:12]))
			if _, err := follower.Log().AppendReplica(data[:n]); err != nil {
				t.Fatalf("replicate at %d: %v", off, err)
			}
			data = data[n:]
		}
		off = follower.EndOffset()
	}
}

// segmentObjects lists the segment objects in the bucket under a
// partition's prefix.
func segmentObjects(t *testing.T, b cold.Bucket, topic string, part int32) []string {
	t.Helper()
	var keys []string
	err := b.Iter(context.Background(), PartitionPrefix(topic, part), func(key string) error {
		if strings.HasSuffix(key, ".seg") {
			keys = append(keys, key)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// checkContinuous fails unless the manifest's committed segments cover
// from..to without gap or overlap, each uploaded once (one object per
// offset range: the bucket holds exactly the objects the manifest names).
func checkContinuous(t *testing.T, b cold.Bucket, m *Manifest, from, to int64) {
	t.Helper()
	next := from
	var named []string
	for _, s := range m.committed() {
		if s.BaseOffset != next {
			t.Fatalf("manifest version %d: segment at %d, want %d (segments %+v)", m.Version, s.BaseOffset, next, m.Segments)
		}
		next = s.NextOffset
		named = append(named, s.Key)
	}
	if next != to {
		t.Fatalf("manifest version %d ends at %d, want %d", m.Version, next, to)
	}
	objs := segmentObjects(t, b, m.Topic, m.Partition)
	slices.Sort(named)
	if !slices.Equal(objs, named) {
		t.Fatalf("bucket holds segment objects %v, the manifest names %v: orphans or missing objects", objs, named)
	}
}

// TestSharedLeaderMoves: two nodes share a prefix; leadership moves from
// one to the other mid-upload while the old leader, never told, keeps
// tiering. Every segment is uploaded once, under the leader epoch that
// uploaded it; the manifest stays continuous; the old leader's manifest
// write is refused and it stops; the object it uploaded and could not
// name is swept; a follower's local retention waits for the manifest; a
// wiped replica reads the old offsets from the bucket.
func TestSharedLeaderMoves(t *testing.T) {
	for _, backend := range []string{"file", "minio"} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			bs := sharedBuckets(t, backend, 3)
			a, b := sharedEnv(t, bs[0]), sharedEnv(t, bs[1])
			pa, pb := a.open("orders", 0, true), b.open("orders", 0, true)
			defer pa.Close()
			defer pb.Close()
			if err := pa.Log().SetLeaderEpoch(1); err != nil {
				t.Fatal(err)
			}
			pa.SetLeadership(1, true)
			pb.SetLeadership(1, false)

			// Epoch 1: A leads and uploads; B follows.
			produce(t, pa, 300)
			replicate(t, pa, pb)
			a.settle(pa)
			end1 := pa.UploadedEnd()
			pb.Log().Roll()
			b.daemon.pass(ctx) // the follower's daemon spends nothing on it
			if n := len(segmentObjects(t, bs[0], "orders", 0)); n != len(pa.Manifest().committed()) {
				t.Fatalf("%d objects after the follower's pass, want %d", n, len(pa.Manifest().committed()))
			}
			// The follower's local retention waits for the manifest.
			pb.Log().ApplyRetention(time.Now())
			if s := pb.Log().StartOffset(); s != 0 {
				t.Fatalf("follower deleted local segments up to %d before it read the manifest", s)
			}
			if err := pb.RefreshManifest(ctx); err != nil {
				t.Fatal(err)
			}
			if pb.UploadedEnd() != end1 {
				t.Fatalf("follower's manifest ends at %d, the leader's at %d", pb.UploadedEnd(), end1)
			}
			pb.Log().ApplyRetention(time.Now())
			if s := pb.Log().StartOffset(); s == 0 || s > end1 {
				t.Fatalf("follower's local start %d after refresh, want in (0, %d]", s, end1)
			}
			checkRecords(t, readAll(t, pb, 0), 0, pb.EndOffset()) // below its start: from the bucket

			// A keeps producing (acknowledged up to the high watermark,
			// replicated) and starts its next upload; between the upload
			// and its manifest write, B is made leader at epoch 2.
			produce(t, pa, 100)
			replicate(t, pa, pb)
			pa.Log().Roll()
			moved := false
			pa.testHookUploaded = func() {
				if moved {
					return
				}
				moved = true
				if err := pb.Log().SetLeaderEpoch(2); err != nil {
					t.Error(err)
				}
				pb.SetLeadership(2, true)
				b.daemon.pass(ctx) // B claims: the manifest moves on
			}
			testutil.Eventually(t, 10*time.Second, func() bool { // the roll's seal lands in the background
				a.daemon.pass(ctx)
				return moved
			}, "A uploads the rolled segment")
			_, _, stopped := pa.Leadership()
			if !errors.Is(stopped, ErrNotLeader) {
				t.Fatalf("old leader after losing the manifest: stopped=%v, want ErrNotLeader", stopped)
			}
			t.Log(stopped)
			m, _, _, err := pb.readShared(ctx)
			if err != nil || m.LeaderEpoch != 2 {
				t.Fatalf("bucket manifest %+v, %v; want one written at epoch 2", m, err)
			}
			// The object A uploaded and could not name was swept by B's
			// claim, before B's first upload.
			checkContinuous(t, bs[2], m, 0, m.uploadedUpTo())

			// B continues where A stopped; A, told nothing, keeps trying.
			produce(t, pb, 200)
			replicate(t, pb, pa)
			b.settle(pb)
			pa.Log().Roll()
			a.daemon.pass(ctx)
			a.daemon.cleanupAll(ctx)
			if err := pa.WaitUploaded(ctx, pa.EndOffset()); !errors.Is(err, ErrNotLeader) {
				t.Fatalf("WaitUploaded on the fenced leader: %v, want ErrNotLeader", err)
			}
			b.daemon.cleanupAll(ctx) // the periodic sweep
			m, _, _, err = pb.readShared(ctx)
			if err != nil {
				t.Fatal(err)
			}
			checkContinuous(t, bs[2], m, 0, pb.UploadedEnd())
			if pb.UploadedEnd() < pb.EndOffset()-1000 {
				t.Fatalf("B uploaded up to %d of %d", pb.UploadedEnd(), pb.EndOffset())
			}
			for _, s := range m.committed() {
				wantEpoch := int32(1)
				if s.BaseOffset >= end1 {
					wantEpoch = 2 // A's upload in flight at the move was B's to redo
				}
				if s.LeaderEpoch != wantEpoch || len(s.Epochs) == 0 {
					t.Fatalf("segment %d..%d uploaded at epoch %d (batch epochs %v), want %d", s.BaseOffset, s.NextOffset, s.LeaderEpoch, s.Epochs, wantEpoch)
				}
			}

			// A stale SetLeadership (old metadata) cannot take it back.
			etag := pb.etag
			pa.SetLeadership(1, true)
			a.daemon.pass(ctx)
			if _, _, stopped := pa.Leadership(); !errors.Is(stopped, ErrNotLeader) {
				t.Fatalf("leader at stale epoch 1: stopped=%v, want ErrNotLeader", stopped)
			}
			if attrs, err := bs[2].Attributes(ctx, sharedManifestKey("orders", 0)); err != nil || attrs.ETag != etag {
				t.Fatalf("manifest changed by the stale leader: %+v, %v", attrs, err)
			}

			// A wiped replica starting at the leader's local start reads
			// the older offsets from the bucket.
			c := sharedEnv(t, bs[2])
			pc, err := OpenPartition(ctx, PartitionOptions{Dir: filepath.Join(c.dataDir, "orders", "0"), Topic: "orders",
				Hot: hotConfig(), HotOptions: hot.Options{InitialOffset: pb.Log().StartOffset()},
				Store: c.store, Reader: c.reader, Remote: true, Retention: Retention{Bytes: -1}})
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			replicate(t, pb, pc)
			checkRecords(t, readAll(t, pc, 0), 0, pb.EndOffset())
		})
	}
}

// TestSharedMarker: the marker records the cluster; nodes of it share the
// prefix, another cluster's node and a single node are refused, and a
// single node's prefix becomes shared only with a takeover, which fences
// the single node off.
func TestSharedMarker(t *testing.T) {
	ctx := context.Background()
	bucket := newFileBucket(t)
	shared := func(cluster string, takeover bool) (*Store, error) {
		return OpenStore(ctx, bucket, t.TempDir(), StoreOptions{Shared: true, ClusterID: cluster, Takeover: takeover})
	}

	// A single node owns the prefix first.
	single := newEnv(t, bucket, t.TempDir())
	ps := single.open("t", 0, true)
	defer ps.Close()
	produce(t, ps, 100)
	single.settle(ps)
	id := single.store.ClusterID
	if _, err := shared(id, false); err == nil || !strings.Contains(err.Error(), "--takeover") {
		t.Fatalf("cluster node on a single node's prefix: %v, want a refusal naming --takeover", err)
	}
	if _, err := shared("other", true); err == nil || !strings.Contains(err.Error(), "belongs to cluster "+id) {
		t.Fatalf("other cluster with takeover: %v, want a refusal naming cluster %s", err, id)
	}
	if got, err := LocalClusterID(single.dataDir); err != nil || got != id {
		t.Fatalf("LocalClusterID: %q, %v; want %s", got, err, id)
	}

	// The upgrade: once with takeover; then every node of the cluster.
	s1, err := shared(id, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := shared(id, false); err != nil {
		t.Fatalf("second node of the cluster: %v", err)
	}
	if _, err := single.store.Bucket.Upload(ctx, "late", strings.NewReader("x"), 1); !errors.Is(err, ErrFenced) {
		t.Fatalf("the single node's write after the upgrade: %v, want ErrFenced", err)
	}
	if _, err := OpenStore(ctx, bucket, t.TempDir(), StoreOptions{Takeover: true}); err == nil || !strings.Contains(err.Error(), "shared by the nodes of cluster") {
		t.Fatalf("single node on a shared prefix: %v, want a refusal", err)
	}
	if _, err := shared("other", false); err == nil {
		t.Fatal("a node of another cluster opened the shared prefix")
	}
	if _, err := OpenStore(ctx, bucket, t.TempDir(), StoreOptions{Shared: true}); err == nil {
		t.Fatal("shared without a cluster id opened")
	}

	// The upgraded partition: its leader claims the single node's history.
	e := &env{t: t, dataDir: t.TempDir(), bucket: bucket, store: s1, reader: single.reader}
	e.daemon = NewDaemon(s1, DaemonOptions{TmpDir: filepath.Join(e.dataDir, "tmp"), Logger: testLogger(t), ChunkBytes: 16 << 10})
	p := e.open("t", 0, true)
	defer p.Close()
	if p.EndOffset() != ps.EndOffset() {
		t.Fatalf("upgraded replica starts at %d, want %d", p.EndOffset(), ps.EndOffset())
	}
	p.SetLeadership(3, true)
	produce(t, p, 50)
	e.settle(p)
	m, etag, found, err := p.readShared(ctx)
	if err != nil || !found || etag == "" || m.LeaderEpoch != 3 {
		t.Fatalf("shared manifest after the upgrade: %+v found=%v, %v", m, found, err)
	}
	checkContinuous(t, bucket, m, 0, p.UploadedEnd())
	var copies []string
	bucket.Iter(ctx, PartitionPrefix("t", 0), func(key string) error {
		if _, ok := parseManifestKey(key); ok {
			copies = append(copies, key)
		}
		return nil
	})
	if len(copies) != 0 {
		t.Fatalf("versioned manifest copies left after the claim: %v", copies)
	}
	checkRecords(t, readAll(t, p, 0), 0, p.EndOffset())
}

// TestSharedTopicWriter: on a shared prefix only the topic writer writes
// topic records; on a single node's prefix the node always does.
func TestSharedTopicWriter(t *testing.T) {
	ctx := context.Background()
	bucket := newFileBucket(t)
	a := sharedEnv(t, bucket)
	b := sharedEnv(t, bucket)
	b.store.SetTopicWriter(true)
	if err := a.store.PutTopic(ctx, TopicMeta{Name: "x", Partitions: 9}); err != nil {
		t.Fatal(err)
	}
	if ts, err := a.store.Topics(ctx); err != nil || len(ts) != 0 {
		t.Fatalf("non-writer's PutTopic reached the bucket: %+v, %v", ts, err)
	}
	for range 2 { // repeated: the same record
		if err := b.store.PutTopic(ctx, TopicMeta{Name: "x", Partitions: 3}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.store.DeleteTopic(ctx, "x", 3); err != nil {
		t.Fatal(err)
	}
	if ts, err := b.store.Topics(ctx); err != nil || len(ts) != 1 || ts[0].Partitions != 3 || ts[0].Deleting {
		t.Fatalf("topics %+v, %v; want x with 3 partitions, untouched by the non-writer's delete", ts, err)
	}
	if err := b.store.DeleteTopic(ctx, "x", 3); err != nil {
		t.Fatal(err)
	}
	if ts, err := a.store.Topics(ctx); err != nil || len(ts) != 0 {
		t.Fatalf("after the writer's delete: %+v, %v", ts, err)
	}
}

// TestSharedStaleLeaderKeepsTrying: a leader deposed without being told
// uploads its next segment after the new leader's claim. Its manifest
// write is refused, it stops, and its object - named by no manifest - is
// deleted by the new leader's sweep; the new leader uploads those offsets
// itself, once.
func TestSharedStaleLeaderKeepsTrying(t *testing.T) {
	for _, backend := range []string{"file", "minio"} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			bs := sharedBuckets(t, backend, 2)
			a, b := sharedEnv(t, bs[0]), sharedEnv(t, bs[1])
			pa, pb := a.open("s", 0, true), b.open("s", 0, true)
			defer pa.Close()
			defer pb.Close()
			pa.SetLeadership(1, true)
			pb.SetLeadership(1, false)
			produce(t, pa, 200)
			replicate(t, pa, pb)
			a.settle(pa)
			end1 := pa.UploadedEnd()

			pb.SetLeadership(2, true)
			b.daemon.pass(ctx) // the claim: nothing to upload yet
			if _, _, stopped := pb.Leadership(); stopped != nil {
				t.Fatal(stopped)
			}
			produce(t, pa, 100) // A, not told, goes on
			replicate(t, pa, pb)
			pa.Log().Roll()
			testutil.Eventually(t, 10*time.Second, func() bool {
				a.daemon.pass(ctx)
				_, _, stopped := pa.Leadership()
				return stopped != nil
			}, "the deposed leader stops at its manifest write")
			orphans := 0
			for _, k := range segmentObjects(t, bs[0], "s", 0) {
				if base, _, _ := parseSegmentKey(k); base >= end1 {
					orphans++
				}
			}
			if orphans != 1 {
				t.Fatalf("%d objects past the manifest after the deposed leader's upload, want its one", orphans)
			}
			b.daemon.cleanupAll(ctx)
			b.settle(pb)
			m, _, _, err := pb.readShared(ctx)
			if err != nil {
				t.Fatal(err)
			}
			checkContinuous(t, bs[1], m, 0, pb.EndOffset())
			for _, s := range m.committed() {
				if (s.BaseOffset >= end1) != (s.LeaderEpoch == 2) {
					t.Fatalf("segment %d..%d uploaded at epoch %d; the handover was at %d", s.BaseOffset, s.NextOffset, s.LeaderEpoch, end1)
				}
			}
			checkRecords(t, readAll(t, pb, 0), 0, pb.EndOffset())
		})
	}
}

// TestSharedLineageByEpoch: a leader whose log does not hold what the
// manifest's last segment copied - other leader epochs at those offsets,
// or a log that ends before it - stops tiering instead of uploading
// offsets the bucket already holds with other records.
func TestSharedLineageByEpoch(t *testing.T) {
	ctx := context.Background()
	bs := sharedBuckets(t, "file", 3)
	a, b, c := sharedEnv(t, bs[0]), sharedEnv(t, bs[1]), sharedEnv(t, bs[2])
	pa, pb := a.open("l", 0, true), b.open("l", 0, true)
	defer pa.Close()
	defer pb.Close()
	if err := pa.Log().SetLeaderEpoch(1); err != nil {
		t.Fatal(err)
	}
	pa.SetLeadership(1, true)
	produce(t, pa, 100)
	a.settle(pa)
	etag, _ := bs[0].Attributes(ctx, sharedManifestKey("l", 0))

	// B's log has records at the same offsets, appended at epoch 0: not
	// the records the bucket holds.
	produce(t, pb, 150)
	pb.SetLeadership(2, true)
	pb.Log().Roll()
	b.daemon.pass(ctx)
	if _, _, stopped := pb.Leadership(); !errors.Is(stopped, ErrNotLeader) || !strings.Contains(stopped.Error(), "diverged") {
		t.Fatalf("leader with a diverged log: stopped=%v, want ErrNotLeader naming the divergence", stopped)
	}

	// C's log is empty (opened as new, so not started past the bucket's
	// history): it ends before what the bucket holds.
	pc, err := OpenPartition(ctx, PartitionOptions{Dir: filepath.Join(c.dataDir, "l", "0"), Topic: "l", Hot: hotConfig(),
		Store: c.store, Reader: c.reader, Remote: true, Retention: Retention{Bytes: -1}, New: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c.daemon.Add(pc)
	pc.SetLeadership(3, true)
	c.daemon.pass(ctx)
	if _, _, stopped := pc.Leadership(); !errors.Is(stopped, ErrNotLeader) || !strings.Contains(stopped.Error(), "log ends at 0") {
		t.Fatalf("leader with a short log: stopped=%v, want ErrNotLeader naming its end", stopped)
	}
	if got, err := bs[0].Attributes(ctx, sharedManifestKey("l", 0)); err != nil || got.ETag != etag.ETag {
		t.Fatalf("the manifest changed: %+v, %v", got, err)
	}
	checkContinuous(t, bs[0], pa.Manifest(), 0, 500)
}

// TestSharedDeposedSweepDeletesNothing: a leader deposed without being
// told runs its orphan sweep after the new leader uploaded: the objects it
// does not know are the new leader's, and it must not delete them. It
// finds the manifest moved, stops, and deletes nothing.
func TestSharedDeposedSweepDeletesNothing(t *testing.T) {
	ctx := context.Background()
	bs := sharedBuckets(t, "file", 2)
	a, b := sharedEnv(t, bs[0]), sharedEnv(t, bs[1])
	pa, pb := a.open("w", 0, true), b.open("w", 0, true)
	defer pa.Close()
	defer pb.Close()
	pa.SetLeadership(1, true)
	produce(t, pa, 100)
	replicate(t, pa, pb)
	a.settle(pa)
	pb.SetLeadership(2, true)
	produce(t, pb, 100)
	b.settle(pb)
	before := segmentObjects(t, bs[0], "w", 0)
	if len(before) <= len(pa.Manifest().committed()) {
		t.Fatalf("B uploaded nothing: %v", before)
	}
	a.daemon.cleanupAll(ctx)
	if after := segmentObjects(t, bs[0], "w", 0); !slices.Equal(before, after) {
		t.Fatalf("the deposed leader's sweep changed the bucket: %v -> %v", before, after)
	}
	if _, _, stopped := pa.Leadership(); !errors.Is(stopped, ErrNotLeader) {
		t.Fatalf("deposed leader after its sweep: stopped=%v, want ErrNotLeader", stopped)
	}
	m, _, _, err := pb.readShared(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkContinuous(t, bs[1], m, 0, pb.EndOffset())
}
