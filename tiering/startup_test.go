package tiering

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/bucketurl"
	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/internal/testutil/faultproxy"
)

// remoteURL names prefix in m's bucket, reached at endpoint (host:port of
// the server or of a proxy in front of it), for the s3 or minio backend.
func remoteURL(scheme string, m *testutil.MinIO, endpoint, prefix string) string {
	if scheme == "minio" {
		return "minio://" + endpoint + "/" + m.Bucket + "/" + prefix + "?secure=false"
	}
	return "s3://" + m.Bucket + "/" + prefix + "?endpoint=http://" + endpoint + "&path_style=true&region=" + testutil.MinIORegion
}

// addIssueFaultMix makes p fail requests as in issue 6's report: 15%
// answered 503, 5% reset, 10% with the reply cut short (the body, or the
// headers of a reply without one). Rules are tried in order, so each
// probability is taken of what the rules before it let through.
func addIssueFaultMix(p *faultproxy.Proxy) {
	p.Add(faultproxy.Rule{Fault: faultproxy.Error, Status: 503, Probability: 0.15})
	p.Add(faultproxy.Rule{Fault: faultproxy.Reset, Probability: 0.05 / 0.85})
	p.Add(faultproxy.Rule{Fault: faultproxy.Truncate, After: 10, Probability: 0.10 / 0.80})
}

// TestStartUpThroughFaults opens the bucket and the store as `tierlog
// serve` does, 12 new nodes and their restarts, through the fault mix that
// stopped 10 of 12 starts: each must start, with the backend's default
// options.
func TestStartUpThroughFaults(t *testing.T) {
	for _, scheme := range []string{"s3", "minio"} {
		t.Run(scheme, func(t *testing.T) {
			m := testutil.StartMinIO(t)
			proxy := faultproxy.Start(t, m.URL())
			addIssueFaultMix(proxy)
			ctx := context.Background()
			creds := &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey}
			for i := range 12 {
				url, dir := remoteURL(scheme, m, proxy.Addr, fmt.Sprintf("start-%d", i)), t.TempDir()
				// A new node creates the marker and records a topic; its
				// restart finds both.
				for start := range 2 {
					b, err := bucketurl.Open(ctx, url, cold.Options{Credentials: creds})
					if err != nil {
						t.Fatalf("node %d, start %d: open bucket: %v", i, start, err)
					}
					s, err := OpenStore(ctx, b, dir, StoreOptions{})
					if err != nil {
						b.Close()
						t.Fatalf("node %d, start %d: open store: %v", i, start, err)
					}
					if start == 0 {
						err = s.PutTopic(ctx, TopicMeta{Name: "t", Partitions: 1})
					} else {
						var ts []TopicMeta
						if ts, err = s.Topics(ctx); err == nil && len(ts) != 1 {
							err = fmt.Errorf("found %d topics, want 1", len(ts))
						}
					}
					b.Close()
					if err != nil {
						t.Fatalf("node %d, start %d: %v", i, start, err)
					}
				}
			}
			for _, f := range []faultproxy.Fault{faultproxy.Error, faultproxy.Reset, faultproxy.Truncate} {
				if proxy.Injected(f) == 0 {
					t.Errorf("no %v fault was injected: the test did not exercise it", f)
				}
			}
			t.Logf("%d requests; injected %d 503s, %d resets, %d cut replies", proxy.Requests(),
				proxy.Injected(faultproxy.Error), proxy.Injected(faultproxy.Reset), proxy.Injected(faultproxy.Truncate))
		})
	}
}

// TestStartUpClaimIsBounded: a store that answers the bucket check but then
// stalls every request for the owner record must not hang the start for
// the sum of every request's retries and stall timeouts (minutes): the
// claim gives up at ClaimTimeout with an error that says so.
func TestStartUpClaimIsBounded(t *testing.T) {
	m := testutil.StartMinIO(t)
	proxy := faultproxy.Start(t, m.URL())
	ctx := context.Background()
	b, err := bucketurl.Open(ctx, remoteURL("s3", m, proxy.Addr, "stalled"),
		cold.Options{Credentials: &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	h := proxy.Add(faultproxy.Rule{PathContains: clusterMarkerKey, Fault: faultproxy.Stall})
	done := make(chan error, 1)
	go func() {
		_, err := OpenStore(ctx, b, t.TempDir(), StoreOptions{ClaimTimeout: time.Second})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "no answer within 1s") {
			t.Fatalf("claim against a stalled store: %v; want an error saying it gave up", err)
		}
		t.Log(err)
	case <-time.After(time.Minute): // far beyond the bound: the claim hangs
		t.Fatal("the claim against a stalled store did not give up within a minute")
	}
	if h.Injected() == 0 {
		t.Fatal("no request for the owner record was stalled: the test did not exercise the bound")
	}
}
