package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/tierlog/tierlog/internal/batch"
)

// Leaf kinds (the first byte of a leaf).
const (
	KindRecord byte = 1 // a record of the partition
	KindAbsent byte = 2 // an offset the archive never held (see FORMAT: absent leaves)
)

// HashSize is the size of every leaf and node hash (SHA-256).
const HashSize = sha256.Size

// flagControl marks a control record (a transaction marker).
const flagControl = 0x01

// Header is one record header. In JSON both its key and value are base64:
// Kafka header keys are bytes (non-Java producers send any), and a JSON
// string would turn invalid UTF-8 into U+FFFD - a record that no longer
// encodes its leaf.
type Header struct {
	Key   string `json:"key"`
	Value []byte `json:"value"` // nil: a null value
}

// headerJSON is Header's JSON form.
type headerJSON struct {
	Key   []byte `json:"key"`
	Value []byte `json:"value"`
}

// MarshalJSON writes the key as base64, like the value.
func (h Header) MarshalJSON() ([]byte, error) {
	return json.Marshal(headerJSON{Key: []byte(h.Key), Value: h.Value})
}

// UnmarshalJSON reads the key from base64; a header key is never null.
func (h *Header) UnmarshalJSON(b []byte) error {
	var raw struct {
		Key json.RawMessage `json:"key"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	if len(raw.Key) == 0 || string(raw.Key) == "null" {
		return errors.New("audit: a record header without a key")
	}
	var j headerJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	h.Key, h.Value = string(j.Key), j.Value
	return nil
}

// Record is one record as the leaf encodes it and as a proof file carries
// it. Key and Value are nil for null (JSON null) and base64 in JSON.
type Record struct {
	Offset int64 `json:"offset"`
	// Timestamp in Unix ms as consumers see it: the batch's base
	// timestamp + delta, or the batch's max timestamp in a LogAppendTime
	// batch.
	Timestamp int64    `json:"timestamp"`
	Key       []byte   `json:"key"`
	Value     []byte   `json:"value"`
	Headers   []Header `json:"headers"`
	Control   bool     `json:"control"`
}

// hasher is RFC 6962's SHA-256 tree hasher.
var hasher = rfc6962.DefaultHasher

// EncodeLeaf appends the canonical leaf of r to dst (see doc.go for the
// layout) and returns the extended slice.
func EncodeLeaf(dst []byte, r Record) []byte {
	dst = append(dst, KindRecord)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.Offset))
	var flags byte
	if r.Control {
		flags |= flagControl
	}
	dst = append(dst, flags)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.Timestamp))
	dst = appendNullable(dst, r.Key)
	dst = appendNullable(dst, r.Value)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(r.Headers)))
	for _, h := range r.Headers {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(h.Key)))
		dst = append(dst, h.Key...)
		dst = appendNullable(dst, h.Value)
	}
	return dst
}

// appendNullable appends an i32 length (-1 for nil) and the bytes.
func appendNullable(dst, v []byte) []byte {
	if v == nil {
		return binary.BigEndian.AppendUint32(dst, uint32(0xffffffff))
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(v)))
	return append(dst, v...)
}

// AbsentLeaf is the leaf of an offset the archive does not hold.
func AbsentLeaf(offset int64) []byte {
	return binary.BigEndian.AppendUint64([]byte{KindAbsent}, uint64(offset))
}

// LeafHash is the RFC 6962 leaf hash of leaf: SHA-256(0x00 || leaf).
func LeafHash(leaf []byte) []byte { return hasher.HashLeaf(leaf) }

// EachRecord decodes the Kafka RecordBatch v2 at the start of b and calls
// fn with each of its records in offset order. A compressed batch is
// decompressed as a stream. Keys, values and header values may alias b or
// a buffer the next record reuses: copy them to keep them past fn.
func EachRecord(b []byte, fn func(Record) error) error {
	hdr, err := batch.ParseHeader(b)
	if err != nil {
		return fmt.Errorf("audit: decode batch: %w", err)
	}
	var ferr error
	var hs []Header
	_, err = batch.DecodeOptions{}.Each(b, func(br batch.Record) bool {
		hs = hs[:0]
		for _, bh := range br.Headers {
			hs = append(hs, Header{Key: bh.Key, Value: bh.Value})
		}
		r := Record{Offset: br.Offset, Timestamp: br.Timestamp, Key: br.Key, Value: br.Value, Control: hdr.Control()}
		if len(hs) > 0 {
			r.Headers = hs
		}
		ferr = fn(r)
		return ferr == nil
	})
	if ferr != nil {
		return ferr
	}
	if err != nil {
		return fmt.Errorf("audit: decode batch: %w", err)
	}
	return nil
}

// AppendLeaves calls fn with the offset and canonical leaf of every record
// of the batch at the start of b, in offset order. leaf is reused by the
// next call: hash or copy it within fn.
func AppendLeaves(b []byte, fn func(offset int64, leaf []byte) error) error {
	var buf []byte
	return EachRecord(b, func(r Record) error {
		buf = EncodeLeaf(buf[:0], r)
		return fn(r.Offset, buf)
	})
}

// EachLeafHash calls fn with the offset and leaf hash (LeafHash of the
// canonical leaf) of every record of the batch at the start of b, in
// offset order. leafHash is reused by the next call: copy it within fn.
// It hashes what AppendLeaves encodes without allocating per record: a
// verifier hashes every record of an archive.
func EachLeafHash(b []byte, fn func(offset int64, leafHash []byte) error) error {
	// RFC 6962's leaf hash is SHA-256(0x00 || leaf): the prefix heads the
	// buffer the leaf is encoded after, hashed in one call.
	buf := []byte{rfc6962.RFC6962LeafHashPrefix}
	sum := new([HashSize]byte)
	return EachRecord(b, func(r Record) error {
		buf = EncodeLeaf(buf[:1], r)
		*sum = sha256.Sum256(buf)
		return fn(r.Offset, sum[:])
	})
}

// ErrOrder means leaves were offered for offsets the tree (or the run of
// leaves) already holds: leaves are appended in offset order, once.
var ErrOrder = errors.New("audit: leaves must be appended in offset order")

// Leaves are the leaf hashes of the consecutive offsets [Start, End), as a
// segment's batches give them: offsets a segment skips (compaction, a gap)
// get absent leaves. The zero value is not usable; see NewLeaves.
type Leaves struct {
	start  int64
	hashes []byte // HashSize bytes per offset
}

// NewLeaves starts an empty run of leaves at offset start.
func NewLeaves(start int64) *Leaves { return &Leaves{start: start} }

// Start is the first offset of the run.
func (l *Leaves) Start() int64 { return l.start }

// End is the offset after the run's last leaf.
func (l *Leaves) End() int64 { return l.start + int64(len(l.hashes)/HashSize) }

// Hash returns the leaf hash of offset o, Start() <= o < End().
func (l *Leaves) Hash(o int64) []byte {
	i := (o - l.start) * HashSize
	return l.hashes[i : i+HashSize : i+HashSize]
}

// Add appends the leaf hash of offset o, filling the offsets between
// End() and o with absent leaves. An offset below End() fails with ErrOrder.
func (l *Leaves) Add(o int64, leafHash []byte) error {
	if o < l.End() {
		return fmt.Errorf("%w: leaf for offset %d, the run already ends at %d", ErrOrder, o, l.End())
	}
	if len(leafHash) != HashSize {
		return fmt.Errorf("audit: leaf hash of %d bytes, want %d", len(leafHash), HashSize)
	}
	l.FillTo(o)
	l.hashes = append(l.hashes, leafHash...)
	return nil
}

// FillTo appends absent leaves up to offset end (nothing if End() >= end).
func (l *Leaves) FillTo(end int64) {
	for o := l.End(); o < end; o++ {
		l.hashes = append(l.hashes, LeafHash(AbsentLeaf(o))...)
	}
}

// AddBatch appends the leaves of every record of the Kafka batch at the
// start of b (see EachLeafHash), filling gaps with absent leaves.
func (l *Leaves) AddBatch(b []byte) error {
	return EachLeafHash(b, l.Add)
}
