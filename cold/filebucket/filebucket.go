package filebucket

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/internal/objutil"
	"github.com/tierlog/tierlog/internal/fileutil"
)

// Bucket stores objects as files under a root directory.
type Bucket struct {
	root string // absolute, cleaned
	name string
}

var (
	_ cold.Bucket              = (*Bucket)(nil)
	_ cold.ConditionalUploader = (*Bucket)(nil)
)

// New opens the bucket rooted at dir, creating the directory if it is
// missing. dir must be absolute or relative to the working directory; it is
// made absolute so the bucket does not move if the process changes
// directory.
func New(dir string) (*Bucket, error) {
	if dir == "" {
		return nil, errors.New("filebucket: empty root directory")
	}
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("filebucket: root %s: %w", dir, err)
	}
	if err := fileutil.MkdirAllDurable(root); err != nil {
		return nil, fmt.Errorf("filebucket: create root %s: %w", root, err)
	}
	st, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("filebucket: root %s: %w", root, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("filebucket: root %s is not a directory", root)
	}
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(root)}
	return &Bucket{root: root, name: u.String()}, nil
}

// Root returns the bucket's root directory.
func (b *Bucket) Root() string { return b.root }

// Name returns the bucket's file:// URL.
func (b *Bucket) Name() string { return b.name }

// Close does nothing; a filesystem bucket holds no resources.
func (b *Bucket) Close() error { return nil }

func (b *Bucket) path(key string) (string, error) {
	if err := objutil.CheckKey(key); err != nil {
		return "", fmt.Errorf("filebucket %s: %w", b.root, err)
	}
	return filepath.Join(b.root, filepath.FromSlash(key)), nil
}

// Upload writes the object atomically: into a temporary file in the
// object's directory, fsynced, renamed over the final name, and the
// directory fsynced. A crash leaves either the old object or the new one
// (and at worst a temporary file that Iter does not list).
func (b *Bucket) Upload(ctx context.Context, key string, r io.Reader, size int64) (cold.Attributes, error) {
	return b.upload(ctx, key, r, size, nil)
}

// UploadIf is Upload if cond holds. The check and the rename happen under
// the bucket's lock (an flock every upload's rename takes, in this process
// or another), so no upload of the key can slip in between.
func (b *Bucket) UploadIf(ctx context.Context, key string, r io.Reader, size int64, cond cold.Condition) (cold.Attributes, error) {
	if err := cond.Check(); err != nil {
		return cold.Attributes{}, fmt.Errorf("filebucket: upload %s: %w", key, err)
	}
	return b.upload(ctx, key, r, size, &cond)
}

func (b *Bucket) upload(ctx context.Context, key string, r io.Reader, size int64, cond *cold.Condition) (cold.Attributes, error) {
	path, err := b.path(key)
	if err != nil {
		return cold.Attributes{}, err
	}
	if err := ctx.Err(); err != nil {
		return cold.Attributes{}, fmt.Errorf("filebucket: upload %s: %w", key, err)
	}
	dir := filepath.Dir(path)
	f, err := b.createTemp(dir)
	if err != nil {
		return cold.Attributes{}, fmt.Errorf("filebucket: upload %s: %w", key, err)
	}
	tmp := f.Name()
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(tmp)
		}
	}()
	src := objutil.ContextReader(ctx, r)
	if size >= 0 {
		// One byte more than announced, to notice a reader that is longer.
		src = io.LimitReader(src, size+1)
	}
	n, err := io.Copy(f, src)
	if err != nil {
		return cold.Attributes{}, fmt.Errorf("filebucket: upload %s: after %d bytes: %w", key, n, err)
	}
	if size >= 0 && n != size {
		return cold.Attributes{}, fmt.Errorf("filebucket: upload %s: the reader held %d bytes, size says %d", key, n, size)
	}
	if err := f.Sync(); err != nil {
		return cold.Attributes{}, fmt.Errorf("filebucket: upload %s: fsync %s: %w", key, tmp, err)
	}
	st, err := f.Stat()
	if err != nil {
		return cold.Attributes{}, fmt.Errorf("filebucket: upload %s: %w", key, err)
	}
	if err := f.Close(); err != nil {
		return cold.Attributes{}, fmt.Errorf("filebucket: upload %s: close %s: %w", key, tmp, err)
	}
	if err := b.rename(ctx, key, tmp, path, cond); err != nil {
		return cold.Attributes{}, err
	}
	done = true
	if err := fileutil.SyncDir(dir); err != nil {
		return cold.Attributes{}, fmt.Errorf("filebucket: upload %s: %w", key, err)
	}
	return attributes(st), nil
}

// rename moves the finished temporary file over the object, under the
// bucket's lock, if cond (when set) holds.
func (b *Bucket) rename(ctx context.Context, key, tmp, path string, cond *cold.Condition) error {
	unlock, err := lockFile(filepath.Join(b.root, lockName))
	if err != nil {
		return fmt.Errorf("filebucket: upload %s: lock the bucket: %w", key, err)
	}
	defer unlock()
	if cond != nil {
		cur, err := b.Attributes(ctx, key)
		switch {
		case err != nil && !errors.Is(err, cold.ErrNotFound):
			return err
		case cond.IfAbsent && err == nil:
			return fmt.Errorf("filebucket: upload %s if absent: the object exists: %w", key, cold.ErrPreconditionFailed)
		case cond.IfMatch != "" && err != nil:
			return fmt.Errorf("filebucket: upload %s if ETag %s: the object does not exist: %w", key, cond.IfMatch, cold.ErrPreconditionFailed)
		case cond.IfMatch != "" && cur.ETag != cond.IfMatch:
			return fmt.Errorf("filebucket: upload %s if ETag %s: the object's ETag is %s: %w", key, cond.IfMatch, cur.ETag, cold.ErrPreconditionFailed)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		if fi, serr := os.Stat(path); serr == nil && fi.IsDir() {
			return fmt.Errorf("filebucket: upload %s: keys under %s/ exist, a filesystem bucket cannot also hold an object of that name", key, key)
		}
		return fmt.Errorf("filebucket: upload %s: %w", key, err)
	}
	return nil
}

// lockName is the bucket's lock file, in its root; the reserved prefix
// keeps it out of Iter and away from any key.
const lockName = objutil.TempPrefix + "lock"

// createTemp creates the object's directories (each made durable in its
// parent) and a temporary file in the innermost one. A concurrent Delete
// may remove a directory it just emptied between the two steps; then the
// directories are created again.
func (b *Bucket) createTemp(dir string) (*os.File, error) {
	var lastErr error
	for range 5 {
		if err := b.mkdirs(dir); err != nil {
			return nil, err
		}
		f, err := os.CreateTemp(dir, objutil.TempPrefix+"*")
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		lastErr = err
	}
	return nil, lastErr
}

// mkdirs creates dir and the missing directories between the root and it,
// fsyncing each new directory's parent so the entries survive a crash.
func (b *Bucket) mkdirs(dir string) error {
	rel, err := filepath.Rel(b.root, dir)
	if err != nil || rel == "." {
		return err
	}
	cur := b.root
	for _, elem := range strings.Split(rel, string(filepath.Separator)) {
		parent := cur
		cur = filepath.Join(cur, elem)
		err := os.Mkdir(cur, 0o755)
		switch {
		case err == nil:
			if err := fileutil.SyncDir(parent); err != nil {
				return err
			}
		case errors.Is(err, fs.ErrExist):
			if st, serr := os.Stat(cur); serr == nil && !st.IsDir() {
				key, _ := filepath.Rel(b.root, cur)
				return fmt.Errorf("object %s exists, a filesystem bucket cannot also hold keys under %s/", filepath.ToSlash(key), filepath.ToSlash(key))
			}
		default:
			return err
		}
	}
	return nil
}

// Get returns the whole object.
func (b *Bucket) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	return b.GetRange(ctx, key, 0, -1)
}

// GetRange returns length bytes from off (-1: to the end). The reader
// holds the file open, so it keeps reading the object it opened even if
// the object is replaced or deleted meanwhile.
func (b *Bucket) GetRange(ctx context.Context, key string, off, length int64) (io.ReadCloser, error) {
	path, err := b.path(key)
	if err != nil {
		return nil, err
	}
	if err := objutil.CheckRange(off, length); err != nil {
		return nil, fmt.Errorf("filebucket: get %s: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("filebucket: get %s: %w", key, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, b.mapErr("get", key, err)
	}
	st, err := f.Stat()
	if err == nil && st.IsDir() {
		err = syscall.EISDIR
	}
	if err != nil {
		f.Close()
		return nil, b.mapErr("get", key, err)
	}
	if off > st.Size() {
		f.Close()
		return nil, fmt.Errorf("filebucket: get %s: range offset %d is beyond the object's %d bytes", key, off, st.Size())
	}
	n := st.Size() - off
	if length >= 0 && length < n {
		n = length
	}
	return &sectionFile{SectionReader: io.NewSectionReader(f, off, n), f: f}, nil
}

type sectionFile struct {
	*io.SectionReader
	f *os.File
}

func (s *sectionFile) Close() error { return s.f.Close() }

// Attributes returns the object's size, modification time and an ETag
// made of both and the file's inode number. Every upload renames a new
// file over the object, so the inode changes with each rewrite even when
// size and (coarse) modification time do not: If-Match cannot mistake a
// newer object for the one its caller saw.
func (b *Bucket) Attributes(ctx context.Context, key string) (cold.Attributes, error) {
	path, err := b.path(key)
	if err != nil {
		return cold.Attributes{}, err
	}
	if err := ctx.Err(); err != nil {
		return cold.Attributes{}, fmt.Errorf("filebucket: attributes %s: %w", key, err)
	}
	st, err := os.Stat(path)
	if err == nil && st.IsDir() {
		err = syscall.EISDIR
	}
	if err != nil {
		return cold.Attributes{}, b.mapErr("attributes", key, err)
	}
	return attributes(st), nil
}

func attributes(st fs.FileInfo) cold.Attributes {
	return cold.Attributes{
		Size:         st.Size(),
		LastModified: st.ModTime(),
		ETag:         fmt.Sprintf("%x-%x-%x", st.ModTime().UnixNano(), st.Size(), inode(st)),
	}
}

// Exists reports whether the object exists.
func (b *Bucket) Exists(ctx context.Context, key string) (bool, error) {
	_, err := b.Attributes(ctx, key)
	if errors.Is(err, cold.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Delete removes the object, fsyncs its directory, and removes the
// directories the deletion left empty (up to the root), so a bucket whose
// objects come and go does not collect empty directories.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	path, err := b.path(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("filebucket: delete %s: %w", key, err)
	}
	st, err := os.Lstat(path)
	if err != nil {
		if errors.Is(b.mapErr("delete", key, err), cold.ErrNotFound) {
			return nil
		}
		return fmt.Errorf("filebucket: delete %s: %w", key, err)
	}
	if st.IsDir() {
		return nil // a directory of other keys, not an object
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("filebucket: delete %s: %w", key, err)
	}
	dir := filepath.Dir(path)
	if err := fileutil.SyncDir(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("filebucket: delete %s: %w", key, err)
	}
	for dir != b.root {
		// Fails (and stops) at the first directory that is not empty.
		if os.Remove(dir) != nil {
			break
		}
		dir = filepath.Dir(dir)
	}
	return nil
}

// Iter calls f for every key starting with prefix, in lexical order. It
// lists only the directory the prefix names (not the whole bucket) and
// streams: keys are not collected first.
func (b *Bucket) Iter(ctx context.Context, prefix string, f func(key string) error) error {
	if err := objutil.CheckPrefix(prefix); err != nil {
		return fmt.Errorf("filebucket %s: iter: %w", b.root, err)
	}
	dirKey := prefix[:strings.LastIndex(prefix, "/")+1] // "" or "a/b/"
	return b.walk(ctx, dirKey, prefix, f)
}

// Folders lists the directories in prefix's directory (cold.FolderLister);
// Delete removes a directory it empties, so each holds a key.
func (b *Bucket) Folders(ctx context.Context, prefix string, f func(folder string) error) error {
	if err := objutil.CheckFolderPrefix(prefix); err != nil {
		return fmt.Errorf("filebucket %s: folders: %w", b.root, err)
	}
	entries, err := os.ReadDir(filepath.Join(b.root, filepath.FromSlash(prefix)))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("filebucket: folders of %q: %w", prefix, err)
	}
	var folders []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), objutil.TempPrefix) {
			folders = append(folders, prefix+e.Name()+"/")
		}
	}
	slices.Sort(folders) // as keys: "a/" sorts after "a.b/", as Iter has it
	for _, folder := range folders {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("filebucket: folders of %q: %w", prefix, err)
		}
		if err := f(folder); err != nil {
			return err
		}
	}
	return nil
}

// walk lists the directory named by dirKey ("" for the root, else ending
// in "/") and recurses. Siblings are visited in the order of their keys,
// a directory's key being its name plus "/": then every key under a
// directory sorts between the same siblings as the directory itself, and
// the walk yields keys in lexical order. ("a.b" < "a/x" because '.' <
// '/', which a plain name sort would get wrong.)
func (b *Bucket) walk(ctx context.Context, dirKey, prefix string, f func(string) error) error {
	entries, err := os.ReadDir(filepath.Join(b.root, filepath.FromSlash(dirKey)))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil // no such directory (or it was just emptied and removed): no keys
	}
	if err != nil {
		return fmt.Errorf("filebucket: iter %q: %w", prefix, err)
	}
	type item struct {
		key string
		dir bool
	}
	items := make([]item, 0, len(entries))
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, objutil.TempPrefix) {
			continue
		}
		it := item{key: dirKey + name, dir: e.IsDir()}
		if it.dir {
			it.key += "/"
		} else if !e.Type().IsRegular() {
			continue // symlinks, sockets: not objects
		}
		if strings.HasPrefix(it.key, prefix) {
			items = append(items, it)
		}
	}
	slices.SortFunc(items, func(x, y item) int { return strings.Compare(x.key, y.key) })
	for _, it := range items {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("filebucket: iter %q: %w", prefix, err)
		}
		if it.dir {
			// Everything below already matches the prefix.
			if err := b.walk(ctx, it.key, "", f); err != nil {
				return err
			}
			continue
		}
		if err := f(it.key); err != nil {
			return err
		}
	}
	return nil
}

// mapErr turns the filesystem's "no such file" (and "a path element is a
// file", "is a directory") into cold.ErrNotFound.
func (b *Bucket) mapErr(op, key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EISDIR) {
		return fmt.Errorf("filebucket: %s %s: %w", op, key, cold.ErrNotFound)
	}
	return fmt.Errorf("filebucket: %s %s: %w", op, key, err)
}
