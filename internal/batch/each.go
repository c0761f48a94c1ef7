package batch

import (
	"fmt"
	"math"
)

// Each decodes the batch at the start of b as Decode does, but hands the
// records to yield one at a time and stops when yield returns false, so a
// caller that wants a few records of a large batch (a fetch that stops at
// its byte budget) never holds all of them. A compressed batch is
// decompressed as a stream, only as far as the records yield takes, holding
// at most EachMemory(b) bytes besides b. Keys, values and header values
// alias b for an uncompressed batch, and a read buffer that the next record
// reuses for a compressed one: copy them to keep them past yield. Checks
// that need the whole section (the record count) run only when yield never
// stops.
func (o DecodeOptions) Each(b []byte, yield func(Record) bool) (Header, error) {
	h, err := Validate(b)
	if err != nil {
		return h, err
	}
	if h.BaseOffset > math.MaxInt64-int64(h.LastOffsetDelta) {
		return h, fmt.Errorf("%w: base offset %d + last offset delta %d overflows int64", ErrCorrupt, h.BaseOffset, h.LastOffsetDelta)
	}
	raw := b[HeaderSize:h.Size()]
	c := h.Codec()
	if c == None {
		_, err = walkRecords(h, &sectionSource{raw: raw}, false, 0, yield)
		return h, err
	}
	r, done, err := openStream(c, raw, o.MaxUncompressed)
	if err != nil {
		return h, err
	}
	defer done()
	_, err = walkRecords(h, &streamSource{r: r}, false, 0, yield)
	return h, err
}
