package batch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// A leader must accept what a real Kafka producer sends: franz-go's kgo
// output for every codec, with and without idempotence (producer id,
// epoch, sequence), including null and empty keys and values and headers.
func TestCheckProducedAcceptsKgoBatches(t *testing.T) {
	recs := kgoRecords()
	for _, idem := range []bool{false, true} {
		for _, tc := range []struct {
			codec kgo.CompressionCodec
			want  Codec
		}{
			{kgo.NoCompression(), None},
			{kgo.GzipCompression(), Gzip},
			{kgo.SnappyCompression(), Snappy},
			{kgo.Lz4Compression(), LZ4},
			{kgo.ZstdCompression(), Zstd},
		} {
			t.Run(fmt.Sprintf("%s idempotent=%v", tc.want, idem), func(t *testing.T) {
				var extra []kgo.Opt
				if !idem {
					extra = append(extra, kgo.DisableIdempotentWrite())
				}
				batches := produceWithKgoOpts(t, tc.codec, recs, extra...)
				n := 0
				for i, b := range batches {
					p, err := ProduceOptions{MaxRecords: RecordLimit(1 << 20)}.CheckProduced(b)
					if err != nil {
						t.Fatalf("batch %d from kgo refused: %v", i, err)
					}
					if idem != (p.ProducerID >= 0) {
						t.Errorf("batch %d: producer id %d, idempotent %v", i, p.ProducerID, idem)
					}
					n += int(p.NumRecords)
				}
				if n != len(recs) {
					t.Fatalf("kgo sent %d records, want %d", n, len(recs))
				}
			})
		}
	}
}

// overlong appends v as a zigzag varint padded to width bytes with
// continuation bytes: a non-minimal encoding of the same value.
func overlong(dst []byte, v int64, width int) []byte {
	u := uint64(v<<1) ^ uint64(v>>63)
	for i := 0; i < width-1; i++ {
		dst = append(dst, byte(u&0x7f)|0x80)
		u >>= 7
	}
	return append(dst, byte(u))
}

// Kafka reads the int32 fields of a record (length, offset delta, key and
// value length, header count, header key and value length) with
// ByteUtils.readVarint, which throws "Varint is too long" past 5 bytes; a
// broker refuses such a batch with CORRUPT_MESSAGE. franz-go's reader
// (kbin.Varint) fails the same way and its consumer silently stops at that
// record, so a batch stored with one is a poison pill that no Kafka client
// can read past. Go's binary.Varint takes up to 10 bytes, so CheckProduced
// must refuse them itself.
func TestCheckProducedRefusesVarintsKafkaCannotRead(t *testing.T) {
	const six = 6 // one byte more than a 32-bit varint may take
	fields := []string{"record length", "offset delta", "key length", "value length", "header count", "header key length", "header value length"}
	for _, field := range fields {
		t.Run(field+" in 6 varint bytes", func(t *testing.T) {
			w := func(name string) int {
				if name == field {
					return six
				}
				return 1
			}
			body := []byte{0}                           // attributes
			body = overlong(body, 0, 1)                 // timestamp delta (a varlong: up to 10 bytes is fine)
			body = overlong(body, 0, w("offset delta")) // offset delta
			body = overlong(body, 1, w("key length"))   // key length
			body = append(body, 'k')                    //
			body = overlong(body, 1, w("value length")) // value length
			body = append(body, 'v')                    //
			body = overlong(body, 1, w("header count")) // one header
			body = overlong(body, 1, w("header key length"))
			body = append(body, 'h')
			body = overlong(body, 1, w("header value length"))
			body = append(body, 'x')
			rec := overlong(nil, int64(len(body)), w("record length"))
			rec = append(rec, body...)

			// A Kafka client cannot read this record.
			var kr kmsg.Record
			if err := kr.ReadFrom(rec); err == nil {
				t.Fatalf("franz-go's kmsg read the record (%+v): the test does not build what it means to", kr)
			}

			b := batchWithRaw(t, rec)
			if _, _, err := Decode(b); err != nil {
				t.Fatalf("the forged batch is otherwise valid, but: %v", err)
			}
			_, err := ProduceOptions{}.CheckProduced(b)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("CheckProduced accepted a record whose %s takes %d varint bytes, which Kafka and franz-go cannot read (err %v)", field, six, err)
			}
			t.Log(err)
		})
	}
}

// batchWithRaw builds a one-record uncompressed batch and replaces its
// records section with raw, fixing length and CRC.
func batchWithRaw(t *testing.T, raw []byte) []byte {
	t.Helper()
	b, err := Build([]Record{{Timestamp: 1, Key: []byte("k"), Value: []byte("v")}}, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := append(append([]byte(nil), b[:HeaderSize]...), raw...)
	binary.BigEndian.PutUint32(out[lengthPos:], uint32(len(out)-LengthFieldEnd))
	binary.BigEndian.PutUint32(out[crcPos:], crc32.Checksum(out[attributesPos:], castagnoli))
	return out
}
