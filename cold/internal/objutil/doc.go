// Package objutil holds what the cold backends share: key and range checks,
// a body reader that refuses to end early, and the default HTTP transport.
// It is internal so that the cold API stays the small Bucket interface.
package objutil
