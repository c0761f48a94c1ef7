package tiering

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/testutil"
)

func TestTierReadBackAndRestore(t *testing.T) {
	bucket := newFileBucket(t)
	e := newEnv(t, bucket, t.TempDir())
	p := e.open("audit", 0, true)
	produce(t, p, 300) // ~330 KiB: several 64 KiB segments
	e.settle(p)
	st := p.Status(time.Now())
	if st.RemoteSegments < 4 || st.LocalSegments != 1 || st.LocalStart != p.EndOffset() {
		t.Fatalf("after tiering: %+v", st)
	}
	if p.StartOffset() != 0 {
		t.Fatalf("start offset %d, want 0 (remote)", p.StartOffset())
	}
	checkRecords(t, readAll(t, p, 0), 0, 1500)
	checkRecords(t, readAll(t, p, 733), 733, 1500) // mid-batch, mid-segment
	if off, err := p.OffsetForTime(context.Background(), 1_000_503); err != nil || off != 500 {
		t.Fatalf("offset for time in the remote tier: %d, %v", off, err)
	}
	p.Close()

	// A node that lost its disk: same bucket, empty data directory.
	e2 := restoreEnv(t, bucket, t.TempDir())
	if e2.store.ClusterID != e.store.ClusterID {
		t.Fatalf("restored node took cluster id %s, bucket's is %s", e2.store.ClusterID, e.store.ClusterID)
	}
	p2 := e2.open("audit", 0, true)
	defer p2.Close()
	if p2.EndOffset() != 1500 || p2.StartOffset() != 0 {
		t.Fatalf("restored partition spans %d..%d", p2.StartOffset(), p2.EndOffset())
	}
	checkRecords(t, readAll(t, p2, 0), 0, 1500)
	produce(t, p2, 10)
	checkRecords(t, readAll(t, p2, 1400), 1400, 1550)
}

func TestLocalSegmentsStayUntilCommitted(t *testing.T) {
	e := newEnv(t, newFileBucket(t), t.TempDir())
	p := e.open("t", 0, true)
	defer p.Close()
	produce(t, p, 300)
	p.Log().Roll()
	// Local retention says keep nothing, but nothing is uploaded yet.
	testutil.Eventually(t, 5*time.Second, func() bool { return len(p.Log().SealedSegments()) == len(p.Log().Segments())-1 }, "segments sealed")
	before := len(p.Log().Segments())
	if n := p.Log().ApplyRetention(time.Now()); n != 0 {
		t.Fatalf("local retention deleted %d segments before their upload was committed", n)
	}
	if st := p.Status(time.Now()); st.LagSegments != before-1 || st.LagBytes == 0 {
		t.Fatalf("upload lag not reported: %+v", st)
	}
	e.settle(p)
	checkRecords(t, readAll(t, p, 0), 0, 1500)
}

func TestCleanupAfterCrashMidUpload(t *testing.T) {
	bucket := newFileBucket(t)
	e := newEnv(t, bucket, t.TempDir())
	p := e.open("t", 0, true)
	produce(t, p, 100)
	e.settle(p)
	ctx := context.Background()
	// What a crash mid-upload leaves: an announced attempt whose object is
	// (partly) there, and an object of an attempt never announced.
	sealed := p.Manifest().Segments[0]
	crashKey := segmentKey("t", 0, sealed.NextOffset, 0, "deadbeef")
	p.commit(func(m *Manifest) {
		m.Segments = append(m.Segments, RemoteSegment{BaseOffset: 1 << 40, NextOffset: 1<<40 + 1, ID: "deadbeef", Key: crashKey, State: CopyStarted})
	})
	strayKey := segmentKey("t", 0, 7, 0, "0badf00d")
	for _, k := range []string{crashKey, strayKey} {
		if _, err := bucket.Upload(ctx, k, strings.NewReader("partial"), 7); err != nil {
			t.Fatal(err)
		}
	}
	p.Close()

	p = e.open("t", 0, true)
	defer p.Close()
	if err := e.daemon.cleanup(ctx, p); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{crashKey, strayKey} {
		if ok, _ := bucket.Exists(ctx, k); ok {
			t.Errorf("orphan %s survived cleanup", k)
		}
	}
	for _, s := range p.Manifest().Segments {
		if s.State != CopyFinished {
			t.Errorf("manifest still has %s entry %s", s.State, s.Key)
		}
		if ok, _ := bucket.Exists(ctx, s.Key); !ok {
			t.Errorf("cleanup deleted committed object %s", s.Key)
		}
	}
	checkRecords(t, readAll(t, p, 0), 0, 500)
}

func TestRemoteRetention(t *testing.T) {
	e := newEnv(t, newFileBucket(t), t.TempDir())
	p := e.open("t", 0, true)
	defer p.Close()
	produce(t, p, 300)
	e.settle(p)
	p.mu.Lock()
	p.retention = Retention{Bytes: 150 << 10}
	p.mu.Unlock()
	e.daemon.pass(context.Background())
	m := p.Manifest()
	if m.LogStartOffset == 0 {
		t.Fatal("retention.bytes did not delete remote segments")
	}
	for _, s := range m.Segments {
		if s.State != CopyFinished || s.BaseOffset < m.LogStartOffset {
			t.Fatalf("segment %+v left behind after retention (start %d)", s, m.LogStartOffset)
		}
	}
	start := p.StartOffset()
	if start != m.LogStartOffset {
		t.Fatalf("start %d, manifest log start %d", start, m.LogStartOffset)
	}
	checkRecords(t, readAll(t, p, start), start, 1500)
	_, err := p.Read(context.Background(), 0, 1024)
	var oor *hot.OffsetOutOfRangeError
	if !errors.As(err, &oor) || oor.Start != start || oor.End != 1500 {
		t.Fatalf("read below retention: %v, want out of range %d..1500", err, start)
	}
}

func TestPrefixOwnedByAnotherCluster(t *testing.T) {
	bucket := newFileBucket(t)
	newEnv(t, bucket, t.TempDir())
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, clusterIDFile), []byte("someone-else\n"), 0o644)
	_, err := OpenStore(context.Background(), bucket, other, StoreOptions{})
	if err == nil || !strings.Contains(err.Error(), "one prefix has one writer") {
		t.Fatalf("open on a foreign prefix: %v", err)
	}
	t.Log(err)
}
