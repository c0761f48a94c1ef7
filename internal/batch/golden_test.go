package batch

import (
	"bytes"
	stdgzip "compress/gzip"
	"encoding/binary"
	"hash/crc32"
	"io"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/snappy/xerial"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// This file checks the codec against independent implementations in both
// directions: batches framed by franz-go's kmsg with records compressed by
// other encoders (the standard library's gzip, klauspost's xerial package,
// LZ4 and zstd with settings unlike Compress's) must decode; and batches
// from Build must parse with kmsg and decompress with those libraries.

// oracleCompressors compress a records section the way other producers
// might. Two per codec where producers differ in practice.
var oracleCompressors = []struct {
	name  string
	codec Codec
	fn    func(t *testing.T, raw []byte) []byte
}{
	{"gzip/stdlib", Gzip, func(t *testing.T, raw []byte) []byte {
		var buf bytes.Buffer
		w, _ := stdgzip.NewWriterLevel(&buf, stdgzip.BestCompression)
		mustWrite(t, w, raw)
		return buf.Bytes()
	}},
	{"gzip/two members", Gzip, func(t *testing.T, raw []byte) []byte {
		// Concatenated gzip members are one valid gzip stream.
		var buf bytes.Buffer
		half := len(raw) / 2
		mustWrite(t, stdgzip.NewWriter(&buf), raw[:half])
		mustWrite(t, stdgzip.NewWriter(&buf), raw[half:])
		return buf.Bytes()
	}},
	{"snappy/xerial (Java producer)", Snappy, func(_ *testing.T, raw []byte) []byte {
		return xerial.Encode(nil, raw)
	}},
	{"snappy/raw block (franz-go)", Snappy, func(_ *testing.T, raw []byte) []byte {
		return s2.EncodeSnappy(nil, raw)
	}},
	{"lz4/4MiB blocks, block checksums", LZ4, func(t *testing.T, raw []byte) []byte {
		var buf bytes.Buffer
		w := lz4.NewWriter(&buf)
		if err := w.Apply(lz4.BlockChecksumOption(true), lz4.CompressionLevelOption(lz4.Level5)); err != nil {
			t.Fatal(err)
		}
		mustWrite(t, w, raw)
		return buf.Bytes()
	}},
	{"zstd/best, no content size", Zstd, func(t *testing.T, raw []byte) []byte {
		var buf bytes.Buffer
		w, err := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithEncoderConcurrency(1))
		if err != nil {
			t.Fatal(err)
		}
		mustWrite(t, w, raw) // streaming: the frame does not state its size
		return buf.Bytes()
	}},
}

func mustWrite(t *testing.T, w io.WriteCloser, p []byte) {
	t.Helper()
	if _, err := w.Write(p); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// kmsgBatch frames recs with kmsg's Record and RecordBatch encoders,
// compressing the records section with compress.
func kmsgBatch(t *testing.T, codec Codec, compress func(*testing.T, []byte) []byte, recs []Record, base int64) []byte {
	var raw []byte
	maxTS := recs[0].Timestamp
	for i, r := range recs {
		maxTS = max(maxTS, r.Timestamp)
		kr := kmsg.Record{
			TimestampDelta64: r.Timestamp - recs[0].Timestamp,
			OffsetDelta:      int32(i),
			Key:              r.Key,
			Value:            r.Value,
		}
		for _, h := range r.Headers {
			kr.Headers = append(kr.Headers, kmsg.Header{Key: h.Key, Value: h.Value})
		}
		// kmsg writes Length as given: measure the body with a
		// one-byte zero length first.
		kr.Length = int32(len(kr.AppendTo(nil)) - 1)
		raw = kr.AppendTo(raw)
	}
	records := raw
	if codec != None {
		records = compress(t, raw)
	}
	rb := kmsg.RecordBatch{
		FirstOffset:          base,
		Length:               int32(49 + len(records)),
		PartitionLeaderEpoch: -1,
		Magic:                2,
		Attributes:           int16(codec),
		LastOffsetDelta:      int32(len(recs) - 1),
		FirstTimestamp:       recs[0].Timestamp,
		MaxTimestamp:         maxTS,
		ProducerID:           -1,
		ProducerEpoch:        -1,
		FirstSequence:        -1,
		NumRecords:           int32(len(recs)),
		Records:              records,
	}
	b := rb.AppendTo(nil)
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)))
	return b
}

func TestDecodeKmsgGoldenBatches(t *testing.T) {
	recs := sampleRecords()
	plain := kmsgBatch(t, None, nil, recs, 5)
	_, got, err := Decode(plain)
	if err != nil {
		t.Fatalf("uncompressed kmsg batch: %v", err)
	}
	sameRecords(t, got, wantDecoded(recs, 5))

	for _, oc := range oracleCompressors {
		t.Run(oc.name, func(t *testing.T) {
			b := kmsgBatch(t, oc.codec, oc.fn, recs, 5)
			h, got, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if h.Codec() != oc.codec {
				t.Errorf("codec %s, want %s", h.Codec(), oc.codec)
			}
			sameRecords(t, got, wantDecoded(recs, 5))
		})
	}
}

// oracleDecompress decompresses with the libraries directly, not with
// Decompress.
func oracleDecompress(t *testing.T, c Codec, data []byte) []byte {
	t.Helper()
	var r io.Reader
	switch c {
	case None:
		return data
	case Gzip:
		gr, err := stdgzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		r = gr
	case Snappy:
		out, err := xerial.Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		return out
	case LZ4:
		r = lz4.NewReader(bytes.NewReader(data))
	case Zstd:
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		out, err := d.DecodeAll(data, nil)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestBuildParsesWithKmsg(t *testing.T) {
	recs := sampleRecords()
	for _, c := range allCodecs {
		t.Run(c.String(), func(t *testing.T) {
			b := mustBuild(t, recs, BuildOptions{Codec: c, BaseOffset: 40})
			var rb kmsg.RecordBatch
			if err := rb.ReadFrom(b); err != nil {
				t.Fatal(err)
			}
			if got := crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)); uint32(rb.CRC) != got {
				t.Errorf("crc %08x, bytes give %08x", uint32(rb.CRC), got)
			}
			if rb.FirstOffset != 40 || rb.Magic != 2 || rb.Attributes != int16(c) || rb.NumRecords != 5 || rb.LastOffsetDelta != 4 ||
				rb.ProducerID != -1 || rb.ProducerEpoch != -1 || rb.FirstSequence != -1 || rb.PartitionLeaderEpoch != -1 ||
				int(rb.Length) != len(b)-12 {
				t.Errorf("header as kmsg reads it: %+v", rb)
			}
			if c == Snappy && !bytes.HasPrefix(rb.Records, xerialMagic) {
				t.Error("snappy records are not xerial-framed")
			}
			raw := oracleDecompress(t, c, rb.Records)
			for i, want := range recs {
				var kr kmsg.Record
				n, w := binary.Varint(raw)
				if w <= 0 || int(n) > len(raw)-w {
					t.Fatalf("record %d: bad framing", i)
				}
				if err := kr.ReadFrom(raw[:w+int(n)]); err != nil {
					t.Fatalf("record %d: %v", i, err)
				}
				raw = raw[w+int(n):]
				if kr.OffsetDelta != int32(i) || rb.FirstTimestamp+kr.TimestampDelta64 != want.Timestamp ||
					!bytes.Equal(kr.Key, want.Key) || (kr.Key == nil) != (want.Key == nil) ||
					!bytes.Equal(kr.Value, want.Value) || (kr.Value == nil) != (want.Value == nil) ||
					len(kr.Headers) != len(want.Headers) {
					t.Errorf("record %d as kmsg reads it: %+v", i, kr)
					continue
				}
				for j, h := range want.Headers {
					if kr.Headers[j].Key != h.Key || !bytes.Equal(kr.Headers[j].Value, h.Value) || (kr.Headers[j].Value == nil) != (h.Value == nil) {
						t.Errorf("record %d header %d: %+v, want %+v", i, j, kr.Headers[j], h)
					}
				}
			}
			if len(raw) != 0 {
				t.Errorf("%d bytes after the last record", len(raw))
			}
		})
	}
}
