package coldtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tierlog/tierlog/cold"
)

// Root is the prefix under which AcceptanceTest writes; it must be empty
// when the test starts.
const Root = "acceptance/"

// LargeSize is the size of the "large" objects AcceptanceTest uploads: more
// than two parts at cold.MinPartSize, so a backend opened with
// Options{PartSize: cold.MinPartSize} exercises multipart upload with ~10
// MiB of data.
const LargeSize = 2*cold.MinPartSize + 12345

// AcceptanceTest checks that b keeps the cold.Bucket contract, method by
// method. Every backend's tests run it. It uses keys under Root and
// deletes them when it is done.
func AcceptanceTest(t *testing.T, b cold.Bucket) {
	t.Helper()
	ctx := context.Background()
	var existing []string
	if err := b.Iter(ctx, Root, func(k string) error { existing = append(existing, k); return nil }); err != nil {
		t.Fatalf("%s: iter %q: %v", b.Name(), Root, err)
	}
	if len(existing) > 0 {
		t.Fatalf("%s: AcceptanceTest needs an empty %q, found %d keys, e.g. %q", b.Name(), Root, len(existing), existing[0])
	}
	t.Cleanup(func() { deleteAll(t, b, Root) })
	if b.Name() == "" {
		t.Errorf("Name() is empty")
	}

	t.Run("NotFound", func(t *testing.T) { testNotFound(t, b) })
	t.Run("UploadGet", func(t *testing.T) { testUploadGet(t, b) })
	t.Run("GetRange", func(t *testing.T) { testGetRange(t, b) })
	t.Run("Empty", func(t *testing.T) { testEmpty(t, b) })
	t.Run("Overwrite", func(t *testing.T) { testOverwrite(t, b) })
	t.Run("UnknownSize", func(t *testing.T) { testUnknownSize(t, b) })
	t.Run("SizeMismatch", func(t *testing.T) { testSizeMismatch(t, b) })
	t.Run("Large", func(t *testing.T) { testLarge(t, b) })
	t.Run("Delete", func(t *testing.T) { testDelete(t, b) })
	t.Run("Iter", func(t *testing.T) { testIter(t, b) })
	t.Run("InvalidKeys", func(t *testing.T) { testInvalidKeys(t, b) })
	t.Run("Canceled", func(t *testing.T) { testCanceled(t, b) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, b) })
	t.Run("AbortIncompleteUploads", func(t *testing.T) { testAbort(t, b) })
	t.Run("Conditional", func(t *testing.T) { testConditional(t, b) })
	t.Run("UnversionedListing", func(t *testing.T) { testUnversionedListing(t, b) })
}

// Data returns n deterministic pseudo-random bytes (incompressible, so no
// layer can shortcut them) for seed.
func Data(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	p := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			p[i+j] = byte(v >> (8 * j))
		}
	}
	return p
}

func upload(t *testing.T, b cold.Bucket, key string, data []byte) cold.Attributes {
	t.Helper()
	attrs, err := b.Upload(context.Background(), key, bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatalf("upload %s (%d bytes): %v", key, len(data), err)
	}
	if attrs.Size != int64(len(data)) {
		t.Errorf("upload %s: attributes say %d bytes, uploaded %d", key, attrs.Size, len(data))
	}
	return attrs
}

// ReadAll reads an object (or a range, length -1 to the end) and closes
// the reader.
func ReadAll(ctx context.Context, b cold.Bucket, key string, off, length int64) ([]byte, error) {
	var rc io.ReadCloser
	var err error
	if off == 0 && length == -1 {
		rc, err = b.Get(ctx, key)
	} else {
		rc, err = b.GetRange(ctx, key, off, length)
	}
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(rc)
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	return data, err
}

func mustRead(t *testing.T, b cold.Bucket, key string, off, length int64) []byte {
	t.Helper()
	data, err := ReadAll(context.Background(), b, key, off, length)
	if err != nil {
		t.Fatalf("read %s [%d, +%d): %v", key, off, length, err)
	}
	return data
}

func checkEqual(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	t.Errorf("%s: got %d bytes, want %d; first difference at byte %d", what, len(got), len(want), i)
}

func testNotFound(t *testing.T, b cold.Bucket) {
	ctx := context.Background()
	key := Root + "missing/object"
	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, cold.ErrNotFound) {
			t.Errorf("%s of a missing key: got %v, want an error wrapping cold.ErrNotFound", op, err)
		}
		if cold.IsRetryable(err) {
			t.Errorf("%s of a missing key: IsRetryable(%v) = true", op, err)
		}
	}
	_, err := ReadAll(ctx, b, key, 0, -1)
	check("Get", err)
	_, err = ReadAll(ctx, b, key, 1, 10)
	check("GetRange", err)
	_, err = ReadAll(ctx, b, key, 0, 0)
	check("GetRange of 0 bytes", err)
	_, err = b.Attributes(ctx, key)
	check("Attributes", err)
	if ok, err := b.Exists(ctx, key); ok || err != nil {
		t.Errorf("Exists of a missing key: %v, %v; want false, nil", ok, err)
	}
	if err := b.Delete(ctx, key); err != nil {
		t.Errorf("Delete of a missing key: %v, want nil", err)
	}
	// A "directory" of other keys is not an object either.
	upload(t, b, Root+"missing/dir/child", []byte("x"))
	_, err = b.Attributes(ctx, Root+"missing/dir")
	check("Attributes of a key prefix", err)
	_, err = ReadAll(ctx, b, Root+"missing/dir", 0, -1)
	check("Get of a key prefix", err)
	if err := b.Delete(ctx, Root+"missing/dir"); err != nil {
		t.Errorf("Delete of a key prefix: %v, want nil", err)
	}
	if ok, err := b.Exists(ctx, Root+"missing/dir/child"); !ok || err != nil {
		t.Errorf("Delete of a key prefix removed the key under it (exists %v, %v)", ok, err)
	}
}

func testUploadGet(t *testing.T, b cold.Bucket) {
	ctx := context.Background()
	key := Root + "get/object.seg"
	data := Data(1, 1000)
	up := upload(t, b, key, data)
	checkEqual(t, "Get", mustRead(t, b, key, 0, -1), data)
	attrs, err := b.Attributes(ctx, key)
	if err != nil {
		t.Fatalf("Attributes: %v", err)
	}
	if attrs.Size != int64(len(data)) {
		t.Errorf("Attributes: size %d, want %d", attrs.Size, len(data))
	}
	if attrs.LastModified.IsZero() {
		t.Errorf("Attributes: LastModified is zero")
	}
	if attrs.ETag == "" || strings.Contains(attrs.ETag, `"`) {
		t.Errorf("Attributes: ETag %q, want non-empty without quotes", attrs.ETag)
	}
	if up.ETag != attrs.ETag {
		t.Errorf("Upload returned ETag %q, Attributes %q", up.ETag, attrs.ETag)
	}
	if up.VersionID != attrs.VersionID {
		t.Errorf("Upload returned version %q, Attributes %q", up.VersionID, attrs.VersionID)
	}
	if ok, err := b.Exists(ctx, key); !ok || err != nil {
		t.Errorf("Exists: %v, %v; want true, nil", ok, err)
	}
}

func testGetRange(t *testing.T, b cold.Bucket) {
	ctx := context.Background()
	key := Root + "range/object"
	data := Data(2, 4096)
	n := int64(len(data))
	upload(t, b, key, data)
	for _, tc := range []struct{ off, length int64 }{
		{0, -1}, {0, n}, {0, 1}, {1, 1}, {100, 1000}, {n - 1, -1}, {n - 1, 1},
		{n - 10, 100}, // past the end: what there is
		{0, 2 * n},
		{n, -1}, {n, 10}, {n, 0}, {0, 0}, {7, 0}, // empty ranges
	} {
		end := n
		if tc.length >= 0 && tc.off+tc.length < n {
			end = tc.off + tc.length
		}
		got := mustRead(t, b, key, tc.off, tc.length)
		checkEqual(t, fmt.Sprintf("GetRange(%d, %d)", tc.off, tc.length), got, data[tc.off:end])
	}
	for _, tc := range []struct{ off, length int64 }{{n + 1, -1}, {n + 100, 10}, {-1, 10}, {0, -2}} {
		_, err := ReadAll(ctx, b, key, tc.off, tc.length)
		if err == nil || errors.Is(err, cold.ErrNotFound) || cold.IsRetryable(err) {
			t.Errorf("GetRange(%d, %d) of a %d-byte object: %v, want a non-retryable error that is not ErrNotFound", tc.off, tc.length, n, err)
		}
	}
}

func testEmpty(t *testing.T, b cold.Bucket) {
	ctx := context.Background()
	key := Root + "empty/object"
	upload(t, b, key, nil)
	checkEqual(t, "Get of an empty object", mustRead(t, b, key, 0, -1), nil)
	checkEqual(t, "GetRange(0, 10) of an empty object", mustRead(t, b, key, 0, 10), nil)
	attrs, err := b.Attributes(ctx, key)
	if err != nil || attrs.Size != 0 {
		t.Errorf("Attributes of an empty object: %+v, %v", attrs, err)
	}
	if ok, err := b.Exists(ctx, key); !ok || err != nil {
		t.Errorf("Exists of an empty object: %v, %v", ok, err)
	}
	// Unknown size, empty reader.
	key2 := Root + "empty/unknown-size"
	if _, err := b.Upload(ctx, key2, io.MultiReader(), -1); err != nil {
		t.Fatalf("upload empty reader with size -1: %v", err)
	}
	checkEqual(t, "Get of an empty object uploaded with size -1", mustRead(t, b, key2, 0, -1), nil)
}

func testOverwrite(t *testing.T, b cold.Bucket) {
	ctx := context.Background()
	key := Root + "overwrite/object"
	first, second := Data(3, 3000), Data(4, 1234)
	a1 := upload(t, b, key, first)
	a2 := upload(t, b, key, second)
	checkEqual(t, "Get after overwrite", mustRead(t, b, key, 0, -1), second)
	attrs, err := b.Attributes(ctx, key)
	if err != nil || attrs.Size != int64(len(second)) {
		t.Errorf("Attributes after overwrite: %+v, %v; want size %d", attrs, err, len(second))
	}
	if a1.ETag == a2.ETag {
		t.Errorf("overwrite with other content kept ETag %q", a1.ETag)
	}
}

// onlyReader hides every method but Read, like a pipe or a network stream.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func testUnknownSize(t *testing.T, b cold.Bucket) {
	ctx := context.Background()
	for _, n := range []int{1, 1 << 20} {
		key := fmt.Sprintf("%sunknown/%d", Root, n)
		data := Data(uint64(n), n)
		attrs, err := b.Upload(ctx, key, onlyReader{bytes.NewReader(data)}, -1)
		if err != nil {
			t.Fatalf("upload %d bytes with size -1: %v", n, err)
		}
		if attrs.Size != int64(n) {
			t.Errorf("upload %d bytes with size -1: attributes say %d", n, attrs.Size)
		}
		checkEqual(t, key, mustRead(t, b, key, 0, -1), data)
	}
}

func testSizeMismatch(t *testing.T, b cold.Bucket) {
	ctx := context.Background()
	data := Data(5, 100)
	for _, tc := range []struct {
		name string
		size int64
	}{{"short", 150}, {"long", 50}} {
		key := Root + "mismatch/" + tc.name
		_, err := b.Upload(ctx, key, onlyReader{bytes.NewReader(data)}, tc.size)
		if err == nil {
			t.Errorf("upload of %d bytes announced as %d: no error", len(data), tc.size)
		}
		if ok, err := b.Exists(ctx, key); ok || err != nil {
			t.Errorf("after a failed upload (%d bytes announced as %d) the object exists: %v, %v", len(data), tc.size, ok, err)
		}
	}
}

func testLarge(t *testing.T, b cold.Bucket) {
	ctx := context.Background()
	data := Data(6, LargeSize)
	for _, tc := range []struct {
		name string
		size int64
	}{{"known-size", LargeSize}, {"unknown-size", -1}} {
		key := Root + "large/" + tc.name
		attrs, err := b.Upload(ctx, key, onlyReader{bytes.NewReader(data)}, tc.size)
		if err != nil {
			t.Fatalf("upload %d bytes (size %d): %v", len(data), tc.size, err)
		}
		if attrs.Size != LargeSize {
			t.Errorf("upload %s: attributes say %d bytes, want %d", key, attrs.Size, LargeSize)
		}
		got := mustRead(t, b, key, 0, -1)
		if sha256.Sum256(got) != sha256.Sum256(data) {
			checkEqual(t, "Get "+key, got, data)
		}
		// A range across the first part boundary, and the tail.
		off := int64(cold.MinPartSize - 1000)
		checkEqual(t, "GetRange across a part boundary", mustRead(t, b, key, off, 5000), data[off:off+5000])
		checkEqual(t, "GetRange of the tail", mustRead(t, b, key, LargeSize-10, -1), data[LargeSize-10:])
	}
}

func testDelete(t *testing.T, b cold.Bucket) {
	ctx := context.Background()
	key := Root + "delete/sub/object"
	sibling := Root + "delete/sibling"
	upload(t, b, key, []byte("doomed"))
	upload(t, b, sibling, []byte("stays"))
	if err := b.Delete(ctx, key); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if ok, err := b.Exists(ctx, key); ok || err != nil {
		t.Errorf("Exists after Delete: %v, %v", ok, err)
	}
	if _, err := ReadAll(ctx, b, key, 0, -1); !errors.Is(err, cold.ErrNotFound) {
		t.Errorf("Get after Delete: %v, want ErrNotFound", err)
	}
	if err := b.Delete(ctx, key); err != nil {
		t.Errorf("second Delete: %v, want nil", err)
	}
	checkEqual(t, "sibling after Delete", mustRead(t, b, sibling, 0, -1), []byte("stays"))
	// The key can be written again where a deletion emptied its "directory".
	upload(t, b, key, []byte("again"))
	checkEqual(t, "Get after re-upload", mustRead(t, b, key, 0, -1), []byte("again"))
}

func iterKeys(t *testing.T, b cold.Bucket, prefix string) []string {
	t.Helper()
	var keys []string
	if err := b.Iter(context.Background(), prefix, func(k string) error {
		keys = append(keys, k)
		return nil
	}); err != nil {
		t.Fatalf("Iter(%q): %v", prefix, err)
	}
	return keys
}

func testIter(t *testing.T, b cold.Bucket) {
	p := Root + "iter/"
	// "a.b" < "a/x" < "a0" in byte order ('.' < '/' < '0'): a walk that
	// sorts names rather than keys gets this wrong.
	rel := []string{"a.b", "a/x", "a/y/z", "a0", "b", "ba", "c/d/e/f"}
	var all []string
	for i, k := range slices.Backward(rel) { // upload out of order
		upload(t, b, p+k, []byte{byte(i)})
	}
	for _, k := range rel {
		all = append(all, p+k)
	}
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{p, all},
		{Root + "iter", all},
		{p + "a", all[:4]},
		{p + "a/", all[1:3]},
		{p + "a/y", all[2:3]},
		{p + "b", all[4:6]},
		{p + "c/d/", all[6:]},
		{p + "a/x", all[1:2]},
		{p + "nothing/", nil},
		{p + "nothing", nil},
		{Root + "no-such-dir/deeper/", nil},
	} {
		if got := iterKeys(t, b, tc.prefix); !slices.Equal(got, tc.want) {
			t.Errorf("Iter(%q) = %q, want %q", tc.prefix, got, tc.want)
		}
	}
	whole := iterKeys(t, b, "")
	if !slices.IsSorted(whole) {
		t.Errorf("Iter(\"\") is not in lexical order: %q", whole)
	}
	for _, k := range all {
		if !slices.Contains(whole, k) {
			t.Errorf("Iter(\"\") misses %q", k)
		}
	}
	testFolders(t, b, p, all)
	// f's error stops the iteration and comes back.
	stop := errors.New("stop")
	calls := 0
	err := b.Iter(context.Background(), p, func(string) error {
		calls++
		if calls == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 2 {
		t.Errorf("Iter with f failing at the 2nd key: err %v after %d calls; want f's error after 2", err, calls)
	}
}

// testFolders checks the backend's cold.FolderLister against the keys
// testIter uploaded (keys, under p), and cold.Folders' fallback for a
// bucket without one.
func testFolders(t *testing.T, b cold.Bucket, p string, keys []string) {
	t.Helper()
	if _, ok := b.(cold.FolderLister); !ok {
		t.Errorf("%T is not a cold.FolderLister", b)
	}
	list := func(b cold.Bucket, prefix string) []string {
		var got []string
		if err := cold.Folders(context.Background(), b, prefix, func(f string) error { got = append(got, f); return nil }); err != nil {
			t.Fatalf("Folders(%q): %v", prefix, err)
		}
		return got
	}
	iterOnly := struct{ cold.Bucket }{b} // hides the FolderLister
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{p, []string{p + "a/", p + "c/"}},
		{p + "a/", []string{p + "a/y/"}},
		{p + "c/", []string{p + "c/d/"}},
		{p + "a/y/", nil},
		{p + "nothing/", nil},
	} {
		if got := list(b, tc.prefix); !slices.Equal(got, tc.want) {
			t.Errorf("Folders(%q) = %q, want %q (keys %q)", tc.prefix, got, tc.want, keys)
		}
		if got := list(iterOnly, tc.prefix); !slices.Equal(got, tc.want) {
			t.Errorf("cold.Folders(%q) of a bucket that only iterates = %q, want %q", tc.prefix, got, tc.want)
		}
	}
	// A prefix that is not a folder, or climbs out, is refused by the
	// backend (called directly or through cold.Folders) and by the
	// fallback alike, saying why.
	for prefix, says := range map[string]string{p + "a": "is not a folder", p + "../": `".."`} {
		for name, folders := range map[string]func(string, func(string) error) error{
			"the backend's Folders": func(prefix string, f func(string) error) error {
				fl, _ := b.(cold.FolderLister)
				if fl == nil {
					return nil // reported above
				}
				return fl.Folders(context.Background(), prefix, f)
			},
			"cold.Folders": func(prefix string, f func(string) error) error {
				return cold.Folders(context.Background(), b, prefix, f)
			},
			"cold.Folders' fallback (Iter)": func(prefix string, f func(string) error) error {
				return cold.Folders(context.Background(), iterOnly, prefix, f)
			},
		} {
			err := folders(prefix, func(string) error { return nil })
			if err == nil || !strings.Contains(err.Error(), says) || strings.Contains(err.Error(), "<nil>") {
				t.Errorf("%s(%q) = %v, want an error saying %s", name, prefix, err, says)
			}
		}
	}
}

func testInvalidKeys(t *testing.T, b cold.Bucket) {
	ctx := context.Background()
	for _, key := range []string{"", "/abs", "../escape", Root + "../../escape", Root + "a//b",
		Root + "./a", Root + "a/.", Root + "trailing/", Root + "back\\slash"} {
		_, err := b.Upload(ctx, key, bytes.NewReader([]byte("x")), 1)
		if err == nil {
			t.Errorf("Upload(%q) succeeded, want an invalid key error", key)
			continue
		}
		if cold.IsRetryable(err) {
			t.Errorf("Upload(%q): IsRetryable(%v) = true", key, err)
		}
		if _, err := b.Attributes(ctx, key); err == nil || errors.Is(err, cold.ErrNotFound) {
			t.Errorf("Attributes(%q) = %v, want an invalid key error", key, err)
		}
	}
	for _, prefix := range []string{"../", "/abs/", Root + "../"} {
		if err := b.Iter(ctx, prefix, func(string) error { return nil }); err == nil {
			t.Errorf("Iter(%q) succeeded, want an invalid prefix error", prefix)
		}
	}
}

func testCanceled(t *testing.T, b cold.Bucket) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	key := Root + "canceled/object"
	if _, err := b.Upload(ctx, key, bytes.NewReader([]byte("x")), 1); !errors.Is(err, context.Canceled) {
		t.Errorf("Upload with a canceled context: %v, want context.Canceled", err)
	}
	if ok, err := b.Exists(context.Background(), key); ok || err != nil {
		t.Errorf("Upload with a canceled context left an object: %v, %v", ok, err)
	}
	upload(t, b, key, []byte("x"))
	if _, err := ReadAll(ctx, b, key, 0, -1); !errors.Is(err, context.Canceled) || cold.IsRetryable(err) {
		t.Errorf("Get with a canceled context: %v, want non-retryable context.Canceled", err)
	}
	// A context canceled while an upload reads its body stops the upload.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	r := &cancelingReader{r: bytes.NewReader(Data(7, 1<<20)), after: 64 << 10, cancel: cancel2}
	if _, err := b.Upload(ctx2, key+"-mid", r, -1); err == nil {
		t.Errorf("Upload canceled mid-body succeeded")
	}
	if ok, err := b.Exists(context.Background(), key+"-mid"); ok || err != nil {
		t.Errorf("Upload canceled mid-body left an object: %v, %v", ok, err)
	}
}

// cancelingReader cancels a context once it has handed out after bytes.
type cancelingReader struct {
	r      io.Reader
	after  int
	cancel func()
	n      int
}

func (c *cancelingReader) Read(p []byte) (int, error) {
	if c.n >= c.after {
		c.cancel()
		// Keep serving slowly: the upload must notice the context, not EOF.
		time.Sleep(time.Millisecond)
	}
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func testConcurrent(t *testing.T, b cold.Bucket) {
	ctx := context.Background()
	const writers = 8
	shared := Root + "concurrent/shared"
	payloads := make([][]byte, writers)
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers)
	for i := range writers {
		payloads[i] = Data(uint64(100+i), 10000+i)
		wg.Go(func() {
			own := fmt.Sprintf("%sconcurrent/own-%d", Root, i)
			for _, key := range []string{own, shared} {
				if _, err := b.Upload(ctx, key, bytes.NewReader(payloads[i]), int64(len(payloads[i]))); err != nil {
					errs <- fmt.Errorf("upload %s: %w", key, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range writers {
		checkEqual(t, fmt.Sprintf("own-%d", i), mustRead(t, b, fmt.Sprintf("%sconcurrent/own-%d", Root, i), 0, -1), payloads[i])
	}
	got := mustRead(t, b, shared, 0, -1)
	if !slices.ContainsFunc(payloads, func(p []byte) bool { return bytes.Equal(p, got) }) {
		t.Errorf("after concurrent overwrites the object (%d bytes) is none of the written payloads", len(got))
	}
}

func testAbort(t *testing.T, b cold.Bucket) {
	a, ok := b.(cold.MultipartAborter)
	if !ok {
		t.Skipf("%T has no multipart uploads", b)
	}
	// Backends' own tests create incomplete uploads; here only check that
	// a clean prefix has nothing to abort.
	n, err := a.AbortIncompleteUploads(context.Background(), Root, time.Hour)
	if err != nil || n != 0 {
		t.Errorf("AbortIncompleteUploads on a clean prefix: %d, %v", n, err)
	}
}

func deleteAll(t testing.TB, b cold.Bucket, prefix string) {
	ctx := context.Background()
	var keys []string
	if err := b.Iter(ctx, prefix, func(k string) error { keys = append(keys, k); return nil }); err != nil {
		t.Errorf("cleanup: iter %q: %v", prefix, err)
		return
	}
	for _, k := range keys {
		if err := b.Delete(ctx, k); err != nil {
			t.Errorf("cleanup: delete %s: %v", k, err)
		}
	}
}

// VersioningTest checks a backend on a bucket with versioning enabled:
// KeepsVersions says so, Upload and Attributes report the same non-empty VersionID, an overwrite
// makes a new version, a deleted object (a delete marker on S3) reads as
// ErrNotFound, and IterVersions lists the versions and the marker.
func VersioningTest(t *testing.T, b cold.Bucket) {
	t.Helper()
	ctx := context.Background()
	key := Root + "versioned/object"
	t.Cleanup(func() { deleteAll(t, b, Root) })
	if keeps, err := cold.KeepsVersions(ctx, b); !keeps || err != nil {
		t.Errorf("KeepsVersions: %v, %v; want true", keeps, err)
	}
	first := upload(t, b, key, []byte("v1"))
	if first.VersionID == "" {
		t.Fatalf("Upload to a versioned bucket returned no VersionID")
	}
	attrs, err := b.Attributes(ctx, key)
	if err != nil || attrs.VersionID != first.VersionID {
		t.Errorf("Attributes: version %q, %v; Upload said %q", attrs.VersionID, err, first.VersionID)
	}
	second := upload(t, b, Root+"versioned/object", Data(9, cold.MinPartSize+1)) // multipart
	if second.VersionID == "" || second.VersionID == first.VersionID {
		t.Errorf("overwrite: version %q, first was %q; want a new one", second.VersionID, first.VersionID)
	}
	if attrs, err := b.Attributes(ctx, key); err != nil || attrs.VersionID != second.VersionID {
		t.Errorf("Attributes after overwrite: version %q, %v; want %q", attrs.VersionID, err, second.VersionID)
	}
	if err := b.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Attributes(ctx, key); !errors.Is(err, cold.ErrNotFound) {
		t.Errorf("Attributes after delete: %v, want ErrNotFound", err)
	}
	if _, err := ReadAll(ctx, b, key, 0, -1); !errors.Is(err, cold.ErrNotFound) {
		t.Errorf("Get after delete: %v, want ErrNotFound", err)
	}
	if ok, err := b.Exists(ctx, key); ok || err != nil {
		t.Errorf("Exists after delete: %v, %v", ok, err)
	}
	versionListTest(t, b, first, second)
}
