package audit_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/miniobucket"
	"github.com/tierlog/tierlog/internal/testutil"
)

// Every test in the package runs under the goroutine leak check.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The tree, its proofs and checkpoints on a real MinIO server: the same
// answers as the filesystem bucket.
func TestTreeMinIO(t *testing.T) {
	ctx := context.Background()
	m := testutil.StartMinIO(t)
	b, err := miniobucket.Open(ctx, m.MinIOURL(m.Bucket, "root"), cold.Options{
		Credentials: &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	model, sizes := buildSizes(t, b, 21, 3000)
	size := sizes[len(sizes)-1]
	model.checkTiles(t, b, size)
	r := rand.New(rand.NewPCG(22, 22))
	for range 50 {
		s := sizes[r.IntN(len(sizes))]
		i := r.Uint64N(s)
		p, err := audit.InclusionProof(ctx, b, prefix, i, s)
		if err != nil {
			t.Fatal(err)
		}
		if err := audit.VerifyInclusion(model.leaves[i], i, s, p, model.ref.HashAt(s)); err != nil {
			t.Fatalf("inclusion %d in %d: %v", i, s, err)
		}
	}
	p, err := audit.ConsistencyProof(ctx, b, prefix, sizes[0], size)
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.VerifyConsistency(sizes[0], size, p, model.ref.HashAt(sizes[0]), model.ref.HashAt(size)); err != nil {
		t.Fatal(err)
	}
	k, err := audit.LoadOrCreateKey(filepath.Join(t.TempDir(), "k"), audit.KeyName(0))
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.PutPublicKey(ctx, b, k); err != nil {
		t.Fatal(err)
	}
	signed, _ := audit.Sign(k, audit.Origin("c", "t", 0), size, model.ref.Hash())
	if err := audit.PutCheckpoint(ctx, b, prefix, size, signed); err != nil {
		t.Fatal(err)
	}
	v, err := audit.GetPublicKey(ctx, b, k.Name())
	if err != nil {
		t.Fatal(err)
	}
	got, err := audit.GetCheckpoint(ctx, b, prefix, -1)
	if err != nil {
		t.Fatal(err)
	}
	c, err := audit.Open(got, "", v)
	if err != nil || c.Size != size || !bytes.Equal(c.Hash, model.ref.Hash()) {
		t.Fatalf("checkpoint from MinIO: %v", err)
	}
	reopened, err := audit.OpenTree(ctx, b, prefix, size)
	if err != nil || !bytes.Equal(reopened.Root(), c.Hash) {
		t.Fatalf("reopened from MinIO: %v", err)
	}
}
