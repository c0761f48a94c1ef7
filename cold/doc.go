// Package cold is tierlog's cold tier: the Bucket interface every object
// store sits behind, the remote segment format, and the chunk cache.
//
// # The Bucket contract
//
// Bucket has seven data methods: Upload, Get, GetRange, Attributes,
// Exists, Delete and Iter (plus Name and Close). Every backend keeps the
// same promises, checked by coldtest.AcceptanceTest:
//
//   - Keys are slash-separated and relative to the bucket's prefix: no
//     leading or trailing slash, no empty, "." or ".." elements, no
//     backslash or NUL, at most 1024 bytes. Invalid keys are refused by
//     every backend alike, before any request.
//   - Upload is all or nothing: the object is visible only when Upload
//     returns nil. A reader shorter or longer than the announced size (or
//     failing, or a canceled context) fails the upload and stores nothing.
//     Large objects go up as multipart uploads (Options.PartSize).
//   - A missing object yields an error wrapping ErrNotFound from Get,
//     GetRange and Attributes; Exists reports false; Delete of a missing
//     key succeeds. A key prefix ("directory") is not an object.
//   - GetRange(off, length) returns min(length, size-off) bytes; length -1
//     means to the end; off == size gives an empty reader; off > size is an
//     error (not ErrNotFound). A reader never returns fewer bytes than the
//     store announced as success: a truncated body fails with an error
//     wrapping io.ErrUnexpectedEOF, which IsRetryable accepts.
//   - Iter lists keys starting with prefix (a plain string prefix, as in
//     S3: "t/0/000" matches "t/0/0001-…"), recursively, in byte-wise lexical
//     order, and stops at f's first error, which it returns.
//   - Errors say which bucket and key they concern, keep the SDK error in
//     the chain (errors.As), and are classified by IsRetryable — the one
//     function that decides what to retry.
//
// # Optional interfaces
//
// Beside Bucket, small interfaces that callers find with a type assertion
// (and the helpers in this package that fall back when a bucket lacks
// them): ConditionalUploader (UploadIf: one writer owns a prefix),
// MultipartAborter, FolderLister (one level of the key hierarchy in one
// LIST; Folders falls back to Iter), Versioned (read and delete one object
// version, list every version and delete marker under a prefix;
// GetRangeVersion, DeleteVersion and IterVersions fall back to the key) and
// Locker (S3 Object Lock; LockEnabled says no without it). The file
// backend has neither Versioned nor Locker. ReadOnly wraps a bucket so
// that nothing through it can change the bucket.
//
// # Backends and URLs
//
// A bucket is named by a URL; package cold/bucketurl opens one:
//
//	file:///var/lib/tierlog/bucket
//	s3://BUCKET/PREFIX?region=eu-west-1
//	s3://BUCKET/PREFIX?endpoint=http://127.0.0.1:9000&path_style=true&region=us-east-1
//	minio://HOST:PORT/BUCKET/PREFIX?secure=false
//
// file (cold/filebucket): the local filesystem, the embedded default.
// Writes are atomic (temporary file, fsync, rename, fsync directory).
//
// s3 (cold/s3bucket), aws-sdk-go-v2. Query parameters:
//
//	region      the bucket's region (default: the SDK's, from AWS_REGION or
//	            the shared config; us-east-1 when an endpoint is given)
//	endpoint    URL of an S3-compatible store (LocalStack, MinIO, …); no
//	            scheme means https
//	path_style  true: address the bucket in the path, not the host name
//	            (needed by most S3-compatible stores; default false)
//
// Credentials come from the SDK's default chain: AWS_ACCESS_KEY_ID /
// AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN), AWS_PROFILE and the shared
// files ~/.aws/credentials and ~/.aws/config, web identity, container and
// EC2 instance roles.
//
// minio (cold/miniobucket), minio-go/v7. Query parameters:
//
//	secure  false: plain HTTP (default true: HTTPS)
//	region  the bucket's region (default: asked of the server)
//
// Credentials come from the environment, the first pair set of
// MINIO_ACCESS_KEY / MINIO_SECRET_KEY, MINIO_ROOT_USER /
// MINIO_ROOT_PASSWORD, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (with
// AWS_SESSION_TOKEN).
//
// Unknown query parameters are refused (a typo must not silently fall
// back to a default), and so is a URL with a user or password in it:
// secrets never appear in URLs, logs or errors. Options.Credentials
// overrides the environment for tests and embedding.
//
// At open, the remote backends list one key under the prefix, bounded by
// Options.OpenTimeout, and fail with an error naming the URL and the
// cause: wrong credentials, access denied, missing bucket, wrong region,
// or unreachable endpoint.
//
// # Consistency
//
// S3 (since December 2020), MinIO and the filesystem give read-after-write
// consistency for objects and listings: a key Upload returned for is seen
// by the next Get, Attributes, Exists and Iter, and a Delete by the next
// read. Nothing orders two concurrent Uploads of one key: one wins whole.
// Tierlog does not rely on overwrites: every upload attempt has a unique
// key, and a per-partition manifest names the committed ones; anything
// else under the prefix is an orphan to clean (and incomplete multipart
// uploads are aborted through MultipartAborter).
//
// # Options, timeouts and retries
//
// Options (all zero values take defaults): PartSize (multipart threshold
// and part size, 16 MiB, at least 5 MiB), PartConcurrency (4),
// MaxAttempts (3 attempts per request inside the SDK), OpenTimeout (15 s
// for the check at open), StallTimeout (60 s: a connection that moves no
// byte for that long, before the response or mid-body, fails the request
// with a retryable timeout), Transport (a custom http.RoundTripper, e.g.
// for metrics), Credentials (static keys instead of the environment).
//
// The caller's context bounds every call, including reading a returned
// body. What reaches the caller after the SDK's attempts may still be
// retryable (IsRetryable); loops above (the tiering daemon, the read path)
// retry with backoff and jitter, and must stop when their own context is
// done. An upload retried from the top needs its reader again: keep the
// segment on disk and reopen it.
//
// # Remote segments, the reader and the cache
//
// WriteSegment turns a sealed hot segment into one object: chunks of about
// 4 MiB cut at batch boundaries, each zstd-compressed unless that does not
// shrink it, each with CRC-32C of its stored and raw bytes, then a footer
// (chunk table, offset and time range, leader-epoch table, footer CRC,
// format version) and a fixed trailer so ReadFooter finds the footer with
// one ranged GET of the tail. docs/format.md draws the byte layout.
//
// A Reader serves reads of such objects: it finds the chunk by offset or
// timestamp in the (cached) footer, fetches just that byte range, verifies
// and decompresses it, and keeps it in a ChunkCache. Concurrent misses of
// one chunk share one GET; a sequential reader gets the following chunks
// prefetched with one ranged GET for each run of adjacent chunks, decoded
// as their bytes arrive so the first batches are served before the whole
// range is in. Corrupt bytes are reported (ErrCorruptObject, naming the
// key and chunk) and never served or cached.
//
// ChunkCache (cache.go) holds decompressed chunks under a byte budget: a
// bounded window for chunks being downloaded, prefetched or just used
// (reserved before a download starts, never evicted while in use) in front
// of a ristretto cache for the rest.
package cold
