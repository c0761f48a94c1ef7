package coldtest

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/tierlog/tierlog/cold"
)

// testConditional holds the backend to cold.ConditionalUploader: every
// backend implements it, a condition that does not hold leaves the object
// as it was with ErrPreconditionFailed, and of racing conditional uploads
// exactly one wins.
func testConditional(t *testing.T, b cold.Bucket) {
	cu, ok := b.(cold.ConditionalUploader)
	if !ok {
		t.Fatalf("%T does not implement cold.ConditionalUploader", b)
	}
	ctx := context.Background()
	key := Root + "conditional/owner"
	put := func(cond cold.Condition, data []byte) (cold.Attributes, error) {
		return cu.UploadIf(ctx, key, bytes.NewReader(data), int64(len(data)), cond)
	}
	refused := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, cold.ErrPreconditionFailed) {
			t.Errorf("%s: %v, want ErrPreconditionFailed", what, err)
		}
		if cold.IsRetryable(err) {
			t.Errorf("%s: IsRetryable(%v) = true", what, err)
		}
	}
	has := func(want []byte) {
		t.Helper()
		got, err := ReadAll(ctx, b, key, 0, -1)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("object holds %q (%v), want %q", got, err, want)
		}
	}

	_, err := cu.UploadIf(ctx, Root+"conditional/missing", bytes.NewReader([]byte("x")), 1, cold.Condition{IfMatch: "nope"})
	refused("IfMatch on a missing object", err)
	v1 := []byte("owner one, epoch 1")
	a1, err := put(cold.Condition{IfAbsent: true}, v1)
	if err != nil {
		t.Fatalf("IfAbsent on a missing object: %v", err)
	}
	if attrs, err := b.Attributes(ctx, key); err != nil || attrs.ETag != a1.ETag {
		t.Errorf("UploadIf returned ETag %q, Attributes %q (%v)", a1.ETag, attrs.ETag, err)
	}
	_, err = put(cold.Condition{IfAbsent: true}, []byte("owner two, epoch 1"))
	refused("IfAbsent on an existing object", err)
	has(v1)

	// Same size, other content: the ETag must change, so the first ETag
	// no longer matches.
	v2 := []byte("owner two, epoch 2")
	a2, err := put(cold.Condition{IfMatch: a1.ETag}, v2)
	if err != nil {
		t.Fatalf("IfMatch with the current ETag: %v", err)
	}
	if a2.ETag == a1.ETag {
		t.Errorf("rewrite kept ETag %q", a2.ETag)
	}
	_, err = put(cold.Condition{IfMatch: a1.ETag}, []byte("owner one, epoch 2"))
	refused("IfMatch with a stale ETag", err)
	has(v2)
	// An unconditional upload in between also changes the ETag.
	upload(t, b, key, []byte("owner six, epoch 2"))
	_, err = put(cold.Condition{IfMatch: a2.ETag}, []byte("owner two, epoch 3"))
	refused("IfMatch after another upload", err)

	for _, bad := range []cold.Condition{{}, {IfAbsent: true, IfMatch: a2.ETag}} {
		if _, err := put(bad, v1); err == nil || errors.Is(err, cold.ErrPreconditionFailed) {
			t.Errorf("condition %+v: %v, want an error saying it is invalid", bad, err)
		}
	}

	// Racing claims: exactly one of them wins, and the object is its.
	cur, err := b.Attributes(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	for _, cond := range []cold.Condition{{IfMatch: cur.ETag}, {IfAbsent: true}} {
		if cond.IfAbsent {
			if err := b.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
		}
		const n = 8
		var wg sync.WaitGroup
		var mu sync.Mutex
		var won [][]byte
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				data := []byte{'c', 'l', 'a', 'i', 'm', byte('0' + i)}
				_, err := put(cond, data)
				switch {
				case err == nil:
					mu.Lock()
					won = append(won, data)
					mu.Unlock()
				case !errors.Is(err, cold.ErrPreconditionFailed):
					t.Errorf("racing UploadIf %+v: %v", cond, err)
				}
			}()
		}
		wg.Wait()
		if len(won) != 1 {
			t.Fatalf("%d of %d racing UploadIf %+v succeeded, want 1", len(won), n, cond)
		}
		has(won[0])
	}
}

// MissingBucketTest checks, on a bucket removed after it was opened, that a
// conditional upload does not report ErrPreconditionFailed: a missing
// bucket is not a condition that failed, and taking it for one made a
// claim of the prefix retry and then blame a concurrent claimer.
func MissingBucketTest(t *testing.T, b cold.Bucket) {
	t.Helper()
	cu := b.(cold.ConditionalUploader)
	for _, cond := range []cold.Condition{{IfAbsent: true}, {IfMatch: `"0123456789abcdef"`}} {
		_, err := cu.UploadIf(context.Background(), "cluster.json", bytes.NewReader([]byte("{}")), 2, cond)
		if err == nil || errors.Is(err, cold.ErrPreconditionFailed) {
			t.Errorf("conditional upload %+v to a missing bucket: %v; want an error that is not ErrPreconditionFailed", cond, err)
		}
	}
}
