package miniobucket_test

import (
	"context"
	"testing"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/coldtest"
	"github.com/tierlog/tierlog/cold/miniobucket"
	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/internal/testutil/faultproxy"
)

// The MinIO backend against real MinIO behind a fault-injecting proxy.
func TestFaults(t *testing.T) {
	m := testutil.StartMinIO(t)
	p := faultproxy.Start(t, m.URL())
	coldtest.FaultTest(t, p, func(t *testing.T, opts cold.Options) cold.Bucket {
		opts.Credentials = creds(m)
		// The region is given so no bucket-location request goes through
		// the faults.
		url := "minio://" + p.Addr + "/" + m.Bucket + "/faults?secure=false&region=" + testutil.MinIORegion
		b, err := miniobucket.Open(context.Background(), url, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	})
}
