// Package bucketurl opens a cold.Bucket from its URL, choosing the backend
// by scheme:
//
//	file:///var/lib/tierlog/bucket                     cold/filebucket
//	s3://BUCKET/PREFIX?region=R&endpoint=URL&path_style=true  cold/s3bucket
//	minio://HOST:PORT/BUCKET/PREFIX?secure=false       cold/miniobucket
//
// It sits apart from package cold because the backends import cold (for
// the interface and ErrNotFound); cold cannot import them back. See the
// cold package documentation for the parameters and credential sources.
package bucketurl
