package cold_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/miniobucket"
	"github.com/tierlog/tierlog/internal/testutil"
)

// TestReadOnlyVersions: a read-only view of a versioned bucket reads the
// version it is asked for (not an overwrite made since) and refuses to
// delete it.
func TestReadOnlyVersions(t *testing.T) {
	ctx := context.Background()
	m := testutil.StartMinIO(t)
	bucket := m.NewLockedBucket(t) // versioned
	b, err := miniobucket.Open(ctx, m.MinIOURL(bucket, "ro/"), cold.Options{Credentials: &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	first, err := b.Upload(ctx, "k", strings.NewReader("written"), 7)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Upload(ctx, "k", strings.NewReader("forged!"), 7); err != nil {
		t.Fatal(err)
	}
	ro := cold.ReadOnly(b)
	rc, err := cold.GetRangeVersion(ctx, ro, "k", first.VersionID, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, []byte("written")) {
		t.Errorf("read-only read of the first version: %q, %v; want the bytes written", got, err)
	}
	if err := cold.DeleteVersion(ctx, ro, "k", first.VersionID); !errors.Is(err, cold.ErrReadOnly) {
		t.Errorf("read-only DeleteVersion: %v, want ErrReadOnly", err)
	}
	if _, err := b.Attributes(ctx, "k"); err != nil {
		t.Errorf("the object after a refused delete: %v", err)
	}
}
