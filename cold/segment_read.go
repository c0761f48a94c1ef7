package cold

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// FooterTailBytes is how much of an object's end ReadFooter fetches in its
// first GET: enough for the footer of a segment of about 900 chunks, so a
// second GET is needed only for very large segments.
const FooterTailBytes = 64 << 10

// ReadFooter fetches and parses the footer of the object seg names (of
// seg.Size bytes, the size the manifest recorded; its recorded version if
// seg names one) with one ranged GET of its tail, and a second only if the
// footer is larger than FooterTailBytes. It does not retry; Reader does.
func ReadFooter(ctx context.Context, b Bucket, seg SegmentRef) (*Footer, error) {
	f, _, err := readFooter(ctx, b, seg, nil)
	return f, err
}

// readFooter is ReadFooter of seg (its version, if it names one) that also
// counts its GETs in gets (if not nil).
func readFooter(ctx context.Context, b Bucket, seg SegmentRef, gets func(n int)) (*Footer, int, error) {
	key, size := seg.Key, seg.Size
	if size < SegmentHeaderSize+SegmentTrailerSize {
		return nil, 0, withKey(corruptFooter("object size %d is below the smallest segment (%d bytes)", size, SegmentHeaderSize+SegmentTrailerSize), key)
	}
	n := min(size, FooterTailBytes)
	tail, err := getAll(ctx, b, seg, size-n, n, gets)
	if err != nil {
		return nil, 1, err
	}
	tr, err := parseTrailer(tail, size)
	if err != nil {
		return nil, 1, withKey(err, key)
	}
	requests := 1
	if need := tr.footerLen + SegmentTrailerSize; need > n {
		head, err := getAll(ctx, b, seg, size-need, need-n, gets)
		if err != nil {
			return nil, 2, err
		}
		tail = append(head, tail...)
		requests++
	}
	f, err := ParseFooter(tail, size)
	if err != nil {
		return nil, requests, withKey(err, key)
	}
	return f, requests, nil
}

// getAll reads length bytes at off. A short body is reported as a
// truncated object wrapping io.ErrUnexpectedEOF: retryable (a connection
// cut mid-body looks the same), and corruption if it persists.
func getAll(ctx context.Context, b Bucket, seg SegmentRef, off, length int64, gets func(n int)) ([]byte, error) {
	key := seg.Key
	rc, err := GetRangeVersion(ctx, b, key, seg.VersionID, off, length)
	if err != nil {
		if gets != nil {
			gets(0)
		}
		return nil, fmt.Errorf("cold: get %s bytes %d-%d: %w", key, off, off+length-1, err)
	}
	defer rc.Close()
	buf := make([]byte, length)
	n, err := io.ReadFull(rc, buf)
	if gets != nil {
		gets(n)
	}
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, &CorruptObjectError{Key: key, Chunk: -1, Err: io.ErrUnexpectedEOF,
				Reason: fmt.Sprintf("object ends after %d of the %d bytes at %d (truncated, or smaller than the manifest says)", n, length, off)}
		}
		return nil, fmt.Errorf("cold: get %s bytes %d-%d: %w", key, off, off+length-1, err)
	}
	return buf, nil
}
