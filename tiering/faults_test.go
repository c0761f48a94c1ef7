package tiering

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/bucketurl"
	"github.com/tierlog/tierlog/cold/filebucket"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/internal/testutil/faultproxy"
)

// proxiedBucket opens a bucket on a real MinIO server through a
// fault-injecting proxy. The backend makes one attempt per request, so
// every fault reaches the tiering layer's own retries.
func proxiedBucket(t *testing.T, scheme string) (cold.Bucket, *faultproxy.Proxy) {
	m := testutil.StartMinIO(t)
	proxy := faultproxy.Start(t, m.URL())
	var url string
	switch scheme {
	case "minio":
		url = "minio://" + proxy.Addr + "/" + m.Bucket + "/cluster?secure=false"
	case "s3":
		url = "s3://" + m.Bucket + "/cluster?endpoint=" + proxy.URL + "&path_style=true&region=" + testutil.MinIORegion
	}
	b, err := bucketurl.Open(context.Background(), url, cold.Options{
		MaxAttempts: 1, StallTimeout: 2 * time.Second,
		Credentials: &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, proxy
}

// TestTieringThroughFaults uploads and reads back through a proxy that
// answers 503s, resets connections, stalls, and truncates and slows
// bodies. Uploads must retry and finish; local segments must stay until
// their upload is committed (reading everything back proves none was lost);
// reads must return the right bytes or an error, never wrong bytes.
func TestTieringThroughFaults(t *testing.T) {
	for _, scheme := range []string{"minio", "s3"} {
		t.Run(scheme, func(t *testing.T) {
			bucket, proxy := proxiedBucket(t, scheme)
			handles := []*faultproxy.Handle{
				proxy.Add(faultproxy.Rule{Method: "PUT", PathContains: ".seg", Fault: faultproxy.Error, Status: 503, Times: 3}),
				proxy.Add(faultproxy.Rule{Method: "PUT", PathContains: ".seg", Fault: faultproxy.Reset, Skip: 2, Times: 2}),
				proxy.Add(faultproxy.Rule{Method: "PUT", PathContains: "manifest", Fault: faultproxy.Error, Status: 500, Times: 2}),
				proxy.Add(faultproxy.Rule{Method: "HEAD", Fault: faultproxy.Stall, Skip: 1, Times: 1}),
				proxy.Add(faultproxy.Rule{Method: "GET", RangeOnly: true, Fault: faultproxy.Truncate, After: 100, Times: 3}),
				proxy.Add(faultproxy.Rule{Method: "GET", RangeOnly: true, Fault: faultproxy.Error, Status: 503, Skip: 3, Times: 3}),
				proxy.Add(faultproxy.Rule{Method: "GET", RangeOnly: true, Fault: faultproxy.Slow, Delay: time.Millisecond, ChunkSize: 4096, Times: 5}),
			}
			e := newEnv(t, bucket, t.TempDir())
			p := e.open("audit", 0, true)
			defer p.Close()
			produce(t, p, 300)
			e.settle(p)
			checkRecords(t, readAll(t, p, 0), 0, 1500)
			for i, h := range handles {
				if h.Injected() == 0 {
					t.Errorf("rule %d injected no fault (%d matched): the test did not exercise it", i, h.Matched())
				}
			}
			t.Logf("faults injected: %d of %d requests", proxy.Injected(faultproxy.Error)+proxy.Injected(faultproxy.Reset)+
				proxy.Injected(faultproxy.Stall)+proxy.Injected(faultproxy.Truncate)+proxy.Injected(faultproxy.Slow), proxy.Requests())
		})
	}
}

// TestReadFailsClearlyWhenTheStoreIsDown: with every GET failing, a remote
// read returns an error naming the object, not data.
func TestReadFailsClearlyWhenTheStoreIsDown(t *testing.T) {
	bucket, proxy := proxiedBucket(t, "minio")
	e := newEnv(t, bucket, t.TempDir())
	p := e.open("audit", 0, true)
	defer p.Close()
	produce(t, p, 100)
	e.settle(p)
	proxy.Add(faultproxy.Rule{Method: "GET", Fault: faultproxy.Error, Status: 503})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := p.Read(ctx, 0, 1<<20)
	if err == nil || len(res.Records) != 0 {
		t.Fatalf("read with the store down: %d bytes, err %v", len(res.Records), err)
	}
	if !strings.Contains(err.Error(), ".seg") {
		t.Errorf("error does not name the object: %v", err)
	}
	t.Log(err)
}

// TestCorruptRemoteObjectNeverServed flips a byte inside a stored chunk:
// the read fails with ErrCorruptObject naming the key.
func TestCorruptRemoteObjectNeverServed(t *testing.T) {
	root := filepath.Join(t.TempDir(), "bucket")
	bucket, err := filebucket.New(root)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, bucket, t.TempDir())
	p := e.open("audit", 0, true)
	produce(t, p, 100)
	e.settle(p)
	seg := p.Manifest().Segments[0]
	path := filepath.Join(root, filepath.FromSlash(seg.Key))
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/3] ^= 0x20
	os.WriteFile(path, raw, 0o644)
	p.Close()

	e2 := newEnv(t, bucket, e.dataDir) // a fresh cache: the damage is read
	p2 := e2.open("audit", 0, true)
	defer p2.Close()
	// Read sequentially: everything served is right, and the damaged chunk
	// is reported, not served.
	var err2 error
	for off := int64(0); off < p2.EndOffset(); {
		res, err := p2.Read(context.Background(), off, 1<<20)
		if err != nil {
			err2 = err
			break
		}
		recs, derr := batch.DecodeAll(res.Records)
		if derr != nil {
			t.Fatalf("served bytes at %d do not decode: %v", off, derr)
		}
		for _, r := range recs {
			if r.Offset >= off && string(r.Value) != string(testutil.Value(r.Offset, valueSize)) {
				t.Fatalf("served a wrong record at offset %d", r.Offset)
			}
		}
		off = recs[len(recs)-1].Offset + 1
	}
	if !errors.Is(err2, cold.ErrCorruptObject) {
		t.Fatalf("read through a corrupt object: %v, want ErrCorruptObject", err2)
	}
	if !strings.Contains(err2.Error(), seg.Key) {
		t.Errorf("error does not name %s: %v", seg.Key, err2)
	}
	t.Log(err2)
}
