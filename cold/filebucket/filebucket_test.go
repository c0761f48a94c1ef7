package filebucket_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/coldtest"
	"github.com/tierlog/tierlog/cold/filebucket"
)

func newBucket(t *testing.T) *filebucket.Bucket {
	t.Helper()
	b, err := filebucket.New(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAcceptance(t *testing.T) {
	coldtest.AcceptanceTest(t, newBucket(t))
}

func TestName(t *testing.T) {
	b := newBucket(t)
	if want := "file://" + filepath.ToSlash(b.Root()); b.Name() != want {
		t.Errorf("Name() = %q, want %q", b.Name(), want)
	}
}

func TestNewRejectsAFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := filebucket.New(f); err == nil || !strings.Contains(err.Error(), f) {
		t.Errorf("New on a regular file: %v, want an error naming it", err)
	}
}

// A crash mid-upload leaves a temporary file; it is never an object.
func TestLeftoverTempFileIsInvisible(t *testing.T) {
	b := newBucket(t)
	ctx := context.Background()
	if _, err := b.Upload(ctx, "t/0/seg", bytes.NewReader([]byte("data")), 4); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(b.Root(), "t", "0", ".tierlog-tmp-12345")
	if err := os.WriteFile(tmp, []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := b.Iter(ctx, "", func(k string) error { keys = append(keys, k); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0] != "t/0/seg" {
		t.Errorf("Iter = %q, want only t/0/seg", keys)
	}
	if _, err := b.Attributes(ctx, "t/0/.tierlog-tmp-12345"); err == nil || errors.Is(err, cold.ErrNotFound) {
		t.Errorf("Attributes of a temp file name: %v, want an invalid key error", err)
	}
}

// A failed upload leaves neither the object nor its temporary file.
func TestFailedUploadLeavesNothing(t *testing.T) {
	b := newBucket(t)
	boom := errors.New("source broke")
	r := io.MultiReader(bytes.NewReader(make([]byte, 1000)), errReader{boom})
	if _, err := b.Upload(context.Background(), "t/0/seg", r, -1); !errors.Is(err, boom) {
		t.Fatalf("Upload from a failing reader: %v, want %v", err, boom)
	}
	entries, err := os.ReadDir(filepath.Join(b.Root(), "t", "0"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("after a failed upload the directory holds %v", entries)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestObjectAndPrefixConflict(t *testing.T) {
	b := newBucket(t)
	ctx := context.Background()
	if _, err := b.Upload(ctx, "a", bytes.NewReader(nil), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Upload(ctx, "a/b", bytes.NewReader(nil), 0); err == nil || !strings.Contains(err.Error(), "cannot also hold") {
		t.Errorf("Upload a/b over object a: %v, want a conflict error", err)
	}
	if _, err := b.Upload(ctx, "c/d", bytes.NewReader(nil), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Upload(ctx, "c", bytes.NewReader(nil), 0); err == nil || !strings.Contains(err.Error(), "cannot also hold") {
		t.Errorf("Upload c over keys c/...: %v, want a conflict error", err)
	}
}

func TestDeleteRemovesEmptiedDirectories(t *testing.T) {
	b := newBucket(t)
	ctx := context.Background()
	for _, k := range []string{"t/0/a/seg", "t/1/seg"} {
		if _, err := b.Upload(ctx, k, bytes.NewReader([]byte("x")), 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Delete(ctx, "t/0/a/seg"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(b.Root(), "t", "0")); !os.IsNotExist(err) {
		t.Errorf("t/0 still there after its only object was deleted: %v", err)
	}
	if _, err := os.Stat(filepath.Join(b.Root(), "t", "1", "seg")); err != nil {
		t.Errorf("sibling gone: %v", err)
	}
	if err := b.Delete(ctx, "t/1/seg"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(b.Root()); err != nil {
		t.Errorf("root removed with the last object: %v", err)
	}
}

// A reader keeps the object it opened even if it is replaced meanwhile.
func TestReaderSeesTheObjectItOpened(t *testing.T) {
	b := newBucket(t)
	ctx := context.Background()
	if _, err := b.Upload(ctx, "k", bytes.NewReader([]byte("old contents")), -1); err != nil {
		t.Fatal(err)
	}
	rc, err := b.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := b.Upload(ctx, "k", bytes.NewReader([]byte("new")), -1); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	if err != nil || string(got) != "old contents" {
		t.Errorf("read after replace and delete: %q, %v", got, err)
	}
}
