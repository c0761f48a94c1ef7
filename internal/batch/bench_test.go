package batch

import (
	"fmt"
	"testing"
	"time"
)

// benchRecords is a produce-sized batch of JSON-like events: 1,000 records
// of about 200 bytes, repetitive the way real payloads are, so the codecs
// compress it the way they would in production rather than perfectly.
func benchRecords() ([]Record, int) {
	recs := make([]Record, 1000)
	size := 0
	for i := range recs {
		recs[i] = Record{
			Timestamp: 1_700_000_000_000 + int64(i),
			Key:       fmt.Appendf(nil, "user-%d", i%97),
			Value: fmt.Appendf(nil, `{"event":"page_view","user":%d,"session":"%08x","path":"/products/%d","ms":%d,"agent":"Mozilla/5.0 (X11; Linux x86_64)"}`,
				i%97, i*2654435761, i%31, i*7%1000),
			Headers: []RecordHeader{{Key: "trace-id", Value: fmt.Appendf(nil, "%016x", i)}},
		}
		size += len(recs[i].Key) + len(recs[i].Value)
	}
	return recs, size
}

// BenchmarkDecode reports throughput in uncompressed batch bytes per
// second, so the codecs compare on the same work: decompress plus parse.
func BenchmarkDecode(b *testing.B) {
	recs, _ := benchRecords()
	plain := mustBuild(b, recs, BuildOptions{})
	for _, c := range allCodecs {
		b.Run(c.String(), func(b *testing.B) {
			data := mustBuild(b, recs, BuildOptions{Codec: c})
			b.SetBytes(int64(len(plain)))
			b.ReportMetric(float64(len(plain))/float64(len(data)), "ratio")
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := Decode(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBuild reports throughput in uncompressed batch bytes per second.
func BenchmarkBuild(b *testing.B) {
	recs, _ := benchRecords()
	plain := mustBuild(b, recs, BuildOptions{})
	for _, c := range allCodecs {
		b.Run(c.String(), func(b *testing.B) {
			b.SetBytes(int64(len(plain)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Build(recs, BuildOptions{Codec: c}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCheckProduced is the cost of the append path's full validation
// (CheckProduced: CRC, decompress, parse every record) per codec, against
// plain CRC checking (Validate, what append did before) of the same batch
// in the same run. MB/s counts uncompressed batch bytes, as BenchmarkDecode
// does; wire-MB/s counts the bytes as sent; x-crc is how many times the
// CRC check's time full validation takes.
func BenchmarkCheckProduced(b *testing.B) {
	recs, _ := benchRecords()
	plain := mustBuild(b, recs, BuildOptions{})
	check := ProduceOptions{MaxRecords: RecordLimit(1048588)}
	for _, c := range allCodecs {
		b.Run(c.String(), func(b *testing.B) {
			data := mustBuild(b, recs, BuildOptions{Codec: c})
			b.SetBytes(int64(len(plain)))
			b.ReportAllocs()
			var crc, full time.Duration
			for b.Loop() {
				t0 := time.Now()
				if _, err := Validate(data); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if _, err := check.CheckProduced(data); err != nil {
					b.Fatal(err)
				}
				crc, full = crc+t1.Sub(t0), full+time.Since(t1)
			}
			b.ReportMetric(float64(len(data))*float64(b.N)/full.Seconds()/1e6, "wire-MB/s")
			b.ReportMetric(float64(full)/float64(crc), "x-crc")
		})
	}
}
