package coldtest

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/testutil/faultproxy"
)

// FaultStall is the stall timeout FaultTest opens buckets with: stalled
// requests fail after it. It must stay well above the longest pause a
// healthy request sees on a loaded 2-core machine under the race detector
// (300ms was seen to fail a 5 MiB part upload there), or a fault test
// meant for another fault trips on a stall instead.
const FaultStall = 2 * time.Second

// FaultTest checks a remote backend against the faults of p, a faultproxy
// in front of the real store: every fault yields an error that
// cold.IsRetryable classifies as it should, a read never returns short or
// wrong data as success, and a failed upload leaves no object. open must
// return the backend under test pointed at p, opened with opts (plus its
// credentials); FaultTest sets MaxAttempts, StallTimeout and PartSize.
func FaultTest(t *testing.T, p *faultproxy.Proxy, open func(t *testing.T, opts cold.Options) cold.Bucket) {
	t.Helper()
	ctx := context.Background()
	// One attempt: every fault reaches the test instead of being retried.
	b := open(t, cold.Options{MaxAttempts: 1, StallTimeout: FaultStall, PartSize: cold.MinPartSize})
	const key = Root + "faults/object"
	data := Data(42, 200<<10)
	upload(t, b, key, data)
	t.Cleanup(func() { p.Clear(); deleteAll(t, b, Root) })

	const missing = Root + "faults/missing"
	list := func(*testing.T) error { return b.Iter(ctx, Root, func(string) error { return nil }) }

	// Each case installs one rule, runs op, and checks its error: a fault
	// is never success, never "not found" (but for notFound cases), and
	// retryable as the case says.
	for _, tc := range []struct {
		name      string
		rule      faultproxy.Rule
		op        func(t *testing.T) error
		retryable bool
		notFound  bool // the answer is a 404: cold.ErrNotFound, whatever befell its body
	}{
		{"GET 503 SlowDown", faultproxy.Rule{Method: "GET", PathContains: "faults/object", Fault: faultproxy.Error, Status: 503}, readOp(b, key, 0, -1, data), true, false},
		{"GET 500 InternalError", faultproxy.Rule{Method: "GET", PathContains: "faults/object", Fault: faultproxy.Error, Status: 500}, readOp(b, key, 0, -1, data), true, false},
		{"GET 429", faultproxy.Rule{Method: "GET", PathContains: "faults/object", Fault: faultproxy.Error, Status: 429}, readOp(b, key, 0, -1, data), true, false},
		{"GET 403 AccessDenied", faultproxy.Rule{Method: "GET", PathContains: "faults/object", Fault: faultproxy.Error, Status: 403, Code: "AccessDenied"}, readOp(b, key, 0, -1, data), false, false},
		{"GET reset", faultproxy.Rule{Method: "GET", PathContains: "faults/object", Fault: faultproxy.Reset}, readOp(b, key, 0, -1, data), true, false},
		{"GET stalled", faultproxy.Rule{Method: "GET", PathContains: "faults/object", Fault: faultproxy.Stall}, readOp(b, key, 0, -1, data), true, false},
		{"GET truncated", faultproxy.Rule{Method: "GET", PathContains: "faults/object", Fault: faultproxy.Truncate, After: 1000}, readOp(b, key, 0, -1, data), true, false},
		{"GET body stalled", faultproxy.Rule{Method: "GET", PathContains: "faults/object", Fault: faultproxy.StallBody, After: 1000}, readOp(b, key, 0, -1, data), true, false},
		{"ranged GET truncated", faultproxy.Rule{RangeOnly: true, Fault: faultproxy.Truncate, After: 10}, readOp(b, key, 5000, 100000, data), true, false},
		{"ranged GET reset", faultproxy.Rule{RangeOnly: true, Fault: faultproxy.Reset}, readOp(b, key, 5000, 100000, data), true, false},
		{"HEAD 503", faultproxy.Rule{Method: "HEAD", Fault: faultproxy.Error, Status: 503}, func(*testing.T) error { _, err := b.Attributes(ctx, key); return err }, true, false},
		{"HEAD reset", faultproxy.Rule{Method: "HEAD", Fault: faultproxy.Reset}, func(*testing.T) error { _, err := b.Exists(ctx, key); return err }, true, false},
		{"DELETE 503", faultproxy.Rule{Method: "DELETE", Fault: faultproxy.Error, Status: 503}, func(*testing.T) error { return b.Delete(ctx, key) }, true, false},
		{"LIST 500", faultproxy.Rule{Method: "GET", QueryContains: "list-type=2", Fault: faultproxy.Error, Status: 500}, func(*testing.T) error { return b.Iter(ctx, Root, func(string) error { return nil }) }, true, false},
		{"version LIST 500", faultproxy.Rule{Method: "GET", QueryContains: "versions", Fault: faultproxy.Error, Status: 500}, func(*testing.T) error {
			return cold.IterVersions(ctx, b, Root, func(cold.ObjectVersion) error { return nil })
		}, true, false},
		{"LIST 403", faultproxy.Rule{Method: "GET", QueryContains: "list-type=2", Fault: faultproxy.Error, Status: 403, Code: "AccessDenied"}, func(*testing.T) error { return b.Iter(ctx, Root, func(string) error { return nil }) }, false, false},
		{"PUT 503", faultproxy.Rule{Method: "PUT", Fault: faultproxy.Error, Status: 503}, uploadOp(b, Root+"faults/put-503", Data(1, 1000)), true, false},
		{"PUT reset", faultproxy.Rule{Method: "PUT", Fault: faultproxy.Reset}, uploadOp(b, Root+"faults/put-reset", Data(2, 1000)), true, false},
		{"PUT stalled", faultproxy.Rule{Method: "PUT", Fault: faultproxy.Stall}, uploadOp(b, Root+"faults/put-stall", Data(3, 1000)), true, false},
		{"part upload 503", faultproxy.Rule{Method: "PUT", QueryContains: "partNumber=2", Fault: faultproxy.Error, Status: 503}, uploadOp(b, Root+"faults/parts-503", Data(4, LargeSize)), true, false},
		{"part upload reset", faultproxy.Rule{Method: "PUT", QueryContains: "partNumber=", Fault: faultproxy.Reset}, uploadOp(b, Root+"faults/parts-reset", Data(5, LargeSize)), true, false},

		// Replies that end early, for every request kind: a transient
		// fault, whatever the status, except that a 404 is an answer.
		{"GET 404 body truncated", faultproxy.Rule{Method: "GET", PathContains: "faults/missing", Fault: faultproxy.Truncate, After: 20}, getOp(b, missing), false, true},
		{"GET 404 body truncated at once", faultproxy.Rule{Method: "GET", PathContains: "faults/missing", Fault: faultproxy.Truncate}, getOp(b, missing), false, true},
		{"GET reply cut in the headers", faultproxy.Rule{Method: "GET", PathContains: "faults/object", Fault: faultproxy.CutHeaders, After: 40}, readOp(b, key, 0, -1, data), true, false},
		{"HEAD reply cut", faultproxy.Rule{Method: "HEAD", Fault: faultproxy.Truncate, After: 40}, func(*testing.T) error { _, err := b.Attributes(ctx, key); return err }, true, false},
		{"HEAD 404 reply cut", faultproxy.Rule{Method: "HEAD", Fault: faultproxy.Truncate, After: 10}, func(*testing.T) error { _, err := b.Exists(ctx, missing); return err }, true, false},
		{"LIST body truncated", faultproxy.Rule{Method: "GET", QueryContains: "list-type=2", Fault: faultproxy.Truncate, After: 100}, list, true, false},
		{"LIST body truncated at once", faultproxy.Rule{Method: "GET", QueryContains: "list-type=2", Fault: faultproxy.Truncate}, list, true, false},
		{"LIST 403 body truncated", faultproxy.Rule{Method: "GET", QueryContains: "list-type=2", Fault: faultproxy.Error, Status: 403, Code: "AccessDenied", After: 30}, list, true, false},
		{"PUT reply cut", faultproxy.Rule{Method: "PUT", Fault: faultproxy.Truncate, After: 12}, putOp(b, Root+"faults/put-cut", Data(6, 1000)), true, false},
		{"part upload reply cut", faultproxy.Rule{Method: "PUT", QueryContains: "partNumber=", Fault: faultproxy.Truncate}, uploadOp(b, Root+"faults/parts-cut", Data(7, LargeSize)), true, false},
		{"complete multipart reply truncated", faultproxy.Rule{Method: "POST", QueryContains: "uploadId=", Fault: faultproxy.Truncate, After: 60}, putOp(b, Root+"faults/complete-cut", Data(8, LargeSize)), true, false},
		{"DELETE reply cut", faultproxy.Rule{Method: "DELETE", Fault: faultproxy.Truncate, After: 5}, func(*testing.T) error { return b.Delete(ctx, Root+"faults/put-cut") }, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.Clear()
			tc.rule.Times = 1
			h := p.Add(tc.rule)
			err := tc.op(t)
			p.Clear()
			if h.Injected() != 1 {
				t.Fatalf("the rule injected %d faults, want 1 (does it match the backend's requests?); op error: %v", h.Injected(), err)
			}
			if err == nil {
				t.Fatalf("no error through the fault")
			}
			if got := errors.Is(err, cold.ErrNotFound); got != tc.notFound {
				t.Errorf("errors.Is(%v, cold.ErrNotFound) = %v, want %v", err, got, tc.notFound)
			}
			if got := cold.IsRetryable(err); got != tc.retryable {
				t.Errorf("IsRetryable(%v) = %v, want %v", err, got, tc.retryable)
			}
		})
	}

	t.Run("slow body arrives intact", func(t *testing.T) {
		h := p.Add(faultproxy.Rule{Method: "GET", PathContains: "faults/object", Fault: faultproxy.Slow, ChunkSize: 64 << 10, Delay: 5 * time.Millisecond, Times: 1})
		defer p.Clear()
		if err := readOp(b, key, 0, -1, data)(t); err != nil {
			t.Errorf("slow read: %v", err)
		}
		if h.Injected() != 1 {
			t.Errorf("slow rule injected %d", h.Injected())
		}
	})

	// Truncations at many places of many reads: each read gives the exact
	// bytes or a retryable error, never short data.
	t.Run("never short data", func(t *testing.T) {
		defer p.Clear()
		failed := 0
		for i := range 30 {
			p.Clear()
			p.Add(faultproxy.Rule{Method: "GET", PathContains: "faults/object", Fault: faultproxy.Truncate, After: int64(i * 7001 % len(data)), Times: 1})
			off, length := int64(i*997%len(data)), int64(-1)
			if i%2 == 1 {
				length = int64(i * 3001)
			}
			// readOp fails the test if a successful read is short or wrong.
			if err := readOp(b, key, off, length, data)(t); err != nil {
				failed++
				if !cold.IsRetryable(err) {
					t.Errorf("read %d [%d,+%d): IsRetryable(%v) = false", i, off, length, err)
				}
			}
		}
		if failed == 0 {
			t.Errorf("no read of 30 failed: the truncations did not bite")
		}
	})

	// A store that keeps no versions (some S3-compatible ones) answers
	// every version listing 501 NotImplemented: its keys are listed
	// instead, each as the one version of its object, so deletes by
	// version still find every object.
	t.Run("no version listing", func(t *testing.T) {
		defer p.Clear()
		h := p.Add(faultproxy.Rule{Method: "GET", QueryContains: "versions", Fault: faultproxy.Error, Status: 501, Code: "NotImplemented"})
		_, got := listVersions(t, b, key)
		if h.Injected() == 0 || len(got) != 1 || got[0].Key != key || !got[0].Unversioned() {
			t.Errorf("IterVersions(%q) after NotImplemented (%d injected): %+v, want the object as one unversioned entry", key, h.Injected(), got)
		}
		h = p.Add(faultproxy.Rule{Method: "GET", QueryContains: "versioning", Fault: faultproxy.Error, Status: 501, Code: "NotImplemented"})
		if keeps, err := cold.KeepsVersions(context.Background(), b); h.Injected() == 0 || keeps || err != nil {
			t.Errorf("KeepsVersions after NotImplemented (%d injected): %v, %v; want false, nil", h.Injected(), keeps, err)
		}
		// Nor a multi-object delete, by which a "null" version goes: a
		// plain delete of it instead.
		h = p.Add(faultproxy.Rule{Method: "POST", QueryContains: "delete", Fault: faultproxy.Error, Status: 501, Code: "NotImplemented"})
		null := Root + "faults/null"
		upload(t, b, null, []byte("null version"))
		if err := cold.DeleteVersion(context.Background(), b, null, "null"); h.Injected() == 0 || err != nil {
			t.Errorf("DeleteVersion of the null version after NotImplemented (%d injected): %v", h.Injected(), err)
		}
		if ok, err := b.Exists(context.Background(), null); ok || err != nil {
			t.Errorf("after DeleteVersion of its null version: exists %v, %v", ok, err)
		}
	})

	// With retries inside the backend, transient faults are absorbed.
	t.Run("backend retries", func(t *testing.T) {
		rb := open(t, cold.Options{MaxAttempts: 3, StallTimeout: FaultStall, PartSize: cold.MinPartSize})
		defer p.Clear()
		// 500, not 503 SlowDown: the SDKs wait longer before retrying throttling.
		h := p.Add(faultproxy.Rule{Method: "GET", PathContains: "faults/object", Fault: faultproxy.Error, Status: 500, Times: 2})
		if err := readOp(rb, key, 0, -1, data)(t); err != nil {
			t.Errorf("read through two 500s with 3 attempts: %v", err)
		}
		if h.Injected() != 2 {
			t.Errorf("injected %d 500s, want 2", h.Injected())
		}
		p.Clear()
		h = p.Add(faultproxy.Rule{Method: "HEAD", Fault: faultproxy.Reset, Times: 1})
		if ok, err := rb.Exists(ctx, key); !ok || err != nil {
			t.Errorf("Exists through one reset with 3 attempts: %v, %v", ok, err)
		}
		if h.Injected() != 1 {
			t.Errorf("injected %d resets, want 1", h.Injected())
		}
	})
}

// readOp reads [off, off+length) of key. It returns the read's error, and
// fails the test if the read returned bytes that are not the object's, or
// fewer bytes than the range holds without an error.
func readOp(b cold.Bucket, key string, off, length int64, want []byte) func(t *testing.T) error {
	return func(t *testing.T) error {
		t.Helper()
		got, err := ReadAll(context.Background(), b, key, off, length)
		end := int64(len(want))
		if length >= 0 && off+length < end {
			end = off + length
		}
		if !bytes.HasPrefix(want[off:end], got) {
			t.Errorf("read %s [%d,+%d) returned %d bytes that are not the object's (error %v)", key, off, length, len(got), err)
		}
		if err == nil && int64(len(got)) != end-off {
			t.Errorf("read %s [%d,+%d) returned %d of %d bytes as success", key, off, length, len(got), end-off)
		}
		return err
	}
}

// getOp reads the whole object key and returns the read's error; it fails
// the test if the read succeeds.
func getOp(b cold.Bucket, key string) func(t *testing.T) error {
	return func(t *testing.T) error {
		t.Helper()
		got, err := ReadAll(context.Background(), b, key, 0, -1)
		if err == nil {
			t.Errorf("read of %s returned %d bytes", key, len(got))
		}
		return err
	}
}

// putOp uploads data under key and returns the upload's error. Unlike
// uploadOp it allows an object to exist afterwards: when the reply to the
// last request is lost, the store may have stored the object.
func putOp(b cold.Bucket, key string, data []byte) func(t *testing.T) error {
	return func(t *testing.T) error {
		t.Helper()
		_, err := b.Upload(context.Background(), key, onlyReader{bytes.NewReader(data)}, int64(len(data)))
		return err
	}
}

// uploadOp uploads data under key and returns the upload's error; it fails
// the test if a failed upload left an object behind.
func uploadOp(b cold.Bucket, key string, data []byte) func(t *testing.T) error {
	return func(t *testing.T) error {
		t.Helper()
		_, err := b.Upload(context.Background(), key, onlyReader{bytes.NewReader(data)}, int64(len(data)))
		if err == nil {
			return nil
		}
		if ok, xerr := b.Exists(context.Background(), key); ok || xerr != nil {
			t.Errorf("upload %s failed (%v) but left an object: exists %v, %v", key, err, ok, xerr)
		}
		return err
	}
}
