package tiering_test

import (
	"fmt"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
)

// report gathers BenchmarkTiering's figures and prints them as one table,
// each next to its reference and target.
type report struct {
	gen generated

	uploads            int
	uploadSpan         time.Duration // first upload start to last commit
	uploadWall         time.Duration // daemon start to everything committed
	uploadReqs         requests
	warnings           []string
	segments           int
	segBytes, objBytes int64
	chunks             int64
	rawPut, rawPutSeg  timed
	rawPutReqs         requests
	rawGet             timed
	rawGetReqs         requests

	cold coldResult
	hot  replayed
	warm warmResult
}

const gib = 1 << 30

func (r *report) print(b *testing.B) {
	var sb strings.Builder
	w := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
	row := func(cells ...string) {
		for len(cells) < 5 {
			cells = append(cells, "") // whole rows keep tabwriter's columns aligned
		}
		fmt.Fprintln(w, strings.Join(cells, "\t"))
	}
	rate := func(n int64, d time.Duration) string { return fmt.Sprintf("%.1f MB/s", mbps(n, d)) }
	dur := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	target := func(v, t float64) string {
		if v >= t {
			return fmt.Sprintf(">= %.1f: met", t)
		}
		return fmt.Sprintf(">= %.1f: MISSED by %.1f%%", t, 100*(1-v/t))
	}

	g, c, wr := r.gen, r.cold, r.warm
	compression := float64(r.segBytes) / float64(r.objBytes)
	upSeg := mbps(r.segBytes, r.uploadSpan) / mbps(r.rawPutSeg.bytes, r.rawPutSeg.d)
	upObj := r.rawPut.d.Seconds() / r.uploadSpan.Seconds() // same objects: time ratio
	coldRatio := mbps(c.batchBytes, c.d) / mbps(r.rawGet.bytes, r.rawGet.d)
	warmRatio := mbps(wr.warm.batchBytes, wr.warm.d) / mbps(wr.hot.batchBytes, wr.hot.d)
	segGiB, objGiB := float64(r.segBytes)/gib, float64(r.objBytes)/gib
	puts := r.uploadReqs["PUT"] + r.uploadReqs["POST"]
	gets := c.reqs["GET"]
	perChunk := float64(c.chunkGets) / float64(r.chunks)

	fmt.Fprintf(w, "data: %d JSON audit events, %.1f MiB of keys+values, in %d uncompressed producer batches (generated and appended at %s)\n",
		g.records, mib(g.recordBytes), g.batches, rate(g.recordBytes, g.took))
	fmt.Fprintf(w, "      %d segments, %.1f MiB of segment bytes -> %d chunks, %.1f MiB stored (%s backend)\n\n",
		r.segments, mib(r.segBytes), r.chunks, mib(r.objBytes), *benchBackend)
	row("", "value", "reference (same run)", "ratio", "target")
	row("UPLOAD", "", fmt.Sprintf("%d segments; first upload start to last commit %s", r.uploads, dur(r.uploadSpan)), "", "")
	row("  tiering, segment bytes/s", rate(r.segBytes, r.uploadSpan),
		"raw PUT of the uncompressed segments "+rate(r.rawPutSeg.bytes, r.rawPutSeg.d), fmt.Sprintf("%.2f", upSeg), target(upSeg, 0.8))
	row("  tiering, stored bytes/s", rate(r.objBytes, r.uploadSpan),
		"raw PUT of the same objects "+rate(r.rawPut.bytes, r.rawPut.d), fmt.Sprintf("%.2f", upObj), target(upObj, 0.8))
	row("  compression", fmt.Sprintf("%.2fx", compression), "segment bytes / stored bytes", "", "")
	row("COLD REPLAY", "", fmt.Sprintf("empty %.0f MiB cache, no local segments, 1 MiB fetches, decoded; %s", mib(c.budget), dur(c.d)), "", "")
	row("  records/s", fmt.Sprintf("%.0f", float64(c.records)/c.d.Seconds()), "", "", "")
	row("  keys+values", rate(c.recordBytes, c.d), "", "", "")
	row("  segment bytes", rate(c.batchBytes, c.d),
		"raw 4 MiB ranged GETs of the stored bytes "+rate(r.rawGet.bytes, r.rawGet.d), fmt.Sprintf("%.2f", coldRatio), target(coldRatio, 1.0))
	row("  first reads of segments", dur(c.boundaryWait), fmt.Sprintf("in all, over %d segments (footer and first chunk, unless prefetched)", r.segments))
	row("  (for scale)", "", "hot replay of the same history, decoded "+rate(r.hot.batchBytes, r.hot.d),
		fmt.Sprintf("%.2f", mbps(c.batchBytes, c.d)/mbps(r.hot.batchBytes, r.hot.d)))
	row("WARM REPLAY", "", fmt.Sprintf("%.0f MiB (%d segments) held in a %.0f MiB cache; median of %d rounds", mib(wr.segBytes), wr.segments, mib(wr.cacheBytes), warmRounds), "", "")
	row("  fetch only", rate(wr.warm.batchBytes, wr.warm.d), "hot fetch, Log.Read from page cache "+rate(wr.hot.batchBytes, wr.hot.d),
		fmt.Sprintf("%.2f", warmRatio), target(warmRatio, 0.9))
	row("  fetch and decode", rate(wr.warmDecoded.batchBytes, wr.warmDecoded.d), "hot fetch and decode "+rate(wr.hotDecoded.batchBytes, wr.hotDecoded.d),
		fmt.Sprintf("%.2f", mbps(wr.warmDecoded.batchBytes, wr.warmDecoded.d)/mbps(wr.hotDecoded.batchBytes, wr.hotDecoded.d)))
	row("  GETs in the warm rounds", fmt.Sprint(wr.gets), fmt.Sprintf("(filling pass: %s)", rate(wr.firstPass.batchBytes, wr.firstPass.d)))
	row("REQUESTS", "", "", "", "")
	row("  upload", r.uploadReqs.String(), fmt.Sprintf("%.1f PUT+POST per GiB of segments, %.1f per GiB stored", float64(puts)/segGiB, float64(puts)/objGiB))
	row("  raw PUT of the objects", r.rawPutReqs.String())
	row("  cold replay", c.reqs.String(), fmt.Sprintf("%.1f GETs per GiB replayed (segment bytes), %.1f per GiB stored", float64(gets)/segGiB, float64(gets)/objGiB))
	row("  cold replay, reader's count", fmt.Sprintf("%d GETs, %d for chunks", c.readerGets, c.chunkGets),
		fmt.Sprintf("%.3f chunk GETs per chunk; %d chunk downloads for %d chunks", perChunk, c.chunksFetched, r.chunks),
		"", "<= 1 GET per chunk: "+map[bool]string{true: "met", false: "MISSED"}[c.chunksFetched <= r.chunks])
	row("  raw GET reference", r.rawGetReqs.String())
	row("MEMORY", "", "during the cold replay", "", "")
	row("  peak RSS", fmt.Sprintf("%.0f MiB", mib(c.rssPeak)), fmt.Sprintf("cache budget %.0f MiB; RSS before the replay %.0f MiB", mib(c.budget), mib(c.rssBase)))
	row("  peak live heap", fmt.Sprintf("%.0f MiB", mib(c.livePeak)), "Go heap live after a GC; peak RSS above it is GC headroom (GOGC, bounded by GOMEMLIMIT)")
	row("  overhead", fmt.Sprintf("%.0f MiB", mib(c.rssPeak-c.budget)), "peak RSS - budget", "", fmt.Sprintf("(%d prefetched chunks evicted unread)", c.prefetchUnused))
	w.Flush()
	// To stdout rather than b.Log, which go test cuts to a few lines.
	fmt.Print("\n" + sb.String() + "\n")
	for _, wrn := range r.warnings {
		fmt.Println("daemon warning: " + wrn)
	}

	b.ReportMetric(0, "ns/op")
	b.ReportMetric(mbps(r.segBytes, r.uploadSpan), "upload-MB/s")
	b.ReportMetric(upSeg, "upload/rawput-seg")
	b.ReportMetric(upObj, "upload/rawput-obj")
	b.ReportMetric(compression, "compression")
	b.ReportMetric(float64(c.records)/c.d.Seconds(), "cold-records/s")
	b.ReportMetric(mbps(c.recordBytes, c.d), "cold-record-MB/s")
	b.ReportMetric(coldRatio, "cold/rawget")
	b.ReportMetric(warmRatio, "warm/hot")
	b.ReportMetric(float64(puts)/segGiB, "PUTs/GiB")
	b.ReportMetric(float64(gets)/segGiB, "GETs/GiB")
	b.ReportMetric(perChunk, "GETs/chunk")
	b.ReportMetric(mib(c.rssPeak), "peak-RSS-MiB")
	b.ReportMetric(mib(c.rssPeak-c.budget), "RSS-over-budget-MiB")
}

func total(r requests) int64 {
	var n int64
	for _, v := range r {
		n += v
	}
	return n
}
