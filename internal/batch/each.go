package batch

import (
	"fmt"
	"math"
)

// Each decodes the batch at the start of b as Decode does, but hands the
// records to yield one at a time and stops when yield returns false, so a
// caller that wants a few records of a large batch (a fetch that stops at
// its byte budget) never holds all of them. Keys, values and header values
// alias b, or the decompressed records section of a compressed batch; copy
// them to keep them without keeping that section. Checks that need the
// whole section (the record count) run only when yield never stops.
func (o DecodeOptions) Each(b []byte, yield func(Record) bool) (Header, error) {
	h, err := Validate(b)
	if err != nil {
		return h, err
	}
	if h.BaseOffset > math.MaxInt64-int64(h.LastOffsetDelta) {
		return h, fmt.Errorf("%w: base offset %d + last offset delta %d overflows int64", ErrCorrupt, h.BaseOffset, h.LastOffsetDelta)
	}
	raw := b[HeaderSize:h.Size()]
	if c := h.Codec(); c != None {
		if raw, err = Decompress(c, raw, o.MaxUncompressed); err != nil {
			return h, err
		}
	}
	_, err = walkRecords(h, raw, false, yield)
	return h, err
}
