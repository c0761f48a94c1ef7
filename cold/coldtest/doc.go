// Package coldtest holds the contract test of cold.Bucket, in a non-test
// file so that every backend's tests (and any future backend's) run the
// same checks:
//
//	func TestAcceptance(t *testing.T) {
//		b, err := filebucket.New(t.TempDir())
//		...
//		coldtest.AcceptanceTest(t, b)
//	}
//
// AcceptanceTest covers every method: upload and get, ranges (length -1,
// offset at the end, past the end, empty ranges, invalid ranges), the
// attributes, exists, delete (also of missing keys and of key prefixes),
// iteration order and prefix handling, ErrNotFound from every read
// method, overwrite, empty and large (multipart) objects, uploads of
// unknown size and of a wrong announced size (no partial objects),
// canceled contexts, invalid keys, and concurrent uploads.
//
// It lives apart from package cold so that the server binary does not
// link package testing.
package coldtest
