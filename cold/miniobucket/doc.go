// Package miniobucket is the cold.Bucket backend for MinIO servers, on
// minio-go/v7.
//
// URL:
//
//	minio://HOST:PORT/BUCKET/PREFIX?secure=false&region=REGION
//
// secure=false speaks plain HTTP (default: HTTPS); region defaults to
// asking the server once. The bucket is always addressed in the URL path.
// Other parameters, and credentials in the URL, are refused.
//
// Credentials come from cold.Options.Credentials or else from the
// environment, the first pair that is set of:
//
//	MINIO_ACCESS_KEY / MINIO_SECRET_KEY
//	MINIO_ROOT_USER / MINIO_ROOT_PASSWORD
//	AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN)
//
// Open fails when none is set: MinIO buckets are not read anonymously.
//
// Requests:
//
//   - Upload: one PUT up to Options.PartSize bytes, a multipart upload of
//     PartSize parts beyond (Options.PartConcurrency at a time). An object
//     of unknown size is read up to PartSize first, so small ones still
//     take one PUT.
//   - Get: one GET, verifying the object's full-object checksum where the
//     server stored one; GetRange: one ranged GET. Bodies are checked
//     against Content-Length; an empty range is answered with a HEAD.
//   - Attributes/Exists: HEAD. Iter: ListObjectsV2. Delete: DELETE.
//   - Open: one listing of at most one key under the prefix, which tells
//     wrong credentials, a missing bucket and an unreachable server apart.
//
// Retries: minio-go retries a request up to Options.MaxAttempts times by
// its own list of retryable errors (the same kinds cold.IsRetryable
// accepts). Errors keep the minio.ErrorResponse in the chain, wrapped in
// ResponseError so that cold.IsRetryable can read its status and code.
//
// AbortIncompleteUploads: MinIO lists multipart uploads only for an exact
// object key, not for a key prefix, so pass the key of the upload to
// abort. MinIO also removes uploads left incomplete for 24 hours (its
// api.stale_uploads_expiry).
package miniobucket
