package cold

import (
	"context"
	"fmt"
	"strings"
)

// FolderLister is implemented by every backend: the folders directly
// under a prefix, as S3 lists common prefixes with the delimiter "/". One
// LIST names a level of the key hierarchy - a reader discovering what a
// prefix holds (tierlog verify finding every partition) need not list
// every key below it.
type FolderLister interface {
	// Folders calls f with every folder directly under prefix ("" or
	// ending in "/") that holds a key: prefix + the next path element +
	// "/", in lexical order, stopping at f's first error.
	Folders(ctx context.Context, prefix string, f func(folder string) error) error
}

// Folders lists the folders directly under prefix with b's FolderLister,
// or, for a bucket without one, from every key below prefix.
func Folders(ctx context.Context, b Bucket, prefix string, f func(folder string) error) error {
	if fl, ok := b.(FolderLister); ok {
		return fl.Folders(ctx, prefix, f) // which checks prefix as it checks Iter's
	}
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		return fmt.Errorf("%s: folders: prefix %q is not a folder: want \"\" or a prefix ending in \"/\"", b.Name(), prefix)
	}
	last := ""
	return b.Iter(ctx, prefix, func(key string) error {
		// Iter's lexical order keeps a folder's keys together.
		i := strings.IndexByte(key[len(prefix):], '/')
		if i < 0 || key[:len(prefix)+i+1] == last {
			return nil
		}
		last = key[:len(prefix)+i+1]
		return f(last)
	})
}

func (r readOnly) Folders(ctx context.Context, prefix string, f func(folder string) error) error {
	return Folders(ctx, r.b, prefix, f)
}
