// Package filebucket is the filesystem backend of cold.Bucket, the
// embedded default: `tierlog serve` with no bucket configured tiers into a
// file:// bucket under its data directory.
//
// An object with key "topic/0/00000000000000001000-3-x.seg" is the file
// <root>/topic/0/00000000000000001000-3-x.seg. Keys are checked before they
// touch the filesystem (no "..", ".", empty elements, backslashes or
// leading slash), so no key reaches outside the root.
//
// Durability: Upload writes a temporary file (".tierlog-tmp-*", never
// listed) in the object's directory, fsyncs it, renames it over the final
// name and fsyncs the directory; new directories are fsynced into their
// parents. After a crash an object is either wholly there or absent. Delete
// fsyncs the directory and removes the directories it empties.
//
// A filesystem cannot hold both an object "a" and an object "a/b" (S3
// can); Upload reports the conflict. Tierlog's key layout never makes one.
//
//	b, err := filebucket.New("/var/lib/tierlog/bucket")
//	_, err = b.Upload(ctx, "t/0/seg", bytes.NewReader(data), int64(len(data)))
package filebucket
