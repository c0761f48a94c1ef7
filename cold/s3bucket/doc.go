// Package s3bucket is the cold.Bucket backend for Amazon S3 and
// S3-compatible stores (LocalStack, MinIO, Ceph RGW, …), on aws-sdk-go-v2.
//
// URL:
//
//	s3://BUCKET/PREFIX?region=REGION&endpoint=URL&path_style=true
//
// region defaults to the SDK's (AWS_REGION, AWS_PROFILE's config), or
// us-east-1 when an endpoint is given; endpoint without a scheme means
// https; path_style puts the bucket in the URL path, which most
// S3-compatible stores need. Other parameters are refused.
//
// Credentials come from the SDK's default chain (environment
// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN,
// AWS_PROFILE with ~/.aws/credentials and ~/.aws/config, web identity,
// ECS and EC2 roles), or from cold.Options.Credentials. A custom CA bundle
// in AWS_CA_BUNDLE is honored. Credentials in the URL are refused.
//
// Requests:
//
//   - Upload: one PutObject up to Options.PartSize bytes; beyond, a
//     multipart upload of PartSize parts, Options.PartConcurrency at a time,
//     through feature/s3/manager (deprecated upstream in favour of
//     feature/s3/transfermanager, which is still v0; manager is stable and
//     does what we need). A failed multipart upload is aborted.
//   - Get/GetRange: one GetObject, ranged unless the whole object is
//     wanted; an empty range is answered with a HEAD. The body is checked
//     against Content-Length.
//   - Attributes/Exists: HeadObject. Iter: ListObjectsV2, 1000 keys per
//     request. Delete: DeleteObject.
//   - Open: one ListObjectsV2 with max-keys=1 under the prefix, which
//     tells wrong credentials, a missing bucket, a wrong region and an
//     unreachable endpoint apart.
//
// Retries: the SDK's standard retryer, with Options.MaxAttempts attempts,
// its client-side retry quota off, and cold.IsRetryable deciding.
//
// AbortIncompleteUploads lists multipart uploads by prefix. On AWS that
// finds every upload under the prefix; MinIO lists uploads only for an
// exact object key, so pass the key of the upload to abort there (MinIO
// also expires stale uploads itself, after 24 hours by default). On AWS a
// lifecycle rule with AbortIncompleteMultipartUpload does it for free.
package s3bucket
