package s3bucket_test

import (
	"context"
	"testing"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/coldtest"
	"github.com/tierlog/tierlog/cold/s3bucket"
	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/internal/testutil/faultproxy"
)

// The S3 backend against real MinIO behind a fault-injecting proxy.
func TestFaults(t *testing.T) {
	m := testutil.StartMinIO(t)
	p := faultproxy.Start(t, m.URL())
	coldtest.FaultTest(t, p, func(t *testing.T, opts cold.Options) cold.Bucket {
		opts.Credentials = creds(m)
		url := "s3://" + m.Bucket + "/faults?endpoint=" + p.URL + "&path_style=true&region=" + testutil.MinIORegion
		b, err := s3bucket.Open(context.Background(), url, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	})
}
