package batch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"testing"
)

// fixCRC recomputes the CRC after a test edits bytes it covers, so the
// decoder's deeper checks are reached.
func fixCRC(b []byte) {
	binary.BigEndian.PutUint32(b[crcPos:], crc32.Checksum(b[attributesPos:], castagnoli))
}

// setLength rewrites the length field for a batch whose body changed size.
func setLength(b []byte) {
	binary.BigEndian.PutUint32(b[lengthPos:], uint32(len(b)-LengthFieldEnd))
}

// craft frames a hand-made records section: raw is compressed with c and
// the header claims n records with the given last offset delta. The CRC and
// length are correct, so only the records themselves are wrong.
func craft(t *testing.T, c Codec, raw []byte, n, lastDelta int32) []byte {
	t.Helper()
	b := craftBatch(c, raw, n, lastDelta)
	if b == nil {
		t.Fatalf("%s: cannot compress the crafted records", c)
	}
	return b
}

// rec frames one record body given as raw fields: the helpers below append
// varints, so each corrupt case spells out exactly what is wrong.
func rec(fields ...[]byte) []byte {
	body := []byte{0} // attributes
	for _, f := range fields {
		body = append(body, f...)
	}
	return append(binary.AppendVarint(nil, int64(len(body))), body...)
}

func vi(v int64) []byte { return binary.AppendVarint(nil, v) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// Each corruption is applied to a batch of every codec; each must fail
// with the stated sentinel, never panic and never decode.
func TestCorruptBatches(t *testing.T) {
	recs := sampleRecords()[:4]
	for _, c := range allCodecs {
		good := mustBuild(t, recs, BuildOptions{Codec: c})
		cases := []struct {
			name    string
			corrupt func(b []byte) []byte
			want    error
		}{
			{"flipped crc byte", func(b []byte) []byte { b[crcPos+2] ^= 0x40; return b }, ErrCorrupt},
			{"flipped body byte", func(b []byte) []byte { b[len(b)-3] ^= 0x01; return b }, ErrCorrupt},
			{"magic 1", func(b []byte) []byte { b[magicPos] = 1; return b }, ErrCorrupt},
			{"length below header", func(b []byte) []byte { binary.BigEndian.PutUint32(b[lengthPos:], 10); return b }, ErrCorrupt},
			{"length beyond bytes", func(b []byte) []byte { binary.BigEndian.PutUint32(b[lengthPos:], uint32(len(b))); return b }, ErrShortBatch},
			{"truncated header", func(b []byte) []byte { return b[:HeaderSize-1] }, ErrShortBatch},
			{"truncated body", func(b []byte) []byte { return b[:len(b)-1] }, ErrShortBatch},
			{"count one more", func(b []byte) []byte { bump(b[numRecordsPos:], 1); fixCRC(b); return b }, ErrCorrupt},
			{"count one fewer", func(b []byte) []byte { bump(b[numRecordsPos:], -1); fixCRC(b); return b }, ErrCorrupt},
			{"count zero", func(b []byte) []byte { binary.BigEndian.PutUint32(b[numRecordsPos:], 0); fixCRC(b); return b }, ErrCorrupt},
			{"count negative", func(b []byte) []byte { binary.BigEndian.PutUint32(b[numRecordsPos:], 0xffffffff); fixCRC(b); return b }, ErrCorrupt},
			{"count huge", func(b []byte) []byte {
				binary.BigEndian.PutUint32(b[numRecordsPos:], 1<<30)
				bump(b[lastOffsetDeltaPos:], 1<<30)
				fixCRC(b)
				return b
			}, ErrCorrupt},
			{"last offset delta short", func(b []byte) []byte { bump(b[lastOffsetDeltaPos:], -1); fixCRC(b); return b }, ErrCorrupt},
			{"base offset overflows", func(b []byte) []byte { putInt64(b[baseOffsetPos:], math.MaxInt64-1); return b }, ErrCorrupt},
			{"unknown codec 5", func(b []byte) []byte { b[attributesPos+1] = b[attributesPos+1]&^7 | 5; fixCRC(b); return b }, ErrCorrupt},
			{"records cut short", func(b []byte) []byte { b = b[:len(b)-5]; setLength(b); fixCRC(b); return b }, ErrCorrupt},
			{"garbage records", func(b []byte) []byte {
				r := rand.New(rand.NewPCG(1, uint64(c)))
				for i := HeaderSize; i < len(b); i++ {
					b[i] = byte(r.Uint32())
				}
				fixCRC(b)
				return b
			}, ErrCorrupt},
		}
		for _, tc := range cases {
			b := tc.corrupt(bytes.Clone(good))
			h, got, err := Decode(b)
			if !errors.Is(err, tc.want) {
				t.Errorf("%s/%s: error %v, want %v", c, tc.name, err, tc.want)
			}
			if got != nil {
				t.Errorf("%s/%s: %d records returned with the error (header %+v)", c, tc.name, len(got), h)
			}
		}
	}
}

func bump(b []byte, by int32) {
	binary.BigEndian.PutUint32(b, uint32(int32(binary.BigEndian.Uint32(b))+by))
}

// Records that frame correctly but are wrong inside. Uncompressed batches
// reach these checks too when the outer framing still adds up, so every
// codec runs them.
func TestCorruptRecords(t *testing.T) {
	okRec := rec(vi(0), vi(0), vi(1), []byte("k"), vi(1), []byte("v"), vi(0))
	cases := []struct {
		name      string
		raw       []byte
		n, last   int32
		wantInErr string
	}{
		{"key overruns record", rec(vi(0), vi(0), vi(50), []byte("k"), vi(-1), vi(0)), 1, 0, "key length"},
		{"key length below -1", rec(vi(0), vi(0), vi(-2), vi(-1), vi(0)), 1, 0, "key length"},
		{"null header key", rec(vi(0), vi(0), vi(-1), vi(-1), vi(1), vi(-1), vi(-1)), 1, 0, "header key"},
		{"negative header count", rec(vi(0), vi(0), vi(-1), vi(-1), vi(-1)), 1, 0, "header count"},
		{"header count beyond record", rec(vi(0), vi(0), vi(-1), vi(-1), vi(1000)), 1, 0, "header count"},
		{"trailing bytes in record", rec(vi(0), vi(0), vi(-1), vi(-1), vi(0), []byte{0, 0}), 1, 0, "left over"},
		{"no attributes", cat(vi(0)), 1, 0, "attributes"},
		{"truncated varint", cat(vi(2), []byte{0, 0x80}), 1, 0, "timestamp delta"},
		{"offset delta repeats", cat(okRec, okRec), 2, 1, "offset delta"},
		{"offset delta past last", rec(vi(0), vi(3), vi(-1), vi(-1), vi(0)), 1, 2, "offset delta"},
		{"negative offset delta", rec(vi(0), vi(-1), vi(-1), vi(-1), vi(0)), 1, 0, "offset delta"},
		// Validate catches these three for uncompressed batches, with its
		// own wording, so only the sentinel is checked.
		{"more records than counted", cat(okRec, rec(vi(0), vi(1), vi(-1), vi(-1), vi(0))), 1, 1, ""},
		{"fewer records than counted", okRec, 2, 1, ""},
		{"record length overruns section", cat(vi(100), []byte{0, 0}), 1, 0, ""},
	}
	for _, c := range allCodecs {
		for _, tc := range cases {
			_, got, err := Decode(craft(t, c, tc.raw, tc.n, tc.last))
			if !errors.Is(err, ErrCorrupt) || !bytes.Contains([]byte(err.Error()), []byte(tc.wantInErr)) {
				t.Errorf("%s/%s: error %v, want ErrCorrupt mentioning %q", c, tc.name, err, tc.wantInErr)
			}
			if got != nil {
				t.Errorf("%s/%s: records returned with the error", c, tc.name)
			}
		}
	}
	// The well-formed record decodes, so the failures above are the edits.
	for _, c := range allCodecs {
		if _, _, err := Decode(craft(t, c, okRec, 1, 0)); err != nil {
			t.Errorf("%s: the unedited crafted record fails: %v", c, err)
		}
	}
}

// Garbage in each codec's payload must be reported as corruption by
// Decompress itself, not only through Decode.
func TestDecompressGarbage(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	garbage := make([]byte, 300)
	for i := range garbage {
		garbage[i] = byte(r.Uint32())
	}
	inputs := map[string][]byte{
		"garbage":           garbage,
		"empty":             {},
		"xerial bad block":  append(bytes.Clone(xerialHeader()), 0, 0, 0, 9, 1, 2),
		"xerial torn len":   append(bytes.Clone(xerialHeader()), 0, 0),
		"xerial bad snappy": append(bytes.Clone(xerialHeader()), 0, 0, 0, 3, 0xff, 0xff, 0xff),
	}
	for _, c := range allCodecs[1:] {
		for name, in := range inputs {
			if c != Snappy && len(name) > 6 && name[:6] == "xerial" {
				continue
			}
			out, err := Decompress(c, in, 1<<20)
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s/%s: Decompress = %d bytes, %v; want ErrCorrupt", c, name, len(out), err)
			}
		}
	}
	if _, err := Decompress(Codec(6), []byte("x"), 0); err == nil {
		t.Error("Decompress with codec 6 succeeded")
	}
	if _, err := Compress(Codec(6), []byte("x")); err == nil {
		t.Error("Compress with codec 6 succeeded")
	}
}

func xerialHeader() []byte {
	return append(append([]byte{}, xerialMagic...), 0, 0, 0, 1, 0, 0, 0, 1)
}
